"""The explicit registry of decoders, looked up by ``Payload.codec``."""

from __future__ import annotations

import functools
from typing import Callable

import torch

from gossipml.codecs.base import Codec, CodecError, Payload

__all__ = ["Registry", "default_registry", "decode_payload"]


class Registry:
    """Codec name -> codec instance able to decode that name's payloads; duplicates raise."""

    def __init__(self) -> None:
        self._codecs: dict[str, Codec] = {}

    def add(self, name: str, codec: Codec) -> None:
        """Register ``codec`` under ``name``; ValueError if the name is taken."""
        if name in self._codecs:
            raise ValueError(f"codec name {name!r} is already registered; pick another name")
        self._codecs[name] = codec

    def get(self, name: object) -> Codec:
        """The codec for ``name``; CodecError naming the known ones otherwise."""
        if not isinstance(name, str) or name not in self._codecs:
            raise CodecError(f"unknown codec {name!r}; known: {sorted(self._codecs)}")
        return self._codecs[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._codecs)


@functools.cache
def default_registry() -> Registry:
    """The registry of every built-in codec (built on first use, not at import)."""
    from gossipml.codecs.dense import IdentityCodec, bf16_codec, fp16_codec
    from gossipml.codecs.lowrank import LowRankCodec
    from gossipml.codecs.quant import QuantCodec, SignCodec
    from gossipml.codecs.sparse import RandKCodec, ThresholdCodec, TopKCodec

    reg = Registry()
    makers: list[tuple[str, Callable[[], Codec]]] = [
        ("identity", IdentityCodec), ("fp16", fp16_codec), ("bf16", bf16_codec),
        ("q8", lambda: QuantCodec(8)), ("q4", lambda: QuantCodec(4)),
        ("q2", lambda: QuantCodec(2)), ("sign", SignCodec), ("topk", TopKCodec),
        ("randk", RandKCodec), ("threshold", ThresholdCodec), ("lowrank", LowRankCodec),
    ]
    for name, make in makers:
        reg.add(name, make())
    return reg


def decode_payload(payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
    """Decode any built-in payload on ``device``; every malformed payload raises CodecError."""
    if not isinstance(payload, Payload):
        raise CodecError(f"expected a Payload, got {type(payload).__name__}")
    codec = default_registry().get(payload.codec)
    try:
        return codec.decode(payload, device)
    except CodecError:
        raise
    except (ValueError, TypeError, RuntimeError, IndexError, KeyError, OverflowError) as exc:
        # A check we missed: still a bad payload from the peer's point of view, not a crash.
        raise CodecError(f"codec {payload.codec!r} could not decode: {exc}") from exc
