"""One peer: a model, its neighbours, and the parts that train, send, receive and merge.

Embed it in your own training loop::

    with Peer(model, config, id=0, peers={0: "tcp://10.0.0.1:5555", 1: "tcp://10.0.0.2:5555"}) as peer:
        for x, y in loader:
            loss = loss_fn(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
            peer.step()  # every `peer.interval_steps` calls: send, wait per pacing, merge

or hand it a task and let it run the whole loop: ``peer.run(task)``.

The peer builds its parts and afterwards only calls their public methods: :class:`Rounds` (the
training thread: steps, rounds, merges; the only writer of the clock), :class:`InboundSide` (the
communication thread: checks and routes what arrives), :class:`Outbound` (pushes, pulls, pull
answers), :class:`Rejections` (refusals by reason), :class:`Heartbeats` (liveness beats). It
keeps the lifecycle.
"""

from __future__ import annotations

import collections
import copy
import logging
import time
from typing import Any, Callable, Mapping

import torch
import zmq

from gossipml.aggregation import build_aggregator
from gossipml.aggregation.base import Stateful
from gossipml.codecs import build_codec
from gossipml.comm.addresses import bind_address
from gossipml.comm.mailbox import Mailbox
from gossipml.comm.port import Port, call_and_wait
from gossipml.comm.transport import Transport
from gossipml.config import ExperimentConfig
from gossipml.events import EventLog
from gossipml.peer.exchanged import exchanged_state
from gossipml.peer.inbound import InboundSide
from gossipml.peer.loop import run_task
from gossipml.peer.accepted import configured_codecs, sized_transport
from gossipml.peer.beats import Heartbeats
from gossipml.peer.outbound import Outbound, SendsWithModel
from gossipml.peer.pulls import PullLimit
from gossipml.peer.rejections import Rejections
from gossipml.peer.rounds import Rounds
from gossipml.peer.stale import StaleCorrection
from gossipml.peer.stream import Inbound, Outbox
from gossipml.peer.swarm import SwarmLink, SwarmTopology, seed_dealers
from gossipml.policies.membership import parse_tcp_address
from gossipml.policies.pacing import Schedule, build_pacing
from gossipml.policies.topology import build_topology

__all__ = ["Peer", "exchanged_state"]

log = logging.getLogger("gossipml.peer.peer")



def _has_key(curve: Any, peer_id: int) -> bool:
    """Whether CURVE has ``peer_id``'s server key (a DEALER to it can be made at all)."""
    try:
        curve.server_key(peer_id)
    except ValueError:
        return False
    return True


