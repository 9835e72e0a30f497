"""Uniform b-bit block quantization (asymmetric min/max per block), pure torch, cache-blocked.

Each block of ``block`` consecutive values ``x`` gets ``lo = min(x)`` and
``scale = (max(x) - lo) / (2**bits - 1)``; a value becomes the code
``c = floor((x - lo) / scale + u)`` with ``u = 1/2`` (round to nearest) or ``u ~ U[0, 1)``
(stochastic rounding, unbiased: E[lo + c * scale] = x; Alistarh et al., QSGD, NeurIPS 2017), and
decodes to ``lo + c * scale``. Deterministic error per element is at most ``scale / 2``;
stochastic at most ``scale``.
"""

from __future__ import annotations

import torch

__all__ = ["block_quantize", "block_dequantize", "CHUNK_NUMEL"]

#: Elements processed per inner step: the float workspace stays in cache (measured: ~2.5x faster
#: than one whole-tensor pass on a 64 MiB tensor, because no 64 MiB temporary is faulted in).
CHUNK_NUMEL = 1 << 18

# Shrinks 1/scale a little so the top value lands strictly below 2**bits - 0.5 after rounding
# error: a float 2**bits cast to uint8 would wrap to 0.
_SHRINK = 1.0 - 2.0**-20


def _block_stats(x2d: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (lo, scale) of a 2-D float tensor; amax/amin beat aminmax(dim) ~4x on CPU."""
    lo = x2d.amin(dim=1)
    scale = x2d.amax(dim=1).sub_(lo).div_(levels)
    return lo, scale


def block_quantize(
    flat: torch.Tensor, bits: int, block: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize a 1-D float tensor to uint8 codes in [0, 2**bits) plus per-block (lo, scale).

    ``generator`` given: stochastic rounding drawn from it (on ``flat``'s device); else nearest.
    The last block may be short. Returns ``(codes, lo, scale)`` with ``lo``/``scale`` float32.
    """
    if flat.dim() != 1:
        raise ValueError(f"block_quantize needs a 1-D tensor, got shape {tuple(flat.shape)}")
    if not 1 <= bits <= 8 or block < 1:
        raise ValueError(f"bits must be in 1..8 and block >= 1, got bits={bits} block={block}")
    n = flat.numel()
    levels = (1 << bits) - 1
    x = flat if flat.dtype == torch.float32 else flat.float()
    codes = torch.empty(n, dtype=torch.uint8, device=x.device)
    n_full = (n // block) * block
    los, scales = [], []
    if n_full:
        lo, scale = _block_stats(x[:n_full].view(-1, block), levels)
        _quantize_rows(x[:n_full].view(-1, block), lo, scale, levels, codes[:n_full], generator)
        los.append(lo)
        scales.append(scale)
    if n > n_full:
        tail = x[n_full:].view(1, -1)
        lo, scale = _block_stats(tail, levels)
        _quantize_rows(tail, lo, scale, levels, codes[n_full:], generator)
        los.append(lo)
        scales.append(scale)
    if not los:
        empty = torch.empty(0, dtype=torch.float32, device=x.device)
        return codes, empty, empty
    return codes, torch.cat(los), torch.cat(scales)


def _quantize_rows(
    x2d: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, levels: int,
    codes: torch.Tensor, generator: torch.Generator | None,
) -> None:
    """Write codes of ``x2d`` rows into ``codes`` (flat uint8), chunk by chunk."""
    inv = torch.where(scale > 0, scale.reciprocal(), torch.zeros_like(scale)).mul_(_SHRINK)
    inv = inv.unsqueeze_(1)
    half = 0.5 if generator is None else 0.0
    bias = torch.addcmul(torch.full_like(inv, half), lo.unsqueeze(1), inv, value=-1.0)
    rows_per_chunk = max(1, CHUNK_NUMEL // x2d.shape[1])
    width = x2d.shape[1]
    work = torch.empty(min(rows_per_chunk, x2d.shape[0]) * width, device=x2d.device)
    for r0 in range(0, x2d.shape[0], rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, x2d.shape[0])
        w = work[: (r1 - r0) * width].view(r1 - r0, width)
        torch.addcmul(bias[r0:r1], x2d[r0:r1], inv[r0:r1], out=w)
        if generator is not None:
            w.add_(torch.rand(w.shape, generator=generator, device=w.device)).clamp_(0, levels)
        codes[r0 * width : r1 * width].view(r1 - r0, width).copy_(w)


def block_dequantize(
    codes: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, block: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Inverse of :func:`block_quantize`: ``lo[b] + codes * scale[b]`` as a 1-D ``dtype`` tensor."""
    n = codes.numel()
    out = torch.empty(n, dtype=torch.float32, device=codes.device)
    n_full = (n // block) * block
    nb_full = n_full // block
    if n_full:
        _dequantize_rows(codes[:n_full].view(-1, block), lo[:nb_full], scale[:nb_full],
                         out[:n_full].view(-1, block))
    if n > n_full:
        _dequantize_rows(codes[n_full:].view(1, -1), lo[nb_full:], scale[nb_full:],
                         out[n_full:].view(1, -1))
    return out if dtype == torch.float32 else out.to(dtype)


def _dequantize_rows(codes2d: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor,
                     out2d: torch.Tensor) -> None:
    """out = lo + codes * scale per row, in place chunk by chunk (codes copy then one addcmul)."""
    width = codes2d.shape[1]
    rows_per_chunk = max(1, CHUNK_NUMEL // width)
    lo2, scale2 = lo.unsqueeze(1), scale.unsqueeze(1)
    for r0 in range(0, codes2d.shape[0], rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, codes2d.shape[0])
        o = out2d[r0:r1]
        o.copy_(codes2d[r0:r1])
        torch.addcmul(lo2[r0:r1], o, scale2[r0:r1], out=o)
