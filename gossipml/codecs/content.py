"""What a peer sends: full parameters, or the change since the last exchange (CHOCO-SGD).

CHOCO-SGD (Koloskova et al., ICML 2019): the sender keeps a public reference ``x_hat`` and sends
``q = Q(x - x_hat)``, then ``x_hat += decode(q)``; each receiver keeps a copy of every
neighbour's ``x_hat_j`` and adds the same ``decode(q)``, so both copies stay bit-identical as long
as every message arrives (a lost message needs a full resend). The consensus step is then
``x_i += gamma * sum_j w_ij (x_hat_j - x_hat_i)`` (:func:`choco_step`).

The ``threshold`` codec is a significance filter of such a change (:func:`filters_changes`):
``x_hat`` is its last-sent copy, so it keeps none of its own (one would double-count against
``x_hat``), and a peer keeps one ``x_hat`` per receiver for it, whatever the content.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from gossipml.codecs.base import Codec, CodecError, Payload
from gossipml.codecs.combinators import BySize, ErrorFeedback
from gossipml.codecs.model import decode_model, encode_model
from gossipml.codecs.sparse import ThresholdCodec

__all__ = ["FullSender", "DeltaSender", "DeltaReceiver", "filters_changes", "choco_step"]

Model = dict[str, torch.Tensor]


class FullSender:
    """Send the parameters themselves through ``codec`` (content = "params")."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.states: dict[str, Any] = {}

    def encode(self, model: Mapping[str, torch.Tensor]) -> list[tuple[str, Payload]]:
        """Encode every tensor; per-tensor codec state is kept here."""
        items, self.states = encode_model(model, self.codec, self.states)
        return items


class DeltaSender:
    """Sender side of CHOCO-SGD: encodes ``x - x_hat`` and moves ``x_hat`` by what it sent.
    ``reference`` is the starting x_hat (zeros if None; all peers starting from one seeded model
    may pass it, receivers then pass the same)."""

    def __init__(self, codec: Codec, reference: Mapping[str, torch.Tensor] | None = None) -> None:
        self.codec = codec
        self.states: dict[str, Any] = {}
        self.reference: Model = {k: v.detach().clone() for k, v in (reference or {}).items()}

    def encode(self, model: Mapping[str, torch.Tensor],
               codec: Codec | None = None) -> list[tuple[str, Payload]]:
        """Payloads of ``model - x_hat``; updates ``x_hat += decode(payload)``. ``codec``: a
        stateless codec for this message only (a dense refresh); default the sender's own."""
        diffs: Model = {}
        for name, x in model.items():
            ref = self.reference.get(name)
            if ref is None or ref.shape != x.shape:
                ref = self.reference[name] = torch.zeros_like(x.detach())
            diffs[name] = x.detach() - ref
        if codec is None:
            codec = self.codec
            items, self.states = encode_model(diffs, codec, self.states)
        else:
            items, _ = encode_model(diffs, codec, None)
        for name, payload in items:
            step = codec.decode(payload, self.reference[name].device) \
                if not _is_raw(payload) else diffs[name]
            self.reference[name] += step.to(self.reference[name].dtype)
        return items


def _is_raw(payload: Payload) -> bool:
    return payload.codec == "identity"


class DeltaReceiver:
    """Receiver side: a copy of each neighbour's ``x_hat_j``, advanced by ``decode(payload)``."""

    def __init__(self, device: torch.device | str = "cpu",
                 reference: Mapping[str, torch.Tensor] | None = None) -> None:
        self.device = device
        self._start = {k: v.detach().to(device) for k, v in (reference or {}).items()}
        self.copies: dict[int, Model] = {}

    def apply(self, sender: int, items: Any) -> Model:
        """Add the decoded change to ``x_hat_sender`` and return it (do not modify it)."""
        changes = decode_model(items, self.device)
        copy = self.copies.setdefault(sender, {k: v.clone() for k, v in self._start.items()})
        for name, delta in changes.items():
            ref = copy.get(name)
            if ref is None:
                ref = copy[name] = torch.zeros_like(delta)
            if ref.shape != delta.shape or ref.dtype != delta.dtype:
                raise CodecError(f"tensor {name!r} from {sender}: {tuple(delta.shape)} "
                                 f"{delta.dtype} does not match the kept {tuple(ref.shape)} "
                                 f"{ref.dtype}")
            ref += delta
        return copy

    def reference(self, sender: int) -> Model | None:
        """The current ``x_hat`` of ``sender``, or None if nothing arrived yet."""
        return self.copies.get(sender)

    def forget(self, sender: int) -> None:
        """Drop a neighbour's copy (it left, or must resend in full)."""
        self.copies.pop(sender, None)


def filters_changes(codec: Codec) -> bool:
    """Whether ``codec`` sends significant changes (``threshold``, alone or as one side of
    ``+bysize``): its payloads mean something only added to the receiver's copy of the sender's
    model, so it needs a delta stream per receiver. ValueError for ``threshold`` under error
    feedback, which would feed the unsent changes back twice."""
    if isinstance(codec, ErrorFeedback):
        if filters_changes(codec.inner):
            raise ValueError("'threshold' with '+ef' double-counts the error: the receiver's copy "
                             "already carries every unsent change into the next round; drop '+ef'")
        return False
    if isinstance(codec, BySize):
        return filters_changes(codec.large) or filters_changes(codec.small)
    return isinstance(codec, ThresholdCodec)


def choco_step(own: Mapping[str, torch.Tensor], own_hat: Mapping[str, torch.Tensor],
               neighbour_hats: Mapping[int, Mapping[str, torch.Tensor]],
               weights: Mapping[int, float], gamma: float) -> Model:
    """CHOCO-SGD consensus: ``x_i + gamma * sum_j w_ij (x_hat_j - x_hat_i)`` (self excluded)."""
    out: Model = {}
    for name, x in own.items():
        acc = torch.zeros_like(x)
        for j, hats in neighbour_hats.items():
            acc.add_(hats[name].to(x.dtype) - own_hat[name].to(x.dtype), alpha=weights.get(j, 0.0))
        out[name] = x + gamma * acc
    return out
