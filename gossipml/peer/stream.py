"""What a peer puts on the wire and how a receiver turns it back into a neighbour model.

Content is either the parameters themselves (``[codec] content = "params"``) or, CHOCO-SGD style,
the compressed change of a public reference ``x_hat`` (``content = "delta"``): the sender sends
``Q(x - x_hat)`` and moves ``x_hat`` by what it sent; each receiver moves its copy of ``x_hat_j``
by the same amount, so the copies agree. Every ``refresh_every_rounds`` rounds the delta goes
through a dense codec (``refresh_codec``, q4 by default) instead of the sparse one, which pulls
``x_hat`` close to ``x`` at a fraction of a keyframe's bytes. A lost delta would make the copies
drift apart, so every message carries a stream sequence number, and every
``keyframe_every_rounds`` rounds the sender sends ``x_hat`` itself (raw, or through
``keyframe_codec``) instead; a receiver that saw a gap ignores that sender's deltas until the
next keyframe (counted as ``delta_gap``).

Both classes run on the communication thread only.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from gossipml.policies.attacks import apply_attack
from gossipml.codecs import (Codec, CodecError, DeltaReceiver, DeltaSender, build_codec,
                             decode_model, encode_model)
from gossipml.wire import Message, pack

__all__ = ["Outbox", "Inbound", "DeltaGap"]


class DeltaGap(CodecError):
    """A delta arrived after a lost one: the sender's reference copy is stale until a keyframe."""


class Outbox:
    """Encodes snapshots into wire frames: parameters, or CHOCO deltas with keyframes."""

    def __init__(self, peer_id: int, codec: Codec, *, delta: bool, keyframe_every_rounds: int,
                 attack: str = "", seed: int = 0, keyframe_codec: str = "identity",
                 refresh_every_rounds: int = 0, refresh_codec: str = "q4") -> None:
        self.peer_id = peer_id
        self.codec = codec
        self.delta = delta
        self.keyframe_every_rounds = keyframe_every_rounds
        self.attack = attack
        self.seed = seed
        self._states: Any = None
        self._sender = DeltaSender(codec) if delta else None
        self._keyframe_codec = build_codec(keyframe_codec)
        self.refresh_every_rounds = refresh_every_rounds
        self._refresh_codec = build_codec(refresh_codec)
        self._seq = 0

    def frames(self, tensors: Mapping[str, torch.Tensor], round_: int,
               info: Mapping[str, Any]) -> list:
        """The frames of one outgoing model message (runs on the communication thread)."""
        if self.attack:
            tensors = apply_attack(self.attack, tensors, seed=self.seed + round_)
        extra: dict[str, Any] = {"seq": self._seq}
        self._seq += 1
        if self._sender is None:
            items, self._states = encode_model(tensors, self.codec, self._states)
            kind = "model"
        elif round_ % self.keyframe_every_rounds == 0:
            # keyframe: the reference jumps to the model as the keyframe codec carries it (raw by
            # default); receivers reset to the same decoded tensors
            items, _ = encode_model(tensors, self._keyframe_codec, None)
            decoded = decode_model(items, next(iter(tensors.values())).device) if tensors else {}
            # raw payloads decode to views of the snapshot being sent: copy those only
            self._sender.reference = {name: decoded[name].clone() if p.codec == "identity"
                                      else decoded[name] for name, p in items}
            kind = "delta"
            extra["keyframe"] = True
        elif self.refresh_every_rounds and round_ % self.refresh_every_rounds == 0:
            # refresh: this round's delta goes through the dense refresh codec (a q4 delta is
            # far more exact than a q4 keyframe: x - x_hat is small); receivers add it as usual
            items = self._sender.encode(tensors, self._refresh_codec)
            kind = "delta"
            extra["refresh"] = True
        else:
            items = self._sender.encode(tensors)
            kind = "delta"
        return pack(Message(kind=kind, sender=self.peer_id, round=round_, tensors=tuple(items),
                            info={**info, **extra}))

    def state_dict(self) -> dict[str, Any]:
        """Codec state (error-feedback residuals, warm starts), the CHOCO reference and the
        sequence number: what a restarted peer needs to go on sending consistently."""
        return {"states": self._states, "seq": self._seq,
                "reference": None if self._sender is None else self._sender.reference}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self._states = state.get("states")
        self._seq = int(state.get("seq", 0))
        if self._sender is not None and state.get("reference") is not None:
            self._sender.reference = dict(state["reference"])


class Inbound:
    """Turns a validated model or delta message into the neighbour's model (a dict of tensors)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._receiver = DeltaReceiver(device)
        self._next_seq: dict[int, int] = {}
        self._synced: set[int] = set()

    def decode(self, msg: Message) -> dict[str, torch.Tensor]:
        """Decode ``msg``; for deltas, return a copy of the sender's updated ``x_hat``.
        Raises CodecError (or DeltaGap) for payloads that cannot be used."""
        seq = msg.info.get("seq")
        expected = self._next_seq.get(msg.sender)
        if isinstance(seq, int):
            self._next_seq[msg.sender] = seq + 1
        if msg.kind == "model":
            return decode_model(msg.tensors, self.device)
        if msg.info.get("keyframe"):
            self._receiver.forget(msg.sender)
            self._synced.add(msg.sender)
        elif expected is not None and seq != expected:
            self._synced.discard(msg.sender)
        if msg.sender not in self._synced:
            raise DeltaGap(f"delta seq {seq} from {msg.sender} after a gap (or before its first "
                           "keyframe); ignored until the next keyframe")
        x_hat = self._receiver.apply(msg.sender, msg.tensors)
        return {k: v.clone() for k, v in x_hat.items()}

    def forget(self, sender: int) -> None:
        """Drop ``sender``'s reference copy and stream position (it left the view)."""
        self._receiver.forget(sender)
        self._next_seq.pop(sender, None)
        self._synced.discard(sender)

    def state_dict(self) -> dict[str, Any]:
        """The neighbours' CHOCO references and the stream positions."""
        return {"copies": self._receiver.copies, "next_seq": dict(self._next_seq),
                "synced": sorted(self._synced)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self._receiver.copies = {int(k): dict(v) for k, v in state.get("copies", {}).items()}
        self._next_seq = {int(k): int(v) for k, v in state.get("next_seq", {}).items()}
        self._synced = {int(s) for s in state.get("synced", [])}
