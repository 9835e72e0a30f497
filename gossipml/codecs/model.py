"""Whole-model helpers: encode every tensor of a model with one codec and per-tensor state."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from gossipml.codecs.base import Codec, CodecError, Payload
from gossipml.codecs.registry import decode_payload

__all__ = ["encode_model", "decode_model", "check_expected", "model_nbytes"]


def encode_model(
    model: Mapping[str, torch.Tensor], codec: Codec, states: Mapping[str, Any] | None
) -> tuple[list[tuple[str, Payload]], dict[str, Any]]:
    """Encode each tensor (non-floating ones raw); returns the items and the per-name states."""
    from gossipml.codecs.dense import IdentityCodec

    raw = IdentityCodec()
    states = dict(states or {})
    items: list[tuple[str, Payload]] = []
    for name, tensor in model.items():
        use = codec if tensor.is_floating_point() else raw
        payload, states[name] = use.encode(tensor, states.get(name))
        items.append((name, payload))
    return items, states


def decode_model(
    items: Any, device: torch.device | str = "cpu",
    expected: Mapping[str, tuple[str, Sequence[int]]] | None = None,
) -> dict[str, torch.Tensor]:
    """Decode ``(name, payload)`` pairs by each payload's codec; CodecError on any bad one.

    ``expected`` maps name -> (dtype name, shape), e.g. from the receiver's own model: a payload
    whose name, dtype or shape differs is refused *before* its codec runs, so no codec ever
    allocates for a shape the sender chose (each codec bounds its meta by the shape it gets)."""
    out: dict[str, torch.Tensor] = {}
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str):
            raise CodecError(f"model items must be (name, Payload) pairs, got {item!r:.80}")
        name, payload = item
        if name in out:
            raise CodecError(f"tensor {name!r} appears twice in one model")
        if expected is not None:
            check_expected(name, payload, expected)
        out[name] = decode_payload(payload, device)
    return out


def check_expected(name: str, payload: Any,
                   expected: Mapping[str, tuple[str, Sequence[int]]]) -> None:
    """CodecError unless ``payload`` carries ``expected[name]``'s dtype and shape."""
    if name not in expected:
        raise CodecError(f"tensor {name!r:.80} is not in this model")
    dtype, shape = expected[name]
    got = (getattr(payload, "dtype", None), getattr(payload, "shape", None))
    if got[0] != dtype or not isinstance(got[1], (tuple, list)) or tuple(got[1]) != tuple(shape):
        raise CodecError(f"tensor {name!r:.80} is {got[0]!r:.20} {got[1]!r:.60}, this model has "
                         f"{dtype} {tuple(shape)}")


def model_nbytes(items: Any) -> int:
    """Total payload bytes of ``(name, payload)`` pairs (frame 0 excluded)."""
    return sum(p.nbytes for _, p in items)
