"""A peer's training-thread side: count local steps, push and pull on schedule, and every
``interval_steps`` steps run a round (publish, wait as the pacing says, merge); a backup peer
left behind catches up. The round clock and the local step count are written here and nowhere
else. A backup catch-up jumps at most to the top of the round window (:class:`RoundWindow`), so a
forged clock can neither skip the rest of a run nor make the skip costly: skipped rounds are a
count, never a list."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import torch

from gossipml.aggregation.base import Aggregator, Contribution
from gossipml.comm.mailbox import Mailbox
from gossipml.peer.exchanged import exchanged_state
from gossipml.peer.merge import apply_aggregate, contributions, kept_by
from gossipml.peer.outbound import Outbound
from gossipml.peer.stale import StaleCorrection
from gossipml.policies.window import rounds_ahead
from gossipml.policies.pacing import (DEFAULT_MAX_ROUND_AHEAD, PaceDecision, PaceView, Pacing,
                                     PacingConfig, RoundWindow, Schedule, SyncPacing)

__all__ = ["Rounds"]

log = logging.getLogger("gossipml.peer.peer")  # the logger name forced rounds always had

Merged = tuple[list[int], list[int], list[int]]
CaughtUp = tuple[int, list[int], list[int]]  # rounds skipped, senders merged, their staleness


def _no_check() -> None:
    return None


class Rounds:
    """The round loop of one peer. Owner: the peer; writer: the training thread (the thread that
    calls ``step``/``exchange``), which alone writes ``clock``, ``local_steps``, ``final_round``
    and ``waited_for``; the communication thread only reads ``clock``."""

    def __init__(self, peer_id: int, model: torch.nn.Module, *, mailbox: Mailbox,
                 outbound: Outbound, topology: Any, aggregator: Aggregator,
                 pacing: Pacing, pacing_config: PacingConfig, consensus_step: float = 1.0,
                 stale: StaleCorrection | None = None,
                 known: Callable[[], tuple[int, ...]] = tuple, report_view: bool = False,
                 check_alive: Callable[[], None] = _no_check) -> None:
        self.peer_id = peer_id
        self.model = model
        self.mailbox = mailbox
        self.outbound = outbound
        self.topology = topology
        self.aggregator = aggregator
        self.pacing = pacing
        self.pacing_config = pacing_config
        #: how far ahead a neighbour's round is believed (wider where the graph is not mutual)
        self.ahead = rounds_ahead(pacing_config.mode, pacing_config.max_staleness,
                                  pacing_config.max_round_ahead,
                                  mutual=getattr(topology, "mutual", True))
        self.schedule = Schedule.from_config(pacing_config)
        self.interval_steps = pacing_config.interval_steps
        self.consensus_step = consensus_step
        self.stale = stale
        self.known = known  # every neighbour that could be alive (a pacing view's ``known``)
        self.report_view = report_view  # a swarm peer reports its live view each round
        self.check_alive = check_alive  # raises when the communication thread has died
        self.clock = 0
        self.local_steps = 0
        self.final_round: int | None = None  # for [pacing] final_sync
        # resumed from a checkpoint: neighbours went on without us, so rounds far ahead are
        # believed (up to DEFAULT_MAX_ROUND_AHEAD) until a round merges models within the window
        self.rejoining = False
        self.waited_for: set[int] = set()
        self._handed: dict[int, int] = {}  # newest round of each sender handed to the aggregator

    def resume(self, clock: int, local_steps: int | None = None) -> None:
        """Go on from a checkpoint: the clock, and the local steps done (default: the clock's
        rounds' worth)."""
        self.clock = int(clock)
        self.local_steps = int(clock * self.interval_steps if local_steps is None
                               else local_steps)
        self.rejoining = self.clock > 0

    def set_final_round(self, r: int | None) -> None:
        """The last round the loop runs (``[pacing] final_sync`` waits for every model there)."""
        self.final_round = r

    @property
    def window(self) -> RoundWindow:
        """The rounds a neighbour's message may carry (read from any thread): up to
        ``rounds_ahead`` past the clock, never past the clock after the last round."""
        last = None if self.final_round is None else self.final_round + 1
        ahead = self.ahead
        return RoundWindow(max(ahead, DEFAULT_MAX_ROUND_AHEAD) if self.rejoining else ahead, last)

    def step(self) -> dict[str, Any] | None:
        """Count one local step. Pushes and pull requests go out at the steps the schedule says;
        every ``interval_steps`` steps the peer waits as the pacing says and merges (a round)."""
        self.check_alive()
        self.local_steps += 1
        s = self.local_steps
        if self.schedule.should_pull(s):
            self.outbound.request_pull(self.topology.in_neighbors(self.peer_id, self.clock),
                                       self.clock)
        if s % self.interval_steps == 0:
            return self.exchange(push=self.schedule.should_push(s))
        r = self.clock
        skipped, merged, staleness = self.catch_up(self.pacing)
        if skipped:  # the first k finished this round without us: drop the rest of it
            self.local_steps -= s % self.interval_steps  # the next round gets full steps
            return {"round": r, "merged": merged, "staleness": staleness, "missing": [],
                    "wait_s": 0.0, "pace": "caught_up", "waited_for": [],
                    "aborted": True, "skipped_rounds": skipped - 1, "skipped_from": r + 1}
        if self.schedule.should_push(s):
            self._publish(self.clock)
        return None

    def exchange(self, push: bool = True) -> dict[str, Any]:
        """One round: publish the model, wait as the pacing says, merge what it picked."""
        self.check_alive()
        r = self.clock
        if push:
            self._publish(r)
        pacing = self._policy(r)
        decision, wait_s = self._pace(r, pacing)
        merged, staleness, corrected = self._merge(decision.merge, r, pacing.merges_newest)
        if self.rejoining and merged and all(  # back in step with whom it merged
                -self.ahead <= st for st in staleness):
            self.rejoining = False
        self.clock += 1
        skipped, caught_up_from, _ = self.catch_up(pacing)
        clocks = self.mailbox.snapshot()[1]
        out = {"round": r, "merged": merged, "staleness": staleness,
               "missing": sorted(decision.missing), "wait_s": round(wait_s, 4),
               "pace": decision.reason, "waited_for": sorted(self.waited_for),
               "known_clocks": {str(j): c for j, c in sorted(clocks.items())}}
        if self.report_view:
            out["view"] = sorted(self.known())
        if self.stale is not None:
            out["corrected"] = corrected
        if skipped:  # and the senders whose newer models it merged to skip them
            out.update(skipped_rounds=skipped, skipped_from=r + 1, caught_up_from=caught_up_from)
        return out

    def catch_up(self, pacing: Any) -> CaughtUp:
        """Backup with catch-up (``BackupPacing.catch_up``): when the first k neighbours finished
        the peer's round without it, jump to theirs, merging their newer models; mid-round, first
        send the merged model as this round's, for whoever still waits on it. Returns how many
        rounds were skipped from the current clock on (the loop runs none of them; at a round's
        end the current clock is a round not begun), the senders merged and their staleness.
        The target is bounded by the round window (the view's horizon), so by the run's end."""
        if not getattr(pacing, "catch_up_enabled", False):
            return 0, [], []
        view = self.view(self.clock, time.monotonic())
        target = pacing.catch_up(view)
        if target is None or target <= self.clock:
            return 0, [], []
        target = min(target, self.window.top(self.clock))
        newer = tuple(j for j in self.topology.in_neighbors(self.peer_id, target)
                      if view.arrived_rounds.get(j, -1) >= self.clock)
        merged, staleness, _ = self._merge(newer, target - 1, take_newest=True)
        if self.local_steps % self.interval_steps:
            self._publish(self.clock)
        skipped = target - self.clock
        self.clock = target
        return skipped, merged, staleness

    def view(self, r: int, since_s: float) -> PaceView:
        """What the pacing sees at round ``r``, waiting since ``since_s``."""
        return self.mailbox.pace_view(r, since_s, self.topology.in_neighbors(self.peer_id, r),
                                      self.known(), self.pacing_config.dead_after_s,
                                      horizon=self.window.top(r))

    def _publish(self, r: int) -> None:
        self.outbound.publish(r, self.topology.out_neighbors(self.peer_id, r))

    def _policy(self, r: int) -> Pacing:
        if r == self.final_round and self.pacing_config.final_sync:
            return SyncPacing(self.pacing_config.timeout_s)  # end on fresh models, bounded
        return self.pacing

    def _pace(self, r: int, pacing: Pacing) -> tuple[PaceDecision, float]:
        start = time.monotonic()
        hard_limit_s = self.pacing_config.timeout_s + 1.0
        decision: PaceDecision | None = None
        self.waited_for = set()

        def ready() -> bool:
            nonlocal decision
            decision = pacing.decide(self.view(r, start))
            if not decision.proceed:
                self.waited_for.update(decision.missing)  # whom this round waited for
            return decision.proceed

        # arrivals wake the wait; the poll only catches time passing (timeouts, the dead): a
        # thousand waiting peers of one process must not each wake twenty times a second
        poll_s = min(1.0, max(0.01, self.pacing_config.timeout_s / 20))
        while not self.mailbox.wait(ready, poll_s):
            self.check_alive()  # a dead communication thread ends the wait with its error
            if time.monotonic() - start > hard_limit_s:  # the policy never said go: go anyway
                log.warning("peer %d: round %d forced on after %.1f s", self.peer_id, r,
                            hard_limit_s)
                break
        assert decision is not None  # wait_for evaluates the predicate at least once
        return decision, time.monotonic() - start

    def _every_version(self, contribs: list[Contribution]) -> list[Contribution]:
        """Asynchronous ADMM pairs its dual updates by round: each sender's held models since
        the last one handed over, oldest first, then the chosen one."""
        out = []
        for c in contribs:
            for t in range(self._handed.get(c.sender, -1) + 1, c.round):
                held = self.mailbox.at_round(c.sender, t)
                if held is not None:
                    out.append(dataclasses.replace(c, round=t, params=held.params))
            out.append(c)
            self._handed[c.sender] = max(c.round, self._handed.get(c.sender, -1))
        return out

    def _merge(self, senders: tuple[int, ...], r: int, take_newest: bool) -> Merged:
        """Merge the chosen senders' models; (senders merged, their staleness, those merged
        through stale correction)."""
        own = exchanged_state(self.model)
        if self.stale is not None:  # our round-r model, before anything merges into it
            self.stale.record(r, own)
        weights = self.topology.mixing_weights(self.peer_id, r)
        contribs = contributions(self.mailbox, senders, r, take_newest, weights)
        if getattr(self.aggregator, "wants_every_version", False):
            contribs = self._every_version(contribs)
        if not contribs:
            return [], [], []
        corrected: list[int] = []
        if self.stale is not None:
            contribs, corrected = self.stale.correct(own, contribs, r)
        new = self.aggregator.aggregate(own, contribs,
                                        float(weights.get(self.peer_id,
                                                          1.0 / (len(contribs) + 1))),
                                        own_round=r)
        apply_aggregate(own, new, self.consensus_step)
        # every model considered is used up (async does not retry a refused one next round)
        self.mailbox.mark_merged({c.sender: c.round for c in contribs})
        used = kept_by(self.aggregator, contribs)  # the rule's own filter may drop some
        names = {c.sender for c in used}
        return ([c.sender for c in used], [r - c.round for c in used],
                [j for j in corrected if j in names])
