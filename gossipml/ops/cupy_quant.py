"""Optional fused cupy kernels for block quantize/dequantize on a CUDA tensor.

Used automatically when cupy imports and the tensor is on a GPU; each function returns ``None``
when it cannot run (no cupy, stochastic rounding, wrong dtype), and the caller falls back to the
torch path of :mod:`gossipml.ops.quantize`, which it equals within float rounding. cupy is
imported lazily inside the functions, never at import time.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = ["cupy_block_quantize", "cupy_block_dequantize", "have_cupy"]

_QUANT_SRC = r"""
extern "C" __global__ void q(const float* x, const float* lo, const float* inv,
                             unsigned char* out, long long n, long long block, float top) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  long long b = i / block;
  float c = (x[i] - lo[b]) * inv[b] + 0.5f;
  c = fminf(fmaxf(c, 0.0f), top);
  out[i] = (unsigned char)c;
}
extern "C" __global__ void dq(const unsigned char* c, const float* lo, const float* scale,
                              float* out, long long n, long long block) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  long long b = i / block;
  out[i] = fmaf((float)c[i], scale[b], lo[b]);
}
"""


@functools.cache
def _kernels() -> Any:
    """(quantize, dequantize) RawKernels, or None when cupy or a GPU is missing."""
    try:
        import cupy  # noqa: PLC0415 - optional, lazily imported

        module = cupy.RawModule(code=_QUANT_SRC)
        return cupy, module.get_function("q"), module.get_function("dq")
    except Exception:  # ImportError, no driver, compile failure: use the torch path
        return None


def have_cupy() -> bool:
    """True when the fused kernels can run here."""
    return torch.cuda.is_available() and _kernels() is not None


def _launch(fn: Any, n: int, args: tuple) -> None:
    threads = 256
    fn(((n + threads - 1) // threads,), (threads,), args)


def cupy_block_quantize(flat: torch.Tensor, bits: int, block: int,
                        generator: torch.Generator | None) -> Any:
    """(codes, lo, scale) as :func:`gossipml.ops.quantize.block_quantize`, or None."""
    kernels = _kernels()
    if kernels is None or generator is not None or flat.dtype != torch.float32 or not flat.is_cuda:
        return None
    cupy, qfn, _ = kernels
    n = flat.numel()
    levels = (1 << bits) - 1
    x = flat.contiguous()
    pad = (-n) % block
    xp = torch.nn.functional.pad(x, (0, pad), value=float(x[-1])) if pad and n else x
    rows = xp.view(-1, block) if n else xp.view(0, block)
    lo = rows.amin(dim=1)
    scale = rows.amax(dim=1).sub_(lo).div_(levels)
    inv = torch.where(scale > 0, scale.reciprocal(), torch.zeros_like(scale))
    codes = torch.empty(n, dtype=torch.uint8, device=flat.device)
    if n:
        with cupy.cuda.ExternalStream(torch.cuda.current_stream(flat.device).cuda_stream):
            _launch(qfn, n, (cupy.from_dlpack(x), cupy.from_dlpack(lo), cupy.from_dlpack(inv),
                             cupy.from_dlpack(codes), cupy.int64(n), cupy.int64(block),
                             cupy.float32(levels)))
    return codes, lo, scale


def cupy_block_dequantize(codes: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor,
                          block: int) -> Any:
    """float32 ``lo[b] + codes * scale[b]``, or None."""
    kernels = _kernels()
    if kernels is None or not codes.is_cuda:
        return None
    cupy, _, dqfn = kernels
    n = codes.numel()
    out = torch.empty(n, dtype=torch.float32, device=codes.device)
    if n:
        c, lo_, sc = codes.contiguous(), lo.float().contiguous(), scale.float().contiguous()
        with cupy.cuda.ExternalStream(torch.cuda.current_stream(codes.device).cuda_stream):
            _launch(dqfn, n, (cupy.from_dlpack(c), cupy.from_dlpack(lo_), cupy.from_dlpack(sc),
                              cupy.from_dlpack(out), cupy.int64(n), cupy.int64(block)))
    return out
