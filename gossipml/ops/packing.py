"""Dense packing of sub-byte codes: eight 1-bit, four 2-bit or two 4-bit codes per byte.

Code ``i`` of a byte sits at bit offset ``bits * (i % per_byte)`` (little-endian within the byte).
"""

from __future__ import annotations

import torch

__all__ = ["pack_bits", "unpack_bits", "packed_nbytes"]

_ALLOWED = (1, 2, 4, 8)


def _check_bits(bits: int) -> int:
    if bits not in _ALLOWED:
        raise ValueError(f"bits must be one of {_ALLOWED}, got {bits}")
    return 8 // bits


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take once packed: ceil(numel * bits / 8)."""
    per_byte = _check_bits(bits)
    return -(-numel // per_byte)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a 1-D uint8 tensor of codes < 2**bits into ceil(n * bits / 8) bytes."""
    per_byte = _check_bits(bits)
    if per_byte == 1:
        return codes
    n = codes.numel()
    pad = (-n) % per_byte
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    cols = codes.view(-1, per_byte)
    out = cols[:, 0].clone()
    for i in range(1, per_byte):
        out.bitwise_or_(cols[:, i] << (bits * i))
    return out


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes as a 1-D uint8 tensor."""
    per_byte = _check_bits(bits)
    if per_byte == 1:
        return packed[:numel]
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    mask = (1 << bits) - 1
    codes = (packed.unsqueeze(1) >> shifts).bitwise_and_(mask)
    return codes.view(-1)[:numel]
