"""One peer: a model, its neighbours, and the loop that trains, sends, waits and merges.

Embed it in your own training loop::

    with Peer(model, config, id=0, peers={0: "tcp://10.0.0.1:5555", 1: "tcp://10.0.0.2:5555"}) as peer:
        for x, y in loader:
            loss = loss_fn(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
            peer.step()  # every `peer.interval_steps` calls: send, wait per pacing, merge

or hand it a task and let it run the whole loop: ``peer.run(task)``.
"""

from __future__ import annotations

import collections
import copy
import logging
import time
from typing import Any, Mapping

import torch
import zmq

from gossipml.peer import commstate
from gossipml.aggregation import build_aggregator
from gossipml.codecs import build_codec
from gossipml.config import ExperimentConfig
from gossipml.peer.stream import Inbound, Outbox
from gossipml.events import EventLog
from gossipml.peer.inbound import PeerInbox
from gossipml.comm.mailbox import Mailbox
from gossipml.peer.merge import apply_aggregate, catch_up, contributions
from gossipml.policies.pacing import PaceView, Schedule, SyncPacing, build_pacing
from gossipml.comm.snapshot import SnapshotPool
from gossipml.peer.stale import StaleCorrection
from gossipml.peer.swarm import SwarmLink, SwarmTopology, seed_dealers
from gossipml.policies.topology import build_topology
from gossipml.comm.shmpath import ShmInbox, same_host
from gossipml.comm.addresses import bind_address
from gossipml.comm.transport import Outgoing, Transport
from gossipml.wire import Message, pack

__all__ = ["Peer", "exchanged_state"]

log = logging.getLogger("gossipml.peer.peer")


def exchanged_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a peer exchanges: every floating-point entry of the model's state dict."""
    return {k: v for k, v in model.state_dict(keep_vars=False).items()
            if torch.is_floating_point(v)}



