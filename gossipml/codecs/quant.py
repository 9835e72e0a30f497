"""Quantizing codecs: uniform b-bit per block (``q8``, ``q4``, ``q2``) and 1-bit ``sign``.

Wire layout (each item its own buffer): codes packed densely (``ops.packing``), then per-block
float32 ``lo`` and ``scale`` (``q*``) or per-block float32 mean magnitude (``sign``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from gossipml.codecs._util import (dtype_name, expect_buffers, header, meta_int, to_buffer,
                                   view_buffer, work_dtype)
from gossipml.codecs.base import CodecError, Payload
from gossipml.codecs.registry import register_codec
from gossipml.ops.packing import pack_bits, packed_nbytes, unpack_bits
from gossipml.ops.quantize import block_dequantize, block_quantize

__all__ = ["QuantCodec", "SignCodec", "QUANT_BITS"]

#: Codec name -> bits per code.
QUANT_BITS = {"q8": 8, "q4": 4, "q2": 2}


class QuantCodec:
    """Asymmetric uniform b-bit quantization with a (lo, scale) pair per ``block`` values,
    ``scale = (max - min) / (2**b - 1)``. Bound per element: ``|x - x'| <= scale / 2`` (nearest)
    or ``< scale`` (stochastic, and then E[x'] = x), plus the rounding of the output dtype.
    Stochastic noise is sender-side only, so the receiver needs no seed."""

    def __init__(self, bits: int = 8, block: int = 512, stochastic: bool = False,
                 seed: int = 0) -> None:
        if bits not in QUANT_BITS.values():
            raise ValueError(f"bits must be one of {sorted(QUANT_BITS.values())}, got {bits}")
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.name = f"q{bits}"
        self.bits, self.block, self.stochastic, self.seed = bits, block, stochastic, seed

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Codes, lo and scale buffers; ``state`` counts calls for the stochastic noise stream."""
        if not tensor.is_floating_point():
            raise ValueError(f"codec {self.name!r} needs a floating tensor, got {tensor.dtype}")
        step = int(state or 0)
        gen = None
        if self.stochastic:
            gen = torch.Generator(device=tensor.device).manual_seed(_mix(self.seed, step))
        flat = tensor.detach().reshape(-1)
        codes, lo, scale = _quantize(flat, self.bits, self.block, gen)
        packed = pack_bits(codes, self.bits)
        buffers = (to_buffer(packed), to_buffer(lo), to_buffer(scale))
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape),
                       {"block": self.block}, buffers), step + 1

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """``lo + code * scale`` per block, cast to the payload's dtype."""
        dtype, shape, numel = header(payload)
        bits = QUANT_BITS.get(payload.codec, 0)
        if bits == 0 or not dtype.is_floating_point:
            raise CodecError(f"quant payload {payload.codec!r} / {dtype} is not a q8/q4/q2 float")
        block = _block(payload, numel)
        n_blocks = -(-numel // block)
        b_codes, b_lo, b_scale = expect_buffers(payload, 3)
        packed = view_buffer(b_codes, torch.uint8, packed_nbytes(numel, bits), "codes").to(device)
        lo = view_buffer(b_lo, torch.float32, n_blocks, "lo").to(device)
        scale = view_buffer(b_scale, torch.float32, n_blocks, "scale").to(device)
        codes = unpack_bits(packed, bits, numel)
        out = _dequantize(codes, lo, scale, block, dtype)
        return out.reshape(shape)

    def estimate_nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Exact wire bytes: packed codes + 8 bytes per block."""
        n = math.prod(shape)
        return packed_nbytes(n, self.bits) + 8 * -(-n // self.block)


def _quantize(flat: torch.Tensor, bits: int, block: int, gen: torch.Generator | None):
    """Fused cupy kernel when the tensor is on a GPU and cupy is there, else the torch path."""
    if flat.is_cuda and flat.dtype == torch.float32:
        from gossipml.ops.cupy_quant import cupy_block_quantize

        result = cupy_block_quantize(flat, bits, block, gen)
        if result is not None:
            return result
    return block_quantize(flat, bits, block, gen)


def _dequantize(codes, lo, scale, block: int, dtype: torch.dtype) -> torch.Tensor:
    if codes.is_cuda:
        from gossipml.ops.cupy_quant import cupy_block_dequantize

        result = cupy_block_dequantize(codes, lo, scale, block)
        if result is not None:
            return result.to(dtype)
    if dtype == torch.float64:
        return block_dequantize(codes, lo, scale, block).double()
    return block_dequantize(codes, lo, scale, block, dtype)


class SignCodec:
    """1-bit sign with a per-block scale ``s = ||x_b||_1 / |b|`` (scaled sign, Karimireddy et al.,
    EF-SignSGD, ICML 2019); ``block=0`` means one block. Bound per block (exact identity):
    ``||x - s sign(x)||^2 = ||x||^2 - ||x||_1^2 / |b| <= ||x||^2``. Zero maps to ``+s``."""

    name = "sign"

    def __init__(self, block: int = 0) -> None:
        if block < 0:
            raise ValueError(f"block must be >= 0 (0 = whole tensor), got {block}")
        self.block = block

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Packed sign bits and per-block float32 scales."""
        if not tensor.is_floating_point():
            raise ValueError(f"codec 'sign' needs a floating tensor, got {tensor.dtype}")
        flat = tensor.detach().reshape(-1)
        n = flat.numel()
        block = self.block or max(n, 1)
        x = flat.to(work_dtype(flat.dtype))
        scales = _block_mean_abs(x, block).float()
        bits = pack_bits((x >= 0).to(torch.uint8), 1)
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape),
                       {"block": block}, (to_buffer(bits), to_buffer(scales))), state

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """``(2 b - 1) * s`` per block."""
        dtype, shape, numel = header(payload)
        if not dtype.is_floating_point:
            raise CodecError(f"sign payload must carry a floating dtype, got {dtype}")
        block = _block(payload, numel)
        n_blocks = -(-numel // block)
        b_bits, b_scales = expect_buffers(payload, 2)
        packed = view_buffer(b_bits, torch.uint8, packed_nbytes(numel, 1), "sign bits").to(device)
        scales = view_buffer(b_scales, torch.float32, n_blocks, "sign scales").to(device)
        signs = unpack_bits(packed, 1, numel).to(work_dtype(dtype)).mul_(2).sub_(1)
        per_elem = scales.to(signs.dtype).repeat_interleave(block)[:numel]
        return signs.mul_(per_elem).to(dtype).reshape(shape)

    def estimate_nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Exact wire bytes: one bit per element + 4 bytes per block."""
        n = math.prod(shape)
        return packed_nbytes(n, 1) + 4 * -(-n // (self.block or max(n, 1)))


def _block(payload: Payload, numel: int) -> int:
    """meta['block'] (an int in [1, 2**40]), clamped to the tensor: a block longer than the
    tensor is one block (a sender's block=512 on a 10-element bias), and a hostile 2**40 must
    not size an allocation (it used to: ``repeat_interleave(block)``)."""
    return min(meta_int(payload.meta, "block", 1, 1 << 40), max(numel, 1))


def _block_mean_abs(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean |x| over consecutive blocks (last one may be short)."""
    n = x.numel()
    n_full = (n // block) * block
    parts = []
    if n_full:
        parts.append(x[:n_full].view(-1, block).abs().mean(dim=1))
    if n > n_full:
        parts.append(x[n_full:].abs().mean().reshape(1))
    return torch.cat(parts) if parts else x.new_empty(0)


def _mix(seed: int, step: int) -> int:
    """A 63-bit seed from (seed, step) (splitmix64 finalizer), for per-call noise streams."""
    z = (seed * 0x9E3779B97F4A7C15 + step + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


def _quant_maker(bits: int):
    """Builder of a ``q<bits>`` codec from spec parameters."""
    def make(params: Mapping[str, Any], values: Any = None) -> QuantCodec:
        return QuantCodec(bits, int(params.get("block", 512)), bool(params.get("stochastic", False)),
                          int(params.get("seed", 0)))

    return make


for _name, _bits in QUANT_BITS.items():
    register_codec(_name, _quant_maker(_bits), keys=("block", "stochastic", "seed"),
                   positional="block")
register_codec("sign", lambda params, values: SignCodec(int(params.get("block", 0))),
               keys=("block",), positional="block")
