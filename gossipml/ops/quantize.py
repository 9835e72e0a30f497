"""Uniform b-bit block quantization (asymmetric min/max per block): cache-blocked torch, optional C.

Each block of ``block`` consecutive values ``x`` gets ``lo = min(x)`` and
``scale = (max(x) - lo) / (2**bits - 1)``; a value becomes the code
``c = floor((x - lo) / scale + u)`` with ``u = 1/2`` (round to nearest) or ``u ~ U[0, 1)``
(stochastic rounding, unbiased: E[lo + c * scale] = x; Alistarh et al., QSGD, NeurIPS 2017), and
decodes to ``lo + c * scale``. Deterministic error per element is at most ``scale / 2``;
stochastic at most ``scale`` (both plus ``(2**bits - 1) * 2**-20 * scale`` from the ``_SHRINK``
guard below, and float32 rounding of the values themselves).

Fast path: when the optional C kernel ``gossipml.ops._qnative`` was built (``setup.py``) and the
call is deterministic (``generator=None``) on contiguous CPU float32 data, one fused pass per
block replaces the torch passes with bit-identical results (:mod:`gossipml.ops.native`).
``GOSSIPML_NO_NATIVE=1`` in the environment (read at each call) forces the torch path below,
which stays the fallback and the stochastic path. Inputs containing inf/NaN give the same
codes on both paths on x86-64 (a NaN block has lo = scale = NaN and codes 0). ``x / scale + u``
is formed as ``x * inv + (u - lo * inv)`` (fast, one addcmul) and clamped to ``[0, 2**bits - 1]``:
when ``|lo|`` dwarfs ``max - lo`` (a range of a few float32 ulps) cancellation could else carry
it out of range and the codes would wrap.
"""

from __future__ import annotations

import torch

from gossipml.ops.native import (native_available, native_dequantize,
                                 native_quantize)

__all__ = ["block_quantize", "block_dequantize", "CHUNK_NUMEL", "native_available"]

#: Elements processed per inner step: the float workspace stays in cache, so no tensor-sized
#: temporary is faulted in (figures: docs/results/bench_codecs.md).
CHUNK_NUMEL = 1 << 18

# Shrinks 1/scale a little so the top value lands strictly below 2**bits - 0.5 after rounding
# error: a float 2**bits cast to uint8 would wrap to 0.
_SHRINK = 1.0 - 2.0**-20


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
    if generator is None and _native_ok(x) and native_available("encode"):
        return native_quantize(x, bits, block)
    codes = torch.empty(n, dtype=torch.uint8, device=x.device)
    n_full = (n // block) * block
    n_blocks = -(-n // block)
    lo = torch.empty(n_blocks, dtype=torch.float32, device=x.device)
    scale = torch.empty(n_blocks, dtype=torch.float32, device=x.device)
    if n_full:
        _quantize_rows(x[:n_full].view(-1, block), lo[: n_full // block],
                       scale[: n_full // block], levels, codes[:n_full], generator)
    if n > n_full:
        _quantize_rows(x[n_full:].view(1, -1), lo[-1:], scale[-1:], levels, codes[n_full:],
                       generator)
    return codes, lo, scale


def _native_ok(t: torch.Tensor) -> bool:
    """The C kernel takes contiguous CPU tensors; float ones must be float32."""
    return (t.device.type == "cpu" and t.is_contiguous()
            and (t.dtype == torch.float32 or not t.is_floating_point()))


def _quantize_rows(
    x2d: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, levels: int,
    codes: torch.Tensor, generator: torch.Generator | None,
) -> None:
    """Fill per-row ``lo``/``scale`` and write the codes of ``x2d`` rows into ``codes`` (flat
    uint8), chunk by chunk: stats, affine map and cast all hit the chunk while it is in cache.
    amin/amax(dim) are used because they beat aminmax(dim) on CPU
    (docs/results/bench_codecs.md)."""
    width = x2d.shape[1]
    rows_per_chunk = max(1, CHUNK_NUMEL // width)
    rows0 = min(rows_per_chunk, x2d.shape[0])
    work = torch.empty(rows0, width, device=x2d.device)
    inv = torch.empty(rows0, 1, device=x2d.device)
    bias = torch.empty(rows0, 1, device=x2d.device)
    half = torch.tensor(0.5 if generator is None else 0.0, device=x2d.device)
    for r0 in range(0, x2d.shape[0], rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, x2d.shape[0])
        m = r1 - r0
        xs, lo_c, sc_c, w, inv_c, b = x2d[r0:r1], lo[r0:r1], scale[r0:r1], work[:m], inv[:m], bias[:m]
        torch.amin(xs, 1, out=lo_c)
        torch.amax(xs, 1, out=sc_c)
        sc_c.sub_(lo_c).div_(levels)
        torch.reciprocal(sc_c, out=inv_c[:, 0])
        inv_c.nan_to_num_(0.0, 0.0, 0.0).mul_(_SHRINK)  # constant block: scale 0 -> code 0
        torch.addcmul(half, lo_c.unsqueeze(1), inv_c, value=-1.0, out=b)
        torch.addcmul(b, xs, inv_c, out=w)
        if generator is not None:
            w.add_(torch.rand(w.shape, generator=generator, device=w.device))
        w.clamp_(0, levels)  # |lo| >> max - lo: cancellation can push w past 0 or levels + 1
        codes[r0 * width : r1 * width].view(m, width).copy_(w)


def block_dequantize(
    codes: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, block: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Inverse of :func:`block_quantize`: ``lo[b] + codes * scale[b]`` as a 1-D ``dtype`` tensor."""
    n = codes.numel()
    if (codes.dtype == torch.uint8 and lo.dtype == scale.dtype == torch.float32 and block >= 1
            and _native_ok(codes) and _native_ok(lo) and _native_ok(scale)
            and min(lo.numel(), scale.numel()) >= -(-n // block) and native_available("decode")):
        out = native_dequantize(codes, lo, scale, block)
        return out if dtype == torch.float32 else out.to(dtype)
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
