"""Loader for the optional C block-quantization kernel (``gossipml.ops._qnative``).

The extension is built at ``pip install`` time when a C compiler is there (``setup.py``,
``optional=True``). It reproduces the torch path of :mod:`gossipml.ops.quantize` bit-for-bit;
the one machine-dependent step is whether torch's ``addcmul`` rounds ``a + b * c`` once (FMA,
e.g. AVX2/AVX-512 builds) or twice, so :func:`fused_modes` probes torch once with operands whose
two answers differ and the kernel follows suit. A probe that finds neither answer disables the
native path. ``GOSSIPML_NO_NATIVE=1`` (read at every call) forces the torch path.
"""

from __future__ import annotations

import os
import struct
from types import ModuleType

import torch

__all__ = ["native_available", "native_module", "fused_modes", "native_quantize",
           "native_dequantize", "NO_NATIVE_ENV"]

#: Environment variable: ``1`` forces the pure torch path (checked at every call).
NO_NATIVE_ENV = "GOSSIPML_NO_NATIVE"

_cache: dict[str, object] = {}


def native_module() -> ModuleType | None:
    """The compiled ``_qnative`` module, or None when it was not built (import tried once)."""
    if "module" not in _cache:
        try:
            from gossipml.ops import _qnative  # type: ignore[attr-defined]
        except ImportError:
            _qnative = None
        _cache["module"] = _qnative
    return _cache["module"]  # type: ignore[return-value]


def _f32(value: float) -> float:
    """``value`` rounded to float32."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _probe(self_val: float, t1_val: float, value: float, rows: int, width: int) -> bool | None:
    """Does torch's ``addcmul(self, t1, t2, value)`` round once (True) or twice (False), with the
    torch path's broadcast shapes (``self``/``t2`` one column)? The operands make
    ``t1 * t2`` need 26 significant bits and ``self`` cancel its leading part, so the answers
    differ; anything else (None) means an unknown kernel."""
    t2_val = 1.0 + 2.0**-13
    out = torch.addcmul(torch.full((rows, 1), self_val), torch.full((rows, width), t1_val),
                        torch.full((rows, 1), t2_val), value=value)
    exact = value * t1_val * t2_val  # exact in float64
    once, twice = _f32(self_val + exact), _f32(self_val + _f32(exact))
    if bool((out == once).all()):
        return True
    if bool((out == twice).all()):
        return False
    return None


def fused_modes() -> tuple[bool | None, bool | None]:
    """``(encode, decode)``: whether the torch path's addcmul steps round once (None: unknown,
    native off for that direction). Encode has ``0.5 - lo * inv`` (one column) and
    ``b + x * inv``; decode ``lo + code * scale`` has the second form. Probed once, full rows
    and a short one (vector and tail loops)."""
    if "fused" not in _cache:
        bias = {_probe(0.5, 0.5 * (1.0 + 2.0**-12), -1.0, r, 1) for r in (1, 20)}
        axpy = {_probe(-1.0, 1.0 + 2.0**-12, 1.0, r, w) for r, w in ((3, 512), (1, 7))}
        dec = axpy.pop() if len(axpy) == 1 else None
        enc = dec if bias == {dec} else None
        _cache["fused"] = (enc, dec)
    return _cache["fused"]  # type: ignore[return-value]


def native_available(direction: str = "encode") -> bool:
    """True when the kernel is built, not disabled by ``GOSSIPML_NO_NATIVE=1``, and its rounding
    mode for ``direction`` ('encode' or 'decode') matches this torch build."""
    if os.environ.get(NO_NATIVE_ENV, "") not in ("", "0") or native_module() is None:
        return False
    enc, dec = fused_modes()
    return (enc if direction == "encode" else dec) is not None


def native_quantize(x: torch.Tensor, bits: int, block: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic :func:`~gossipml.ops.quantize.block_quantize` of a contiguous CPU float32
    1-D tensor by the C kernel: ``(codes uint8, lo float32, scale float32)``."""
    n = x.numel()
    n_blocks = -(-n // block)
    codes = torch.empty(n, dtype=torch.uint8)
    lo = torch.empty(n_blocks, dtype=torch.float32)
    scale = torch.empty(n_blocks, dtype=torch.float32)
    if n:
        native_module().quantize(x.data_ptr(), n, bits, block, codes.data_ptr(),  # type: ignore
                                 lo.data_ptr(), scale.data_ptr(), bool(fused_modes()[0]))
    return codes, lo, scale


def native_dequantize(codes: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor,
                      block: int) -> torch.Tensor:
    """``lo[b] + codes * scale[b]`` as float32 by the C kernel; all inputs contiguous on CPU,
    ``lo``/``scale`` float32 with at least one entry per block."""
    n = codes.numel()
    out = torch.empty(n, dtype=torch.float32)
    if n:
        native_module().dequantize(codes.data_ptr(), n, block, lo.data_ptr(),  # type: ignore
                                   scale.data_ptr(), out.data_ptr(), bool(fused_modes()[1]))
    return out
