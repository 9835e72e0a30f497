"""A peer's inbound side, on its communication thread: check, decode and route every message.

Wire checks (:func:`gossipml.wire.unpack`), the same-host shared-memory form, the sender check,
the round window (a heartbeat's, model's or delta's round further ahead of this peer's clock than
the pacing allows is refused as ``round_out_of_window`` and changes nothing), then a table of
handlers by kind (heartbeats, models and deltas, pulls, membership views,
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
from gossipml.comm.shmpath import ShmInbox, answer_probe
from gossipml.peer.accepted import REASON as CODEC_NOT_CONFIGURED, unconfigured_codec
from gossipml.peer.exchanged import tensor_specs
from gossipml.peer.outbound import Outbound
from gossipml.peer.rejections import Rejections
from gossipml.peer.stream import BadSeq, DeltaGap, Inbound
from gossipml.peer.swarm import SwarmLink
from gossipml.policies.pacing import RoundWindow
from gossipml.wire import Message, WireError, unpack

__all__ = ["InboundSide", "HANDLER_ERROR", "OUT_OF_WINDOW", "CLOCKED_KINDS", "source_host"]

HANDLER_ERROR = "handler_error"  # the reason counted when a handler raises
OUT_OF_WINDOW = "round_out_of_window"  # a round further ahead than the pacing allows
#: Kinds whose round feeds the mailbox (a clock, a held model); the others' round is not stored.
CLOCKED_KINDS = frozenset({"heartbeat", "model", "delta"})


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
                 link: SwarmLink | None = None, shm_enabled: bool = False,
                 clock: Callable[[], int] = lambda: 0,
                 accepted_codecs: frozenset[str] | None = None,
                 window: Callable[[], RoundWindow] | None = None) -> None:
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
        self.shm_enabled = shm_enabled  # [transport] shm: answer same-host probes
        self.shm_senders: set[int] = set()  # whose probe we read back: their handles are taken
        self.read_clock = clock  # the round clock, read (never written) here
        self.accepted_codecs = accepted_codecs  # None: any registered codec (peer.accepted)
        self.read_window = window  # the rounds believed (None: any)
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
        if msg is None or not self.in_window(msg):
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

    def in_window(self, msg: Message) -> bool:
        """Whether ``msg``'s round is plausible at this peer's clock; else a counted refusal."""
        if self.read_window is None or msg.kind not in CLOCKED_KINDS:
            return True
        clock = self.read_clock()
        window = self.read_window()
        if window.admits(msg.round, clock):
            return True
        self.reject(msg.sender, OUT_OF_WINDOW, f"{msg.kind} round {msg.round} at clock {clock} "
                    f"(believed up to {window.top(clock)})")
        return False

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
            # it is merged (a sequence number not believed says nothing of the sender)
            if reason != "bad_seq":
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
        """Shared-memory control: a release (a neighbour copied our segment out), a probe (can we
        read a neighbour's files? then answer, and take its handles from now on) or an answer
        to our probe (then send it through shared memory)."""
        info = msg.info
        if not {"shm_release", "shm_probe", "shm_probe_answer"} & set(info):
            return self.reject(msg.sender, "unexpected_kind", f"kind {msg.kind!r}")
        if "shm_release" in info:
            self.outbound.on_shm_release(msg.sender, info["shm_release"])
        if "shm_probe" in info and self.shm_enabled:
            nonce = answer_probe(info["shm_probe"])
            if nonce is not None:
                self.shm_senders.add(msg.sender)
                self.outbound.answer_shm_probe(msg.sender, nonce)
        if "shm_probe_answer" in info and not self.outbound.on_shm_probe_answer(
                msg.sender, info["shm_probe_answer"]):
            self.reject(msg.sender, "bad_shm", "a probe answer that does not match our probe")

    # ---- checks -------------------------------------------------------------------------
    def check_model_message(self, msg: Message) -> tuple[str | None, str]:
        """Decode, check and store a model message; ``(reason, detail)`` when refused."""
        names = {name for name, _ in msg.tensors}
        if names != set(self._expected):
            return "missing_tensor", f"missing {sorted(set(self._expected) - names)[:3]}"
        if self.accepted_codecs is not None:  # before decoding: only the experiment's codecs
            bad = unconfigured_codec(msg.tensors, self.accepted_codecs)
            if bad is not None:
                return CODEC_NOT_CONFIGURED, bad
        try:
            params = self.decoder.decode(msg)
        except CodecError as exc:
            return ("delta_gap" if isinstance(exc, DeltaGap) else
                    "bad_seq" if isinstance(exc, BadSeq) else "bad_payload"), str(exc)
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
