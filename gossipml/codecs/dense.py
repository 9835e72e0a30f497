"""Dense codecs: ``identity`` (raw bytes, any dtype), ``fp16`` and ``bf16`` (a cast)."""

from __future__ import annotations

from typing import Any

import torch

from gossipml.codecs._util import dtype_name, expect_buffers, header, to_buffer, view_buffer
from gossipml.codecs.base import CodecError, Payload
from gossipml.codecs.registry import register_codec

__all__ = ["IdentityCodec", "CastCodec", "fp16_codec", "bf16_codec"]


class IdentityCodec:
    """The tensor's raw bytes, any dtype; exact (error 0). Zero-copy for contiguous CPU tensors,
    so the caller must not modify the tensor until the payload has been sent."""

    name = "identity"

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Payload with one buffer: the tensor's bytes in its own dtype."""
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape), {},
                       (to_buffer(tensor),)), state

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """A tensor of the payload's dtype and shape that nobody else writes to: a view of the
        buffer when the buffer is writable and ours (a received zmq frame, a copy out of shared
        memory) and already on ``device``; a copy otherwise (read-only or borrowed memory)."""
        dtype, shape, numel = header(payload)
        (buf,) = expect_buffers(payload, 1)
        flat = view_buffer(buf, dtype, numel, "identity")
        owned = numel > 0 and not memoryview(buf).readonly
        if owned and flat.device == torch.device(device):
            return flat.reshape(shape)
        return flat.to(device=device, copy=True).reshape(shape)

    def estimate_nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Exact wire bytes: numel x itemsize."""
        return _numel(shape) * torch.empty(0, dtype=dtype).element_size()


class CastCodec:
    """A cast to a 16-bit float. fp16: relative error <= 2**-11 for |x| in [6.1e-5, 65504]
    (absolute <= 2**-25 below; overflow to inf above); bf16: relative error <= 2**-8, full
    float32 range."""

    def __init__(self, name: str, wire_dtype: torch.dtype) -> None:
        self.name = name
        self.wire_dtype = wire_dtype

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Payload with one buffer: the tensor cast to the wire dtype (on its device)."""
        if not tensor.is_floating_point():
            raise ValueError(f"codec {self.name!r} needs a floating tensor, got {tensor.dtype}; "
                             "use 'identity' for integer tensors")
        wire = tensor.detach().to(self.wire_dtype)
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape), {},
                       (to_buffer(wire),)), state

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """Cast back to the payload's dtype on ``device``."""
        dtype, shape, numel = header(payload)
        if not dtype.is_floating_point:
            raise CodecError(f"codec {self.name!r} carries floating tensors, payload says {dtype}")
        (buf,) = expect_buffers(payload, 1)
        flat = view_buffer(buf, self.wire_dtype, numel, self.name).to(device)
        return flat.to(dtype, copy=True).reshape(shape)

    def estimate_nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Exact wire bytes: 2 x numel."""
        return 2 * _numel(shape)


def fp16_codec() -> CastCodec:
    """The ``fp16`` codec."""
    return CastCodec("fp16", torch.float16)


def bf16_codec() -> CastCodec:
    """The ``bf16`` codec."""
    return CastCodec("bf16", torch.bfloat16)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


register_codec("identity", lambda params, values: IdentityCodec())
register_codec("fp16", lambda params, values: fp16_codec())
register_codec("bf16", lambda params, values: bf16_codec())