class Peer:
    """A gossip-learning peer: owns a transport, a mailbox, the policies of its config and the
    parts built from them. Heartbeat state (``heartbeats_sent``) is written on the
    communication thread."""

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
        transport_factory: Callable[..., Port] = Transport,
    ) -> None:
        self.config = cfg = config or ExperimentConfig()
        if id not in peers:
            raise ValueError(f"id {id} is not in peers {sorted(peers)}")
        self.swarm: SwarmTopology | None = None
        if cfg.membership.enabled:  # neighbours come from the live view, not from `peers`
            if parse_tcp_address(peers[id]) is None:
                raise ValueError(f"membership speaks tcp only: peer {id}'s address "
                                 f"{peers[id]!r} must be tcp://host:port")
            self.swarm = SwarmTopology(cfg.membership, id, peers[id], seed=cfg.run.seed * 7919 + id)
            peers = {id: peers[id]}
        elif sorted(peers) != list(range(len(peers))):
            raise ValueError(f"peer ids must be 0..n-1, got {sorted(peers)}")
        self.id, self.peers, self.model = id, dict(peers), model
        self.num_samples = num_samples
        self.n_peers = len(peers)
        self.topology = self.swarm or build_topology(cfg.topology, self.n_peers)
        self.pacing = build_pacing(cfg.pacing)
        self.codec = build_codec(cfg.codec)
        merging = cfg.aggregation.for_topology(cfg.topology.weights)  # whose weights win
        self.aggregator = build_aggregator(merging, **{
            "num_samples": num_samples, "model_factory": lambda: copy.deepcopy(model),
            **(aggregation_context or {})})
        self.schedule = Schedule.from_config(cfg.pacing)
        self.interval_steps = cfg.pacing.interval_steps
        self.mailbox = Mailbox()
        self.events = EventLog(events_path, id)
        self.rejections = Rejections(id, self.events)
        self._neighbor_ids = self._all_neighbors()
        self._done = False
        self._started = False
        seeds = seed_dealers(cfg.membership.seeds, peers[id]) if self.swarm is not None else {}
        self._extra = self.aggregator if isinstance(self.aggregator, SendsWithModel) else None
        self._extra_spec = {} if self._extra is None else dict(  # sent next to the model
            self._extra.outgoing_spec(exchanged_state(model)))
        self.transport_config = sized_transport(cfg, model, self.codec, self._neighbor_ids,
                                                swarm=self.swarm is not None,
                                                extra=self._extra_spec)
        self.transport: Port = transport_factory(
            id, bind or bind_address(peers[id]),
            {**{j: peers[j] for j in self._neighbor_ids}, **seeds},
            self.transport_config, self._on_frames,
            context=context, on_tick=self._tick,
            link_policy=cfg.emulation.policy(id) if cfg.emulation.is_active else None,
            curve=curve,
        )
        self._build_parts(seeds, curve)

    def _build_parts(self, seeds: dict[int, str], curve: Any = None) -> None:
        """The outbound, inbound and round sides, each given the collaborators it uses."""
        cfg, id = self.config, self.id
        params = exchanged_state(self.model)
        device = next(iter(params.values())).device if params else torch.device("cpu")
        reference = {**params, **self._extra_spec}  # what every received push holds
        encoder = Outbox(id, self.codec, delta=cfg.codec.content == "delta",
                         keyframe_every_rounds=cfg.peer.keyframe_every_rounds,
                         attack=cfg.peer.attack if id in cfg.peer.attackers else "",
                         seed=cfg.run.seed * 1000 + id, keyframe_codec=cfg.peer.keyframe_codec,
                         refresh_every_rounds=cfg.peer.refresh_every_rounds,
                         refresh_codec=cfg.peer.refresh_codec)
        self.outbound = Outbound(
            id, self.model, self.transport, encoder, self.events, num_samples=self.num_samples,
            device=device, rejections=self.rejections, progress=lambda: self.rounds.local_steps,
            pull_limit=PullLimit.from_pacing(cfg.pacing), extra=self._extra,
            publish_wait_s=0.0 if cfg.pacing.mode == "async" else cfg.pacing.timeout_s)
        self._link = None if self.swarm is None else SwarmLink(
            self.swarm, self.transport, id, self.peers[id], seeds, self.rejections,
            can_dial=None if curve is None else lambda j: _has_key(curve, j))
        stale = (StaleCorrection(params, cfg.pacing.stale_window)
                 if cfg.pacing.stale_correction else None)
        self.rounds = Rounds(id, self.model, mailbox=self.mailbox, outbound=self.outbound,
                             topology=self.topology, aggregator=self.aggregator,
                             pacing=self.pacing, pacing_config=cfg.pacing,
                             consensus_step=cfg.peer.consensus_step, stale=stale,
                             known=self._known, report_view=self.swarm is not None,
                             check_alive=self._check_alive)
        self.beats = Heartbeats(id, schedule=self.schedule, neighbors=self._neighbor_ids,
                                mailbox=self.mailbox, transport=self.transport,
                                outbound=self.outbound, address=self.peers[id], swarm=self.swarm,
                                clock=lambda: self.rounds.clock, done=lambda: self._done)
        self.inbound = InboundSide(
            id, mailbox=self.mailbox, decoder=Inbound(device), rejections=self.rejections,
            outbound=self.outbound, reference=reference,
            max_message_bytes=self.transport_config.message_limit_bytes,
            peer_ids=frozenset(self.peers), neighbor_ids=self._neighbor_ids, link=self._link,
            shm_enabled=cfg.transport.shm, clock=lambda: self.rounds.clock,
            accepted_codecs=configured_codecs(cfg), window=lambda: self.rounds.window)

    # ---- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> "Peer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "Peer":
        """Bind and start the communication thread."""
        self.transport.start()
        self._started = True
        return self

    def _check_alive(self) -> None:
        """RuntimeError naming the cause when the communication thread died while the peer is
        open: a peer that can neither send nor receive must stop, not train deaf."""
        if self._started and not self._done and not self.transport.alive:
            raise RuntimeError(
                f"peer {self.id}: communication thread died: {self.transport.error!r}; the peer can no longer "
                "send or receive (a bug: see the log for the traceback, then restart the peer)")

    @property
    def address(self) -> str:
        """The bound endpoint (real port when bound to port 0)."""
        return self.transport.address

    def close(self) -> None:
        """Tell neighbours this peer is done, flush within the linger time, stop the thread."""
        if not self._done:
            self._done = True
            if self.transport.alive:  # the goodbye goes out on the thread that owns heartbeats
                self.transport.call(self.beats.send)
            else:
                self.beats.send()
        self.transport.close()
        self.inbound.close()
        self.rejections.flush()
        self.events.close()

    def wait_for_neighbors(self, timeout_s: float | None = None) -> set[int]:
        """Wait (bounded) until every neighbour has been heard from; returns those not heard."""
        timeout_s = self.config.peer.startup_timeout_s if timeout_s is None else timeout_s
        if self.swarm is not None:  # a swarm peer starts once it knows anyone alive
            swarm = self.swarm
            self._wait_alive(lambda: bool(swarm.live()), timeout_s)
            self.events.emit("start", view=sorted(swarm.live()))
            return set() if swarm.live() else {-1}
        want = set(self._neighbor_ids)
        self._wait_alive(lambda: self.mailbox.linked(self.id, want) == want, timeout_s)
        missing = want - self.mailbox.linked(self.id, want)
        if missing:
            log.warning("peer %d: not heard from %s after %.1f s; going on", self.id,
                        sorted(missing), timeout_s)
        self.events.emit("start", missing=sorted(missing), neighbors=sorted(want))
        return missing

    def _wait_alive(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait (bounded) for ``predicate``, raising at once if the communication thread dies."""
        deadline = time.monotonic() + timeout_s
        while not self.mailbox.wait(predicate, min(0.2, max(0.0, deadline - time.monotonic()))):
            self._check_alive()
            if time.monotonic() >= deadline:
                return
        self._check_alive()

    # ---- the training side (see Rounds) -------------------------------------------------
    def run(self, task: Any, rounds: int | None = None) -> dict[str, Any]:
        """The whole loop for a task (``train_step()``, ``evaluate()``): see :func:`run_task`."""
        return run_task(self, task, rounds)

    def step(self) -> dict[str, Any] | None:
        """Count one local step; every ``interval_steps`` steps a round (see :meth:`Rounds.step`)."""
        return self.rounds.step()

    def exchange(self, push: bool = True) -> dict[str, Any]:
        """One round: publish the model, wait as the pacing says, merge what it picked."""
        return self.rounds.exchange(push)

    def resume(self, clock: int, local_steps: int | None = None) -> None:
        """Go on from a checkpoint's clock and local step count."""
        self.rounds.resume(clock, local_steps)

    def set_final_round(self, r: int | None) -> None:
        """The last round the loop runs (for ``[pacing] final_sync``)."""
        self.rounds.set_final_round(r)

    @property
    def clock(self) -> int:
        """The round this peer is in (written by its round loop only)."""
        return self.rounds.clock

    @clock.setter
    def clock(self, value: int) -> None:  # kept for callers that set it: goes through resume
        self.rounds.resume(value, self.rounds.local_steps)

    @property
    def local_steps(self) -> int:
        """Local steps counted so far."""
        return self.rounds.local_steps

    @local_steps.setter
    def local_steps(self, value: int) -> None:  # as for clock
        self.rounds.resume(self.rounds.clock, value)

    @property
    def final_round(self) -> int | None:
        """The last round the loop runs, once it is known."""
        return self.rounds.final_round

    @property
    def rejected(self) -> collections.Counter[str]:
        """Refused messages by reason."""
        return self.rejections.counts

    @property
    def pushes_sent(self) -> int:
        """Model pushes queued."""
        return self.outbound.pushes_sent

    @property
    def pulls_sent(self) -> int:
        """Pull requests queued."""
        return self.outbound.pulls_sent

    @property
    def pulls_answered(self) -> int:
        """Pull requests answered with the current model."""
        return self.outbound.pulls_answered

    # ---- the communication thread: inbound, heartbeats ----------------------------------
    def _on_frames(self, sender_hint: int | None, frames: list) -> None:
        self.inbound.on_frames(sender_hint, frames)

    def _tick(self) -> None:
        self.beats.tick()
        if self._link is not None:
            self._link.shuffle(self.rounds.clock)

    @property
    def heartbeats_sent(self) -> int:
        """Heartbeats sent so far (start-up beats and the goodbye included)."""
        return self.beats.sent

    def _known(self) -> tuple[int, ...]:
        """Every neighbour that could be alive: the fixed ones, or the swarm's live view."""
        return self._neighbor_ids if self.swarm is None else tuple(self.swarm.live())

    def _all_neighbors(self) -> tuple[int, ...]:
        if self.swarm is not None:
            return ()  # connected as the view learns them
        return self.topology.links(self.id)

    # ---- checkpointable state ---------------------------------------------------------
    def comm_state(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Codec state (residuals, CHOCO references, stream positions; read on the communication
        thread, which owns it) and aggregation state (ADMM duals, an ensemble's kept models)."""
        codec = call_and_wait(self.transport, lambda: {"out": self.outbound.state_dict(),
                                                       "in": self.inbound.state_dict()},
                              timeout_s)
        # a rule registered with register_rule need only aggregate(): no state, nothing kept
        aggregation = self.aggregator.state_dict() if isinstance(self.aggregator, Stateful) else {}
        return copy.deepcopy({"codec": codec, "aggregation": aggregation})

    def load_comm_state(self, state: Mapping[str, Any], timeout_s: float = 10.0) -> None:
        """Put back what :meth:`comm_state` returned (before the first exchange)."""
        codec = state.get("codec") or {}

        def write() -> None:
            if codec.get("out") is not None:
                self.outbound.load_state_dict(codec["out"])
            if codec.get("in") is not None:
                self.inbound.load_state_dict(codec["in"])

        call_and_wait(self.transport, write, timeout_s)
        if isinstance(self.aggregator, Stateful):
            self.aggregator.load_state_dict(state.get("aggregation") or {})

    # ---- stats --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Bytes and messages sent/received, rejections by reason, skipped sends (and, with
        stale correction, the models merged corrected and those too old for its history)."""
        s = self.transport.stats
        stale = self.rounds.stale
        corrections = {} if stale is None else {"stale_corrected": stale.corrected,
                                                "stale_too_old": stale.too_old}
        return {**corrections, "bytes_sent": s.bytes_sent,
                "bytes_received": s.bytes_received + self.inbound.shm_bytes_received,
                "messages_sent": s.messages_sent, "messages_received": s.messages_received,
                "send_dropped": s.send_dropped, "send_failed": s.send_failed,
                "emulated_drops": s.emulated_drops, "heartbeats_sent": self.heartbeats_sent,
                "pushes_sent": self.outbound.pushes_sent,
                "rejected": self.rejections.total,
                "pulls_sent": self.outbound.pulls_sent,
                "pulls_answered": self.outbound.pulls_answered,
                "rejected_by_reason": dict(self.rejections.counts),
                "send_skipped": self.outbound.send_skipped}
