"""A peer's inbound side, on its communication thread: check, decode and route every message.

Wire checks (:func:`gossipml.wire.unpack`), the same-host shared-memory form, the sender check,
then a table of handlers by kind (heartbeats, models and deltas, pulls, membership views,
shared-memory releases). Every refusal is counted by reason and logged; a handler that raises
anything becomes a ``handler_error`` refusal, and the thread goes on with the next message.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from gossipml.aggregation import check_model, reason_slug
from gossipml.codecs.base import CodecError
from gossipml.comm.mailbox import Mailbox
from gossipml.comm.shm import ShmError, offloaded_handle
from gossipml.comm.shmpath import ShmInbox
from gossipml.peer.exchanged import tensor_specs
from gossipml.peer.outbound import Outbound
from gossipml.peer.rejections import Rejections
from gossipml.peer.stream import DeltaGap, Inbound
from gossipml.peer.swarm import SwarmLink
from gossipml.wire import Message, WireError, unpack

__all__ = ["InboundSide", "HANDLER_ERROR", "source_host"]

HANDLER_ERROR = "handler_error"  # the reason counted when a handler raises


def source_host(frames: list) -> str | None:
    """The IP a received message's connection comes from (ZeroMQ's ``Peer-Address``), or None
    (not a tcp connection, or frames that are not ``zmq.Frame``)."""
    try:
        host = frames[0].get("Peer-Address")
    except Exception:  # no metadata (in-memory transport, ipc): nothing to vouch for
        return None
    return host if isinstance(host, str) and host else None


class InboundSide:
    """The handler the transport calls (``on_frames``). Owner: the peer; writer: the
    communication thread, which alone runs every method here and alone touches the stream
    decoder, the shared-memory reader and ``shm_bytes_received``."""

    def __init__(self, peer_id: int, *, mailbox: Mailbox, decoder: Inbound,
                 rejections: Rejections, outbound: Outbound,
                 reference: Mapping[str, torch.Tensor], max_message_bytes: int,
                 peer_ids: frozenset[int] = frozenset(), neighbor_ids: tuple[int, ...] = (),
                 link: SwarmLink | None = None, shm_senders: frozenset[int] = frozenset(),
                 clock: Callable[[], int] = lambda: 0) -> None:
        self.peer_id = peer_id
        self.mailbox = mailbox
        self.decoder = decoder
        self.reject = rejections
        self.outbound = outbound
        self._reference = {k: v.detach() for k, v in reference.items()}
        self._expected = tensor_specs(reference)
        self.max_message_bytes = max_message_bytes
        self.peer_ids = peer_ids  # who may send (static topology; the swarm learns them)
        self.neighbor_ids = neighbor_ids  # who may pull (static topology)
        self.link = link
        self.shm_senders = shm_senders
        self.read_clock = clock  # the round clock, read (never written) here
        self._shm = ShmInbox()
        self.shm_bytes_received = 0  # payload bytes read in place from shared memory
        self.handlers: dict[str, Callable[[Message], None]] = {
            "heartbeat": self.on_heartbeat, "model": self.on_model, "delta": self.on_model,
            "pull": self.on_pull, "ack": self.on_ack}
        if link is not None:
            self.handlers["view"] = self.on_view
            link.on_leave(self.forget)  # a peer that left the view leaves no state here

    def on_frames(self, sender_hint: int | None, frames: list) -> None:
        """Handle one received message (``frames`` empty: it was over the size limit)."""
        try:
            msg = self.admit(sender_hint, frames)
        except Exception as exc:  # containment: no input ends the communication thread
            return self._contain(sender_hint, exc)
        if msg is None:
            return
        handler = self.handlers.get(msg.kind)
        try:
            if handler is None:
                self.reject(msg.sender, "unexpected_kind", f"kind {msg.kind!r}")
            else:
                handler(msg)
        except Exception as exc:  # containment, as above
            self._contain(msg.sender, exc)

    def _contain(self, sender: int | None, exc: Exception) -> None:
        self.reject(sender, HANDLER_ERROR, f"{type(exc).__name__}: {exc}")

    def admit(self, sender_hint: int | None, frames: list) -> Message | None:
        """The checked message, or None after a counted refusal (size, wire, sender)."""
        if not frames:
            return self.reject(sender_hint, "too_large", "message over max_message_bytes")
        bufs = self.resolve_shm(sender_hint, [f.buffer for f in frames])
        if bufs is None:
            return None
        try:
            msg = unpack(bufs, max_message_bytes=self.max_message_bytes, expected=self._expected)
        except WireError as exc:
            return self.reject(sender_hint, exc.reason, str(exc))
        if sender_hint is not None and msg.sender != sender_hint:
            return self.reject(sender_hint, "sender_mismatch",
                               f"header says {msg.sender}, socket says {sender_hint}")
        if self.link is not None:
            if msg.sender == self.peer_id:
                return self.reject(msg.sender, "unknown_sender", "a message from myself")
            if not self.link.admit(msg, source_host(frames)):
                return self.reject(msg.sender, "not_in_view",
                                   f"{msg.kind} from {msg.sender}, not in the live view")
        elif msg.sender not in self.peer_ids or msg.sender == self.peer_id:
            return self.reject(msg.sender, "unknown_sender", f"sender {msg.sender}")
        return msg

    # ---- handlers, by kind --------------------------------------------------------------
    def on_heartbeat(self, msg: Message) -> None:
        """A neighbour's clock, liveness, goodbye and whom it hears."""
        hears = msg.info.get("hears", ())
        self.mailbox.heard(msg.sender, msg.round, done=bool(msg.info.get("done", False)),
                           hears=frozenset(h for h in hears if isinstance(h, int)))

    def on_model(self, msg: Message) -> None:
        """A model or delta: stored in the mailbox, or refused (and noted as delivered)."""
        reason, detail = self.check_model_message(msg)
        if reason is not None:
            # the neighbour did deliver its round: pacing need not wait for it, but nothing of
            # it is merged
            self.mailbox.refused(msg.sender, msg.round)
            self.reject(msg.sender, reason, detail)

    def on_pull(self, msg: Message) -> None:
        """A neighbour asks for the current model."""
        known = self.neighbor_ids if self.link is None else self.link.connected
        if msg.sender not in known:
            return self.reject(msg.sender, "unknown_sender", "pull from a non-neighbour")
        self.outbound.answer_pull(msg.sender, self.read_clock())

    def on_view(self, msg: Message) -> None:
        """A membership shuffle or its reply (swarm peers only)."""
        self.link.on_view(msg, self.read_clock())  # type: ignore[union-attr]

    def on_ack(self, msg: Message) -> None:
        """A neighbour copied our shared-memory segment out."""
        if "shm_release" not in msg.info:
            return self.reject(msg.sender, "unexpected_kind", f"kind {msg.kind!r}")
        self.outbound.on_shm_release(msg.sender, msg.info["shm_release"])

    # ---- checks -------------------------------------------------------------------------
    def check_model_message(self, msg: Message) -> tuple[str | None, str]:
        """Decode, check and store a model message; ``(reason, detail)`` when refused."""
        names = {name for name, _ in msg.tensors}
        if names != set(self._expected):
            return "missing_tensor", f"missing {sorted(set(self._expected) - names)[:3]}"
        try:
            params = self.decoder.decode(msg)
        except CodecError as exc:
            return ("delta_gap" if isinstance(exc, DeltaGap) else "bad_payload"), str(exc)
        problem = check_model(params, self._reference)
        if problem is not None:
            return reason_slug(problem), problem
        self.mailbox.put(msg.sender, msg.round, params, msg.info)
        return None, ""

    def resolve_shm(self, sender: int | None, bufs: list) -> list | None:
        """A same-host message's buffers, read in place from shared memory (the segment goes
        back to its sender once the tensors made from it are gone); plain messages pass through.
        None (a counted rejection) for a bad handle or one from a peer not on this host."""
        try:
            if offloaded_handle(bufs) is None:
                return bufs
            if sender is None or sender not in self.shm_senders:
                return self.reject(sender, "bad_shm", "shared-memory handle from a non-local peer")
            resolved = self._shm.resolve(
                bufs, lambda token: self.outbound.release_shm(sender, token))
        except ShmError as exc:
            return self.reject(sender, f"shm_{exc.reason}", str(exc))
        self.shm_bytes_received += sum(memoryview(b).nbytes for b in resolved[1:])
        return resolved

    def forget(self, sender: int) -> None:
        """Drop what is held for ``sender`` (mailbox entries, stream state): it left the view."""
        self.mailbox.forget(sender)
        self.decoder.forget(sender)

    def state_dict(self) -> dict[str, Any]:
        """The stream decoder's state (neighbours' CHOCO references, stream positions); read it
        on the communication thread."""
        return self.decoder.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (on the communication thread)."""
        self.decoder.load_state_dict(dict(state))

    def close(self) -> None:
        """Let go of shared-memory segments still mapped."""
        self._shm.close()
