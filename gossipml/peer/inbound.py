"""A peer's inbound side, on its communication thread: check, decode and route every message.

Wire checks (:func:`gossipml.wire.unpack`), the same-host shared-memory form, model checks (NaN,
Inf, shapes) and the routing by kind (heartbeats, models and deltas, pulls, membership views,
shared-memory releases). Every refusal is counted by reason and logged; the peer goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gossipml.aggregation import check_model, reason_slug
from gossipml.codecs import build_codec, encode_model
from gossipml.codecs.base import CodecError
from gossipml.peer.stream import DeltaGap
from gossipml.comm.shm import ShmError, offloaded_handle
from gossipml.comm.transport import Outgoing
from gossipml.wire import Message, WireError, pack, unpack

if TYPE_CHECKING:
    from gossipml.peer import Peer

__all__ = ["PeerInbox"]


class PeerInbox:
    """The inbound handler the transport calls (``on_frames``); runs on the communication thread."""

    def __init__(self, peer: "Peer") -> None:
        self.peer = peer

    def on_frames(self, sender_hint: int | None, frames: list) -> None:
        """Handle one received message (``frames`` empty: it was over the size limit)."""
        if not frames:
            return self.peer._reject(sender_hint, "too_large", "message over max_message_bytes")
        bufs = self.resolve_shm(sender_hint, [f.buffer for f in frames])
        if bufs is None:
            return
        try:
            msg = unpack(bufs,
                         max_message_bytes=self.peer.config.transport.max_message_bytes,
                         expected=self.peer._expected)
        except WireError as exc:
            return self.peer._reject(sender_hint, exc.reason, str(exc))
        if sender_hint is not None and msg.sender != sender_hint:
            return self.peer._reject(sender_hint, "sender_mismatch",
                                     f"header says {msg.sender}, socket says {sender_hint}")
        if self.peer.swarm is not None:
            if msg.sender == self.peer.id:
                return self.peer._reject(msg.sender, "unknown_sender", "a message from myself")
            self.peer._link.note_member(msg)  # type: ignore[union-attr]
        elif msg.sender not in self.peer.peers or msg.sender == self.peer.id:
            return self.peer._reject(msg.sender, "unknown_sender", f"sender {msg.sender}")
        if msg.kind == "heartbeat":
            hears = msg.info.get("hears", ())
            self.peer.mailbox.heard(msg.sender, msg.round,
                                    done=bool(msg.info.get("done", False)),
                                    hears=frozenset(h for h in hears if isinstance(h, int)))
        elif msg.kind in ("model", "delta"):
            self.accept_model(msg)
        elif msg.kind == "pull":
            self.answer_pull(msg.sender)
        elif msg.kind == "view" and self.peer.swarm is not None:
            self.peer._link.on_view(msg, self.peer.clock)  # type: ignore[union-attr]
        elif msg.kind == "ack" and "shm_release" in msg.info:
            self.peer.transport.shm_release(msg.sender, msg.info["shm_release"])
        else:
            self.peer._reject(msg.sender, "unexpected_kind", f"kind {msg.kind!r}")

    def accept_model(self, msg: Message) -> None:
        reason, detail = self.check_model_message(msg)
        if reason is not None:
            # the neighbour did deliver its round: pacing need not wait for it, but nothing of
            # it is merged
            self.peer.mailbox.refused(msg.sender, msg.round)
            return self.peer._reject(msg.sender, reason, detail)

    def check_model_message(self, msg: Message) -> tuple[str | None, str]:
        """Decode, check and store a model message; ``(reason, detail)`` when refused."""
        names = {name for name, _ in msg.tensors}
        if names != set(self.peer._expected):
            return "missing_tensor", f"missing {sorted(set(self.peer._expected) - names)[:3]}"
        try:
            params = self.peer._inbound.decode(msg)
        except CodecError as exc:
            return ("delta_gap" if isinstance(exc, DeltaGap) else "bad_payload"), str(exc)
        problem = check_model(params, self.peer._reference)
        if problem is not None:
            return reason_slug(problem), problem
        self.peer.mailbox.put(msg.sender, msg.round, params, msg.info)
        return None, ""

    def resolve_shm(self, sender: int | None, bufs: list) -> list | None:
        """A same-host message's buffers, read in place from shared memory (the segment goes
        back to its sender once the tensors made from it are gone); plain messages pass through.
        None (a counted rejection) for a bad handle or one from a peer not on this host."""
        try:
            if offloaded_handle(bufs) is None:
                return bufs
            if sender is None or sender not in self.peer.transport.shm_dests:
                return self.peer._reject(sender, "bad_shm",
                                         "shared-memory handle from a non-local peer")
            resolved = self.peer._shm_inbox.resolve(
                bufs, lambda token: self.release_shm(sender, token))
        except ShmError as exc:
            return self.peer._reject(sender, f"shm_{exc.reason}", str(exc))
        self.peer.transport.stats.bytes_received += sum(memoryview(b).nbytes for b in resolved[1:])
        return resolved

    def release_shm(self, sender: int, token: dict[str, Any]) -> None:
        """Tell ``sender`` its segment is free (any thread: submit only queues)."""
        ack = Message(kind="ack", sender=self.peer.id, round=0, info={"shm_release": token})
        self.peer.transport.submit(Outgoing((sender,), lambda: pack(ack)))

    def answer_pull(self, requester: int) -> None:
        """Send the current model to ``requester`` (read on this thread while training may be
        mid-step: a torn read of a few entries is harmless for gossip averaging)."""
        known = self.peer._neighbor_ids if self.peer._link is None else self.peer._link.connected
        if requester not in known:
            return self.peer._reject(requester, "unknown_sender", "pull from a non-neighbour")
        from gossipml.peer import exchanged_state  # (peer.py imports this module)

        self.peer.pulls_answered += 1
        tensors = {k: v.detach().clone() for k, v in exchanged_state(self.peer.model).items()}
        items, _ = encode_model(tensors, build_codec("identity"), None)
        msg = Message(kind="model", sender=self.peer.id, round=self.peer.clock,
                      tensors=tuple(items),
                      info={"num_samples": int(self.peer.num_samples), "pulled": True})
        self.peer.transport.submit(Outgoing((requester,), lambda: pack(msg)))
