"""A peer's sending side: model pushes through the snapshot pool, pull requests, pull answers
(rate-limited per requester and shared between requesters: :mod:`gossipml.peer.pulls`) and
shared-memory acknowledgements, with their counters."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch

from gossipml.codecs import build_codec, encode_model
from gossipml.comm.port import Port
from gossipml.comm.snapshot import SnapshotPool
from gossipml.comm.transport import Outgoing
from gossipml.events import EventLog
from gossipml.peer.exchanged import exchanged_state
from gossipml.peer.pulls import PULL_RATE, PullAnswers, PullLimit, PullLimiter
from gossipml.peer.rejections import Rejections
from gossipml.peer.stream import Outbox
from gossipml.wire import Message, pack

__all__ = ["Outbound", "MAX_SHM_PROBES", "SendsWithModel"]

#: Probe offers per neighbour before it is taken to be on another host (or /dev/shm).
MAX_SHM_PROBES = 20


@runtime_checkable
class SendsWithModel(Protocol):
    """A part whose pushes carry tensors next to the model (asynchronous ADMM's running sums)."""

    def outgoing_spec(self, own: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """The added tensors' names, dtypes and shapes (zeros); empty: none."""
        ...

    def outgoing_tensors(self, version: int,
                         own: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """The tensors added to the push of round ``version`` whose model is ``own``."""
        ...


class Outbound:
    """Everything a peer sends but heartbeats. Owner: the peer. Training thread: ``publish``
    (snapshot pool, ``pushes_sent``), ``request_pull`` (``pulls_sent``). Communication thread:
    the stream encoder (``Outbox.frames`` runs when the transport builds a push), ``answer_pull``
    (``pulls_answered``, the pull limiter and answers), ``release_shm`` and ``on_shm_release``.
    ``progress`` reads the training thread's local step count (the pull answers' model version;
    None: the round clock a pull is answered at)."""

    def __init__(self, peer_id: int, model: torch.nn.Module, port: Port, encoder: Outbox,
                 events: EventLog, *, num_samples: int = 0,
                 device: torch.device | str = "cpu", rejections: Rejections | None = None,
                 pull_limit: PullLimit | None = None, publish_wait_s: float = 0.0,
                 progress: Callable[[], int] | None = None,
                 extra: SendsWithModel | None = None) -> None:
        self.peer_id = peer_id
        self.model = model
        self.port = port
        self.encoder = encoder
        self.events = events
        self.num_samples = int(num_samples)
        self._extra = extra  # training thread: adds its tensors to every push
        params = exchanged_state(model)
        self._pool = SnapshotPool({**params, **(extra.outgoing_spec(params) if extra else {})},
                                  device=device)
        self._publish_wait_s = publish_wait_s  # paced runs wait for a free snapshot buffer
        self.pushes_sent = 0  # training thread
        self.pulls_sent = 0  # training thread
        self.pulls_answered = 0  # communication thread
        self._shm_probes: dict[int, int] = {}  # communication thread: probe offers per dest
        self.rejections = rejections
        self._progress = progress
        self._limiter = PullLimiter(pull_limit or PullLimit())
        self._answers = PullAnswers()

    @property
    def send_skipped(self) -> int:
        """Pushes skipped because every snapshot buffer was still being sent."""
        return self._pool.skipped

    # ---- training thread ----------------------------------------------------------------
    def publish(self, r: int, dests: tuple[int, ...]) -> None:
        """Copy the model into a free snapshot and queue it for ``dests`` as round ``r`` (one
        message per destination when the encoder keeps a stream per receiver); the encoding runs
        on the communication thread."""
        params = exchanged_state(self.model)
        if self._extra is not None:  # asked every round, sent or not (ADMM records its sums)
            params = {**params, **self._extra.outgoing_tensors(r, params)}
        if not dests:
            return
        snap = self._pool.publish(params, r, self._publish_wait_s)
        if snap is None:
            self.events.emit("send_skipped", round=r, reason="no free snapshot buffer")
            return
        info = {"num_samples": self.num_samples}
        self.pushes_sent += 1
        if not self.encoder.per_destination:
            self.port.submit(Outgoing(
                tuple(dests), lambda: self.encoder.frames(snap.tensors, r, info),
                on_done=lambda: self._pool.release(snap)))
            return
        left = [len(dests)]  # one message per receiver's stream; the last one frees the snapshot

        def done() -> None:  # communication thread
            left[0] -= 1
            if not left[0]:
                self._pool.release(snap)

        for d in dests:
            self.port.submit(Outgoing(
                (d,), lambda d=d: self.encoder.frames(snap.tensors, r, info, dest=d), on_done=done))

    def request_pull(self, sources: tuple[int, ...], clock: int) -> None:
        """Ask one of ``sources`` (round-robin over calls) for its current model."""
        if not sources:
            return
        dest = sources[self.pulls_sent % len(sources)]
        self.pulls_sent += 1
        msg = Message(kind="pull", sender=self.peer_id, round=clock)
        self.port.submit(Outgoing((dest,), lambda: pack(msg)))

    # ---- communication thread -----------------------------------------------------------
    def answer_pull(self, requester: int, clock: int) -> None:
        """Send the current model, uncompressed, to ``requester``, unless its pull budget is spent
        (a ``pull_rate`` refusal). Requesters of one model version share one copy and its frames
        (read while training may be mid-step: a torn read of a few entries is harmless for gossip
        averaging)."""
        version = clock if self._progress is None else self._progress()
        if not self._limiter.allow(requester, version, time.monotonic()):
            if self.rejections is not None:
                self.rejections(requester, PULL_RATE, "pulled again before its budget refilled")
            return
        self.pulls_answered += 1
        answer = self._answers.acquire(version, lambda: self._encode_answer(clock))
        self.port.submit(Outgoing((requester,), lambda: answer.frames,
                                  on_done=lambda: self._answers.release(answer)))

    def _encode_answer(self, clock: int) -> list:
        """One copy of the model, packed as a pull answer of round ``clock``."""
        tensors = {k: v.detach().clone() for k, v in exchanged_state(self.model).items()}
        items, _ = encode_model(tensors, build_codec("identity"), None)
        msg = Message(kind="model", sender=self.peer_id, round=clock, tensors=tuple(items),
                      info={"num_samples": self.num_samples, "pulled": True})
        return pack(msg)

    @property
    def pull_copies(self) -> int:
        """Model copies made for pull answers so far (one per version, not one per pull)."""
        return self._answers.encoded

    def release_shm(self, sender: int, token: dict[str, Any]) -> None:
        """Tell ``sender`` its shared-memory segment is free (any thread: submit only queues)."""
        ack = Message(kind="ack", sender=self.peer_id, round=0, info={"shm_release": token})
        self.port.submit(Outgoing((sender,), lambda: pack(ack)))

    def on_shm_release(self, dest: int, token: object) -> bool:
        """``dest`` copied our segment out: free it."""
        return self.port.shm_release(dest, token)

    def probe_shm(self, dests: tuple[int, ...]) -> None:
        """Same host is decided by a handshake, not by addresses: offer each neighbour not yet
        on shared memory a probe file to read back (communication thread; at most
        ``MAX_SHM_PROBES`` offers each, so a neighbour on another host costs a few bytes)."""
        for dest in dests:
            if self._shm_probes.get(dest, 0) >= MAX_SHM_PROBES:
                continue
            name = self.port.shm_probe(dest)
            if name is None:
                continue
            self._shm_probes[dest] = self._shm_probes.get(dest, 0) + 1
            probe = Message(kind="ack", sender=self.peer_id, round=0, info={"shm_probe": name})
            self.port.submit(Outgoing((dest,), lambda m=probe: pack(m)))

    def answer_shm_probe(self, sender: int, nonce: bytes) -> None:
        """Send ``sender`` the nonce read from its probe file: we share its /dev/shm."""
        ack = Message(kind="ack", sender=self.peer_id, round=0, info={"shm_probe_answer": nonce})
        self.port.submit(Outgoing((sender,), lambda: pack(ack)))

    def on_shm_probe_answer(self, dest: int, answer: bytes) -> bool:
        """``dest`` read our probe back: send it through shared memory from now on."""
        return self.port.shm_confirm(dest, answer)

    def state_dict(self) -> dict[str, Any]:
        """The stream encoder's state (codec residuals, CHOCO reference, sequence number); read
        it on the communication thread."""
        return self.encoder.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (on the communication thread)."""
        self.encoder.load_state_dict(dict(state))