class Peer:
    """A gossip-learning peer: owns a transport, a mailbox and the policies of its config."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: ExperimentConfig | None = None,
        *,
        id: int,
        peers: Mapping[int, str],
        bind: str | None = None,
        num_samples: int = 0,
        events_path: str | None = None,
        context: zmq.Context | None = None,
        aggregation_context: Mapping[str, Any] | None = None,
        curve: Any | None = None,
    ) -> None:
        self.config = config or ExperimentConfig()
        cfg = self.config
        if id not in peers:
            raise ValueError(f"id {id} is not in peers {sorted(peers)}")
        self.swarm: SwarmTopology | None = None
        if cfg.membership.enabled:  # neighbours come from the live view, not from `peers`
            self.swarm = SwarmTopology(cfg.membership, id, peers[id], seed=cfg.run.seed * 7919 + id)
            peers = {id: peers[id]}
        elif sorted(peers) != list(range(len(peers))):
            raise ValueError(f"peer ids must be 0..n-1, got {sorted(peers)}")
        self.id, self.peers, self.model = id, dict(peers), model
        self.num_samples = num_samples
        self.n_peers = len(peers)
        self.topology = self.swarm or build_topology(cfg.topology, self.n_peers)
        self.pacing = build_pacing(cfg.pacing)
        self.final_round: int | None = None  # the loop sets it (for [pacing] final_sync)
        self.codec = build_codec(cfg.codec)
        self.aggregator = build_aggregator(cfg.aggregation, **{
            "num_samples": num_samples, "model_factory": lambda: copy.deepcopy(model),
            **(aggregation_context or {})})
        self.schedule = Schedule.from_config(cfg.pacing)
        self.interval_steps = cfg.pacing.interval_steps
        params = exchanged_state(model)
        self._device = next(iter(params.values())).device if params else torch.device("cpu")
        self._expected = {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape))
                          for k, v in params.items()}
        self._pool = SnapshotPool(params, device=self._device)
        self._stale = (StaleCorrection(params, cfg.pacing.stale_window)
                       if cfg.pacing.stale_correction else None)
        self._reference = {k: v.detach() for k, v in params.items()}  # for shape/dtype checks
        attack = cfg.peer.attack if id in cfg.peer.attackers else ""
        self._outbox = Outbox(id, self.codec, delta=cfg.codec.content == "delta",
                              keyframe_every_rounds=cfg.peer.keyframe_every_rounds,
                              attack=attack, seed=cfg.run.seed * 1000 + id,
                              keyframe_codec=cfg.peer.keyframe_codec,
                              refresh_every_rounds=cfg.peer.refresh_every_rounds,
                              refresh_codec=cfg.peer.refresh_codec)
        self._inbound = Inbound(self._device)
        self.pulls_sent = 0
        self.pushes_sent = 0
        self.pulls_answered = 0
        self.mailbox = Mailbox()
        self.events = EventLog(events_path, id)
        self.rejected: collections.Counter[str] = collections.Counter()
        self.clock = 0
        self.local_steps = 0
        self._done = False
        self._linked = False  # every neighbour heard, and hearing us
        self._waited_for: set[int] = set()
        self.heartbeats_sent = 0
        self._last_heartbeat_s = 0.0
        self._neighbor_ids = self._all_neighbors()
        seeds = seed_dealers(cfg.membership.seeds, peers[id]) if self.swarm is not None else {}
        self.transport = Transport(
            id, bind or bind_address(peers[id]),
            {**{j: peers[j] for j in self._neighbor_ids}, **seeds},
            cfg.transport, self._inbox_frames,
            context=context, on_tick=self._tick,
            link_policy=cfg.emulation.policy(id) if cfg.emulation.is_active else None,
            curve=curve,
            shm_dests=frozenset(j for j in self._neighbor_ids if same_host(peers[id], peers[j])),
        )
        self._shm_inbox = ShmInbox()
        self._inbox = PeerInbox(self)
        self._link = None if self.swarm is None else SwarmLink(
            self.swarm, self.transport, id, peers[id], seeds, self._reject)

    # ---- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> "Peer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "Peer":
        """Bind and start the communication thread."""
        self.transport.start()
        return self

    @property
    def address(self) -> str:
        """The bound endpoint (real port when bound to port 0)."""
        return self.transport.address

    def close(self) -> None:
        """Tell neighbours this peer is done, flush within the linger time, stop the thread."""
        if not self._done:
            self._done = True
            self._send_heartbeat()
        self.transport.close()
        self._shm_inbox.close()
        self.events.close()

    def wait_for_neighbors(self, timeout_s: float | None = None) -> set[int]:
        """Wait (bounded) until every neighbour has been heard from; returns those not heard."""
        timeout_s = self.config.peer.startup_timeout_s if timeout_s is None else timeout_s
        if self.swarm is not None:  # a swarm peer starts once it knows anyone alive
            swarm = self.swarm
            self.mailbox.wait(lambda: bool(swarm.live()), timeout_s)
            self.events.emit("start", view=sorted(swarm.live()))
            return set() if swarm.live() else {-1}
        want = set(self._neighbor_ids)
        self.mailbox.wait(lambda: self.mailbox.linked(self.id, want) == want, timeout_s)
        missing = want - self.mailbox.linked(self.id, want)
        if missing:
            log.warning("peer %d: not heard from %s after %.1f s; going on", self.id,
                        sorted(missing), timeout_s)
        self.events.emit("start", missing=sorted(missing), neighbors=sorted(want))
        return missing

    # ---- the training side --------------------------------------------------------------
    def run(self, task: Any, rounds: int | None = None) -> dict[str, Any]:
        """The whole loop for a task (``train_step()``, ``evaluate()``): see :func:`run_task`."""
        from gossipml.peer.loop import run_task

        return run_task(self, task, rounds)

    def step(self) -> dict[str, Any] | None:
        """Count one local step. Pushes and pull requests go out at the steps the schedule says;
        every ``interval_steps`` steps the peer waits as the pacing says and merges (a round)."""
        self.local_steps += 1
        s = self.local_steps
        boundary = s % self.interval_steps == 0
        if self.schedule.should_pull(s):
            self._request_pull()
        if not boundary:
            r = self.clock
            skipped, merged, staleness = self._catch_up(self.pacing)
            if skipped:  # the first k finished this round without us: drop the rest of it
                self.local_steps -= s % self.interval_steps  # the next round gets full steps
                return {"round": r, "merged": merged, "staleness": staleness, "missing": [],
                        "wait_s": 0.0, "pace": "caught_up", "waited_for": [],
                        "aborted": True, "skipped_rounds": skipped[1:]}
            if self.schedule.should_push(s):
                self._publish(self.clock, self.topology.out_neighbors(self.id, self.clock))
            return None
        return self.exchange(push=self.schedule.should_push(s))

    def exchange(self, push: bool = True) -> dict[str, Any]:
        """One round: publish the model, wait as the pacing says, merge what it picked."""
        r = self.clock
        if push:
            self._publish(r, self.topology.out_neighbors(self.id, r))
        pacing = self._policy(r)
        decision, wait_s = self._pace(r, pacing)
        merged, staleness, corrected = self._merge(decision.merge, r, pacing.merges_newest)
        self.clock += 1
        skipped, caught_up_from, _ = self._catch_up(pacing)
        clocks = self.mailbox.snapshot()[1]
        out = {"round": r, "merged": merged, "staleness": staleness,
               "missing": sorted(decision.missing), "wait_s": round(wait_s, 4),
               "pace": decision.reason, "waited_for": sorted(self._waited_for),
               "known_clocks": {str(j): c for j, c in sorted(clocks.items())}}
        if self.swarm is not None:
            out["view"] = sorted(self.swarm.live())
        if self._stale is not None:
            out["corrected"] = corrected
        if skipped:  # and the senders whose newer models it merged to skip them
            out.update(skipped_rounds=skipped, caught_up_from=caught_up_from)
        return out

    def _catch_up(self, pacing: Any) -> tuple[list[int], list[int], list[int]]:
        return catch_up(self, pacing)

    def _publish(self, r: int, dests: tuple[int, ...]) -> None:
        if not dests:
            return
        snap = self._pool.publish(exchanged_state(self.model), r)
        if snap is None:
            self.events.emit("send_skipped", round=r, reason="no free snapshot buffer")
            return
        info = {"num_samples": int(self.num_samples)}
        self.pushes_sent += 1
        self.transport.submit(Outgoing(
            tuple(dests), lambda: self._outbox.frames(snap.tensors, r, info),
            on_done=lambda: self._pool.release(snap)))

    def _request_pull(self) -> None:
        """Ask one in-neighbour (round-robin) for its current model."""
        sources = self.topology.in_neighbors(self.id, self.clock)
        if not sources:
            return
        dest = sources[self.pulls_sent % len(sources)]
        self.pulls_sent += 1
        msg = Message(kind="pull", sender=self.id, round=self.clock)
        self.transport.submit(Outgoing((dest,), lambda: pack(msg)))

    def _view(self, r: int, since_s: float) -> PaceView:
        known = self._neighbor_ids if self.swarm is None else tuple(self.swarm.live())
        return self.mailbox.pace_view(r, since_s, self.topology.in_neighbors(self.id, r), known,
                                      self.config.pacing.dead_after_s)

    def _policy(self, r: int):
        if r == self.final_round and self.config.pacing.final_sync:
            return SyncPacing(self.config.pacing.timeout_s)  # end on fresh models, bounded
        return self.pacing

    def _pace(self, r: int, pacing):
        start = time.monotonic()
        hard_limit_s = self.config.pacing.timeout_s + 1.0
        decision = None
        self._waited_for = set()

        def ready() -> bool:
            nonlocal decision
            decision = pacing.decide(self._view(r, start))
            if not decision.proceed:
                self._waited_for.update(decision.missing)  # whom this round waited for
            return decision.proceed

        while not self.mailbox.wait(ready, 0.05):
            if time.monotonic() - start > hard_limit_s:  # the policy never said go: go anyway
                log.warning("peer %d: round %d forced on after %.1f s", self.id, r, hard_limit_s)
                break
        return decision, time.monotonic() - start

    def _merge(self, senders: tuple[int, ...], r: int,
               take_newest: bool) -> tuple[list[int], list[int], list[int]]:
        """Merge the chosen senders' models; (senders merged, their staleness, those merged
        through stale correction)."""
        own = exchanged_state(self.model)
        if self._stale is not None:  # our round-r model, before anything merges into it
            self._stale.record(r, own)
        weights = self.topology.mixing_weights(self.id, r)
        contribs = contributions(self.mailbox, senders, r, take_newest, weights)
        if not contribs:
            return [], [], []
        corrected: list[int] = []
        if self._stale is not None:
            contribs, corrected = self._stale.correct(own, contribs, r)
        new = self.aggregator.aggregate(own, contribs,
                                        float(weights.get(self.id, 1.0 / (len(contribs) + 1))),
                                        own_round=r)
        apply_aggregate(own, new, self.config.peer.consensus_step)
        self.mailbox.mark_merged({c.sender: c.round for c in contribs})
        return [c.sender for c in contribs], [r - c.round for c in contribs], corrected

    # ---- the communication thread -------------------------------------------------------
    def _inbox_frames(self, sender_hint: int | None, frames: list) -> None:
        self._inbox.on_frames(sender_hint, frames)

    def _reject(self, sender: int | None, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        log.warning("peer %d: rejected a message from %s: %s (%s)", self.id, sender, reason,
                    detail[:200])
        self.events.emit("rejected", sender=sender, reason=reason, detail=detail[:200])

    def _tick(self) -> None:
        now = time.monotonic()
        interval = self.config.pacing.heartbeat_interval_s
        if not self._linked:  # start-up: find the neighbours quickly, both ways
            interval = min(interval, 0.1)
            if self.swarm is not None:
                self._linked = bool(self.swarm.live())
            else:
                want = set(self._neighbor_ids)
                self._linked = self.mailbox.linked(self.id, want) == want
        if now - self._last_heartbeat_s >= interval:
            self._send_heartbeat()
        if self._link is not None:
            self._link.shuffle(self.clock)

    def _send_heartbeat(self) -> None:
        self._last_heartbeat_s = time.monotonic()
        self.heartbeats_sent += 1
        heard = self.mailbox.snapshot()[2]
        info: dict[str, Any] = {"done": self._done, "hears": sorted(heard)}
        dests = self._neighbor_ids
        if self.swarm is not None:
            info["address"] = self.peers[self.id]
            dests = tuple(sorted(self.swarm.live()))
        msg = Message(kind="heartbeat", sender=self.id, round=self.clock, info=info)
        if dests:
            self.transport.submit(Outgoing(dests, lambda: pack(msg)))

    def _all_neighbors(self) -> tuple[int, ...]:
        if self.swarm is not None:
            return ()  # connected as the view learns them
        if getattr(self.topology, "is_static", True):
            ids = set(self.topology.out_neighbors(self.id, 0))
            ids |= set(self.topology.in_neighbors(self.id, 0))
        else:
            ids = set(self.peers)
        ids.discard(self.id)
        return tuple(sorted(ids))

    # ---- checkpointable state ---------------------------------------------------------
    def comm_state(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Codec and aggregation state for a checkpoint (see :mod:`gossipml.peer.commstate`)."""
        return commstate.comm_state(self, timeout_s)

    def load_comm_state(self, state: Mapping[str, Any], timeout_s: float = 10.0) -> None:
        """Put back what :meth:`comm_state` returned (before the first exchange)."""
        commstate.load_comm_state(self, state, timeout_s)

    # ---- stats --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Bytes and messages sent/received, rejections by reason, skipped sends (and, with
        stale correction, the models merged corrected and those too old for its history)."""
        s = self.transport.stats
        stale = {} if self._stale is None else {"stale_corrected": self._stale.corrected,
                                                "stale_too_old": self._stale.too_old}
        return {**stale, "bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
                "messages_sent": s.messages_sent, "messages_received": s.messages_received,
                "send_dropped": s.send_dropped, "send_failed": s.send_failed,
                "emulated_drops": s.emulated_drops, "heartbeats_sent": self.heartbeats_sent,
                "pushes_sent": self.pushes_sent,
                "rejected": sum(self.rejected.values()),
                "pulls_sent": self.pulls_sent, "pulls_answered": self.pulls_answered,
                "rejected_by_reason": dict(self.rejected), "send_skipped": self._pool.skipped}
