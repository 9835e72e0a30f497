"""The codec contract: a codec turns one tensor into a :class:`Payload` and back.

A payload is a small map of scalars (``meta``) plus a tuple of raw buffers. Codecs never compute
byte offsets: :mod:`gossipml.wire` lays each buffer out as its own ZeroMQ frame. Randomness comes
in through ``state``/seeds; a seed the receiver needs travels in ``meta``. Codecs run on the
tensor's device (a GPU model is compressed before it crosses PCIe).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Union, runtime_checkable

import numpy as np
import torch

__all__ = ["Buffer", "Payload", "Codec", "CodecError", "buffer_nbytes"]

#: Anything exposing the buffer protocol: bytes, memoryview, numpy arrays, zmq frames' buffers.
Buffer = Union[bytes, bytearray, memoryview, np.ndarray]


class CodecError(ValueError):
    """A payload could not be decoded: its sizes or meta disagree with what the codec expects."""


def buffer_nbytes(buf: Buffer) -> int:
    """Number of bytes in a buffer-protocol object."""
    return memoryview(buf).nbytes


@dataclass(frozen=True)
class Payload:
    """One encoded tensor: which codec made it, the original dtype/shape, small meta, raw buffers."""

    codec: str
    dtype: str  # original tensor dtype, torch name without the prefix: "float32", "bfloat16", ...
    shape: tuple[int, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)  # msgpack-able scalars and short lists
    buffers: tuple[Buffer, ...] = ()

    @property
    def nbytes(self) -> int:
        """Exact bytes of raw buffers this payload puts on the wire (frame 0 excluded)."""
        return sum(buffer_nbytes(b) for b in self.buffers)


@runtime_checkable
class Codec(Protocol):
    """Encode a tensor to a payload and back. ``state`` is the codec's explicit per-stream state
    (error-feedback residual, warm start, RNG counter); ``None`` on the first call."""

    name: str

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Return the payload for ``tensor`` and the state for the next call on this stream."""
        ...

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rebuild the tensor (original dtype and shape) on ``device``; raise CodecError if the
        payload's buffers disagree with its meta."""
        ...
