"""What a peer puts on the wire and how a receiver turns it back into a neighbour model.

Content is either the parameters themselves (``[codec] content = "params"``) or, CHOCO-SGD style,
the compressed change of a public reference ``x_hat`` (``content = "delta"``): the sender sends
``Q(x - x_hat)`` and moves ``x_hat`` by what it sent; each receiver moves its copy of ``x_hat_j``
by the same amount, so the copies agree. Every ``refresh_every_rounds`` rounds the delta goes
through a dense codec (``refresh_codec``, q4 by default) instead of the sparse one, which pulls
``x_hat`` close to ``x`` at a fraction of a keyframe's bytes. A lost delta would make the copies
drift apart, so every message carries a stream sequence number, and a stream's first message and
then one every ``keyframe_every_rounds`` rounds (the first push that many rounds after the last
keyframe) send ``x_hat`` itself (raw, or through ``keyframe_codec``) instead; a receiver that saw
a gap ignores that sender's deltas until the next keyframe (counted as ``delta_gap``).

The ``threshold`` codec sends only the entries of ``x - x_hat`` past its threshold, so ``x_hat``
is its last-sent copy and the receiver's copy stays within the threshold of ``x``. It always goes
as deltas, with either content, over one stream per destination: a per-round topology pushes to
different neighbours each round, and a receiver left out of a round would miss a change of a
shared ``x_hat`` (a gap until the next keyframe). One ``x_hat`` per destination costs one model
copy and one encode per neighbour; bytes fall as the model settles, since fewer entries move.
A sequence number more than :data:`SEQ_WINDOW` away from the expected one (or not an integer)
is refused as ``bad_seq`` and leaves the stream as it was, so a forged one cannot silence the
real sender; a keyframe resyncs whatever its number.

Both classes run on the communication thread only.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from gossipml.policies.attacks import apply_attack
from gossipml.codecs import (Codec, CodecError, DeltaReceiver, DeltaSender, build_codec,
                             decode_model, encode_model, filters_changes)
from gossipml.wire import Message, pack

__all__ = ["Outbox", "Inbound", "DeltaGap", "BadSeq", "SEQ_WINDOW"]

#: How far (in messages) a delta's sequence number may be from the expected one and still count
#: as the same stream (a few lost messages: a gap); further is refused without a state change.
SEQ_WINDOW = 64


class DeltaGap(CodecError):
    """A delta arrived after a lost one: the sender's reference copy is stale until a keyframe."""


class _Stream:
    """The sender's side of one delta stream: the reference ``x_hat`` (the receivers' copy), the
    next sequence number and the round of the last keyframe."""

    def __init__(self, codec: Codec) -> None:
        self.sender = DeltaSender(codec)
        self.seq = 0
        self.keyframe_round: int | None = None

    def needs_keyframe(self, round_: int, every_rounds: int) -> bool:
        """First message, ``every_rounds`` rounds since the last keyframe, or a clock set back."""
        last = self.keyframe_round
        return last is None or not 0 <= round_ - last < every_rounds

    def state_dict(self) -> dict[str, Any]:
        """Reference, sequence number and last keyframe round."""
        return {"seq": self.seq, "reference": self.sender.reference,
                "keyframe_round": self.keyframe_round}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self.seq = int(state.get("seq", 0))
        if state.get("reference") is not None:
            self.sender.reference = dict(state["reference"])
        kf = state.get("keyframe_round")
        self.keyframe_round = None if kf is None else int(kf)


class BadSeq(CodecError):
    """A delta's sequence number is no integer, or too far from the expected one to believe."""


