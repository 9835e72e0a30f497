"""What a peer knows about its neighbours: their newest models, clocks and when it heard them.

The communication thread writes (``put``, ``heard``, ``refused``); the training thread reads and
waits. One lock and one condition guard everything; every wait has a timeout. Per sender it keeps
its newest model and the models of its last ``rounds_kept`` rounds (so a synchronous round can
merge a neighbour's round-``r`` model after a newer one arrived), so memory is bounded by the
number of neighbours times ``rounds_kept``, not by the rounds run. Who counts as dead is
:class:`~gossipml.policies.pacing.Liveness`'s decision, kept behind the same lock.

Rounds and clocks reach it only after the inbound side checked them against the round window
(``round_out_of_window`` otherwise), so each per-sender clock is the max over believed values: a
forged far-ahead round can neither stick as a neighbour's clock nor as its newest model.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from gossipml.policies.pacing import Liveness, PaceView

__all__ = ["Arrival", "Mailbox"]


@dataclass(frozen=True)
class Arrival:
    """One neighbour model as received and decoded."""

    sender: int
    round: int
    params: Mapping[str, torch.Tensor]
    info: Mapping[str, Any]
    arrived_s: float
    seq: int  # global arrival order
    merged: bool = False


@dataclass
class _State:
    models: dict[int, Arrival] = field(default_factory=dict)  # the newest per sender
    recent: dict[int, dict[int, Arrival]] = field(default_factory=dict)  # a few rounds per sender
    clocks: dict[int, int] = field(default_factory=dict)
    last_heard_s: dict[int, float] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    hears: dict[int, frozenset[int]] = field(default_factory=dict)  # whom each neighbour hears
    refused: dict[int, int] = field(default_factory=dict)  # newest round refused per sender


class Mailbox:
    """Thread-safe store of neighbours' recent models, clocks, liveness, with bounded waits.
    Owner: the peer; writer: the communication thread; readers: any thread."""

    def __init__(self, rounds_kept: int = 3) -> None:
        self.rounds_kept = rounds_kept
        self._cond = threading.Condition()
        self._s = _State()
        self._seq = itertools.count()

    def put(self, sender: int, round_: int, params: Mapping[str, torch.Tensor],
            info: Mapping[str, Any]) -> bool:
        """Store a model unless an equal-or-newer one from ``sender`` is held; True if stored."""
        now = time.monotonic()
        with self._cond:
            self._note(sender, round_, now)
            arrival = Arrival(sender, round_, params, dict(info), now, next(self._seq))
            recent = self._s.recent.setdefault(sender, {})
            recent[round_] = arrival
            for old in sorted(recent)[:-self.rounds_kept]:
                del recent[old]
            held = self._s.models.get(sender)
            if held is None or held.round <= round_:
                self._s.models[sender] = arrival
            self._cond.notify_all()
            return round_ in recent

    def refused(self, sender: int, round_: int) -> None:
        """Record that ``sender``'s round-``round_`` model arrived and was refused."""
        with self._cond:
            self._note(sender, round_, time.monotonic())
            self._s.refused[sender] = max(round_, self._s.refused.get(sender, -1))
            self._cond.notify_all()

    def forget(self, sender: int) -> None:
        """Drop everything held for ``sender`` (models, clock, liveness): it left the view."""
        with self._cond:
            for held in (self._s.models, self._s.recent, self._s.clocks, self._s.last_heard_s,
                         self._s.hears, self._s.refused):
                held.pop(sender, None)
            self._s.done.discard(sender)
            self._cond.notify_all()

    def refused_rounds(self) -> dict[int, int]:
        """Newest refused round per sender."""
        with self._cond:
            return dict(self._s.refused)

    def at_round(self, sender: int, round_: int) -> Arrival | None:
        """The model ``sender`` sent for exactly ``round_``, if it is still held."""
        with self._cond:
            return self._s.recent.get(sender, {}).get(round_)

    def heard(self, sender: int, clock: int, *, done: bool = False,
              hears: frozenset[int] | None = None) -> None:
        """Record a heartbeat: the sender's clock, that it is alive, whether it finished, and
        (optionally) which peers it hears from (so a link is known to work both ways)."""
        with self._cond:
            self._note(sender, clock, time.monotonic())
            if hears is not None:
                self._s.hears[sender] = hears
            if done:
                self._s.done.add(sender)
            else:
                self._s.done.discard(sender)
            self._cond.notify_all()

    def _note(self, sender: int, clock: int, now: float) -> None:
        self._s.clocks[sender] = max(clock, self._s.clocks.get(sender, -1))
        self._s.last_heard_s[sender] = now
        self._s.done.discard(sender)  # it still sends: not gone (a goodbye sets it again)

    def mark_merged(self, senders: Mapping[int, int]) -> None:
        """Flag the held models of ``senders`` (at those rounds) as merged."""
        with self._cond:
            for sender, round_ in senders.items():
                held = self._s.models.get(sender)
                if held is not None and held.round == round_:
                    self._s.models[sender] = Arrival(held.sender, held.round, held.params,
                                                     held.info, held.arrived_s, held.seq, True)

    def pace_view(self, clock: int, since_s: float, expected: tuple[int, ...],
                  known: tuple[int, ...], dead_after_s: float,
                  horizon: int | None = None) -> PaceView:
        """What a pacing policy sees at ``clock``, waiting since ``since_s``: held rounds (a
        refused model counts as sent), known clocks, and the dead: those silent for
        ``dead_after_s``, those that said goodbye, and ``known`` peers never heard from once
        the wait has lasted that long; ``horizon``: the round window's top, passed through."""
        models, clocks, heard, done = self.snapshot()
        refused = self.refused_rounds()
        now = time.monotonic()
        liveness = Liveness(dead_after_s)
        for j, t in heard.items():
            liveness.heard(j, t, done=j in done)
        for j in known:  # never heard: silent since the wait began
            if j not in heard:
                liveness.heard(j, since_s)
        dead = liveness.dead(now)
        return PaceView(
            clock=clock, now_s=now, waiting_since_s=since_s, expected=tuple(expected),
            arrived_rounds={**{j: a.round for j, a in models.items()},
                            **{j: r_ for j, r_ in refused.items()
                               if r_ > getattr(models.get(j), "round", -1)}},
            known_clocks=clocks, dead=dead,
            merged=frozenset(j for j, a in models.items() if a.merged),
            arrival_order=tuple(sorted(models, key=lambda j: models[j].seq)),
            horizon=horizon,
        )

    def snapshot(self) -> tuple[dict[int, Arrival], dict[int, int], dict[int, float], set[int]]:
        """A consistent copy of (models, clocks, last_heard_s, done)."""
        with self._cond:
            return (dict(self._s.models), dict(self._s.clocks), dict(self._s.last_heard_s),
                    set(self._s.done))

    def linked(self, me: int, peers: set[int]) -> set[int]:
        """Those of ``peers`` heard from that also hear ``me`` (both directions work)."""
        with self._cond:
            return {j for j in peers
                    if j in self._s.last_heard_s and me in self._s.hears.get(j, frozenset())}

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` (evaluated under the lock) holds or ``timeout_s`` passes."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout=max(0.0, timeout_s))

