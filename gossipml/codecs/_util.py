"""Helpers shared by the codecs: dtype names, buffer <-> tensor views, meta checks."""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import torch

from gossipml.codecs.base import Buffer, CodecError, Payload, buffer_nbytes

__all__ = [
    "DTYPES", "MAX_NUMEL", "dtype_name", "parse_dtype", "check_shape", "to_buffer", "view_buffer",
    "meta_int", "meta_float", "work_dtype", "expect_buffers", "header",
]

#: Tensor dtypes a payload may name, by their torch name without the prefix.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
#: Refuse to allocate more elements than this for one decoded tensor (a corrupt shape).
MAX_NUMEL = 1 << 33


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: Any) -> torch.dtype:
    """The torch dtype for a payload dtype name; CodecError for anything else."""
    if not isinstance(name, str) or name not in DTYPES:
        raise CodecError(f"unknown dtype {name!r}; allowed: {sorted(DTYPES)}")
    return DTYPES[name]


def check_shape(shape: Any) -> int:
    """Validate a payload shape (tuple of ints >= 0) and return its element count."""
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise CodecError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    numel = math.prod(shape)
    if numel > MAX_NUMEL:
        raise CodecError(f"shape {tuple(shape)} has {numel} elements, more than {MAX_NUMEL}")
    return numel


def header(payload: Payload) -> tuple[torch.dtype, tuple[int, ...], int]:
    """(dtype, shape, numel) of a payload, validated."""
    numel = check_shape(payload.shape)
    return parse_dtype(payload.dtype), tuple(payload.shape), numel


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype to compute in: float64 stays, everything else goes through float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def to_buffer(tensor: torch.Tensor) -> Buffer:
    """Raw bytes of a tensor as a numpy array (no copy for a contiguous CPU tensor)."""
    flat = tensor.detach().reshape(-1)
    if flat.device.type != "cpu":
        flat = flat.cpu()
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat.contiguous().view(torch.uint8).numpy()


def view_buffer(buf: Buffer, dtype: torch.dtype, count: int, what: str) -> torch.Tensor:
    """A read-only 1-D tensor of ``count`` ``dtype`` items over ``buf``; CodecError on size."""
    try:
        nbytes = buffer_nbytes(buf)
    except TypeError as exc:
        raise CodecError(f"{what}: buffer is not a bytes-like object ({type(buf).__name__})") from exc
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if nbytes != count * itemsize:
        raise CodecError(
            f"{what}: buffer has {nbytes} bytes, expected {count} x {itemsize} = {count * itemsize}"
        )
    if count == 0:
        return torch.empty(0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read-only buffers (zmq frames): we never write to them
        raw = torch.frombuffer(memoryview(buf).cast("B"), dtype=torch.uint8)
    return raw.view(torch.bool if dtype == torch.bool else dtype) if dtype != torch.uint8 else raw


def expect_buffers(payload: Payload, count: int) -> tuple[Buffer, ...]:
    """The payload's buffers, checked to be exactly ``count``."""
    if not isinstance(payload.buffers, (tuple, list)) or len(payload.buffers) != count:
        got = len(payload.buffers) if isinstance(payload.buffers, (tuple, list)) else "?"
        raise CodecError(f"codec {payload.codec!r} expects {count} buffer(s), got {got}")
    return tuple(payload.buffers)


def meta_int(meta: Mapping[str, Any], key: str, lo: int = 0, hi: int = 1 << 62) -> int:
    """An int field of meta within [lo, hi]; CodecError if missing or out of range."""
    value = meta.get(key) if isinstance(meta, Mapping) else None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise CodecError(f"meta[{key!r}] must be an int in [{lo}, {hi}], got {value!r}")
    return value


def meta_float(meta: Mapping[str, Any], key: str) -> float:
    """A finite float field of meta; CodecError if missing or not finite."""
    value = meta.get(key) if isinstance(meta, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CodecError(f"meta[{key!r}] must be a finite number, got {value!r}")
    return float(value)