class Outbox:
    """Encodes snapshots into wire frames: parameters, or CHOCO deltas with keyframes. A codec
    that sends changes (``threshold``, :func:`filters_changes`) always goes as deltas, over one
    stream per destination (``per_destination``): ``x_hat`` is its last-sent copy, and receivers
    pushed to in different rounds (per-round topologies) hold different copies."""

    def __init__(self, peer_id: int, codec: Codec, *, delta: bool, keyframe_every_rounds: int,
                 attack: str = "", seed: int = 0, keyframe_codec: str = "identity",
                 refresh_every_rounds: int = 0, refresh_codec: str = "q4") -> None:
        self.peer_id = peer_id
        self.codec = codec
        self.per_destination = filters_changes(codec)
        self.delta = delta or self.per_destination
        self.keyframe_every_rounds = keyframe_every_rounds
        self.attack = attack
        self.seed = seed
        self._states: Any = None
        self._keyframe_codec = build_codec(keyframe_codec)
        self.refresh_every_rounds = refresh_every_rounds
        self._refresh_codec = build_codec(refresh_codec)
        self._seq = 0  # content = "params": the message counter
        self._streams: dict[int | None, _Stream] = {}  # key None: the one shared delta stream

    def frames(self, tensors: Mapping[str, torch.Tensor], round_: int,
               info: Mapping[str, Any], dest: int | None = None) -> list:
        """The frames of one outgoing model message (runs on the communication thread); ``dest``
        (required when ``per_destination``) picks the receiver's stream."""
        if self.attack:
            tensors = apply_attack(self.attack, tensors, seed=self.seed + round_)
        if not self.delta:
            extra: dict[str, Any] = {"seq": self._seq}
            self._seq += 1
            items, self._states = encode_model(tensors, self.codec, self._states)
            kind = "model"
        else:
            if self.per_destination and dest is None:
                raise ValueError(f"{self.codec.name} keeps one stream per receiver: pass dest "
                                 "(Outbound submits one message per destination)")
            key = dest if self.per_destination else None
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = _Stream(self.codec)
            items, extra = self._delta_items(stream, tensors, round_)
            kind = "delta"
        return pack(Message(kind=kind, sender=self.peer_id, round=round_, tensors=tuple(items),
                            info={**info, **extra}))

    def _delta_items(self, stream: _Stream, tensors: Mapping[str, torch.Tensor],
                     round_: int) -> tuple[list, dict[str, Any]]:
        """One stream's next message: a keyframe, a refresh or a delta, with its info fields."""
        extra: dict[str, Any] = {"seq": stream.seq}
        stream.seq += 1
        if stream.needs_keyframe(round_, self.keyframe_every_rounds):
            # keyframe: the reference jumps to the model as the keyframe codec carries it (raw by
            # default); receivers reset to the same decoded tensors
            items, _ = encode_model(tensors, self._keyframe_codec, None)
            decoded = decode_model(items, next(iter(tensors.values())).device) if tensors else {}
            # raw payloads decode to views of the snapshot being sent: copy those only
            stream.sender.reference = {name: decoded[name].clone() if p.codec == "identity"
                                       else decoded[name] for name, p in items}
            stream.keyframe_round = round_
            extra["keyframe"] = True
        elif self.refresh_every_rounds and round_ % self.refresh_every_rounds == 0:
            # refresh: this round's delta goes through the dense refresh codec (a q4 delta is
            # far more exact than a q4 keyframe: x - x_hat is small); receivers add it as usual
            items = stream.sender.encode(tensors, self._refresh_codec)
            extra["refresh"] = True
        else:
            items = stream.sender.encode(tensors)
        return items, extra

    def state_dict(self) -> dict[str, Any]:
        """Codec state (error-feedback residuals, warm starts), the CHOCO reference and the
        sequence number (per destination under ``streams`` when ``per_destination``): what a
        restarted peer needs to go on sending consistently."""
        shared = self._streams.get(None)
        return {"states": self._states, "seq": self._seq if shared is None else shared.seq,
                "reference": None if shared is None else shared.sender.reference,
                "keyframe_round": None if shared is None else shared.keyframe_round,
                "streams": {d: s.state_dict() for d, s in self._streams.items() if d is not None}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self._states = state.get("states")
        self._seq = int(state.get("seq", 0))
        self._streams = {}
        if self.delta and not self.per_destination:
            shared = self._streams[None] = _Stream(self.codec)
            shared.load_state_dict(state)
        for dest, sub in (state.get("streams") or {}).items():
            self._streams[int(dest)] = stream = _Stream(self.codec)
            stream.load_state_dict(sub)


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
        if msg.kind == "model":  # parameters: no stream to follow
            return decode_model(msg.tensors, self.device)
        seq = msg.info.get("seq")
        expected = self._next_seq.get(msg.sender)
        self._check_seq(msg.sender, seq, expected, bool(msg.info.get("keyframe")))
        self._next_seq[msg.sender] = seq + 1
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

    @staticmethod
    def _check_seq(sender: int, seq: Any, expected: int | None, keyframe: bool) -> None:
        """BadSeq unless ``seq`` is an int and (a keyframe, the first seen, or) within
        :data:`SEQ_WINDOW` of ``expected``; nothing is changed either way."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise BadSeq(f"delta from {sender} has seq {seq!r:.40}, not an integer")
        if not keyframe and expected is not None and abs(seq - expected) > SEQ_WINDOW:
            raise BadSeq(f"delta seq {seq} from {sender} is more than {SEQ_WINDOW} from the "
                         f"expected {expected}; ignored (the stream goes on as before)")

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
