"""``lowrank``: PowerSGD-style rank-r approximation of matrix-shaped tensors.

A tensor with ndim >= 2 is viewed as ``(shape[0], rest)`` (conv weights: out x in*kh*kw); one
warm-started power-iteration step gives ``P`` (orthonormal columns) and ``Q = M^T P``, both sent.
Tensors that would not shrink (vectors, tiny or thin matrices) go through the fallback codec and
their payload carries that codec's name.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from gossipml.codecs._util import (dtype_name, expect_buffers, header, meta_int, to_buffer,
                                   view_buffer, work_dtype)
from gossipml.codecs.base import Codec, CodecError, Payload
from gossipml.codecs.registry import codec_entry, register_codec
from gossipml.ops.lowrank import as_matrix, initial_q, power_step

__all__ = ["LowRankCodec"]


class LowRankCodec:
    """Rank-``rank`` PowerSGD compression (Vogels et al., NeurIPS 2019). Bound:
    ``||M - P Q^T||_F <= ||M||_F`` (a projection of M); exact when rank(M) <= rank and the
    warm start has converged. State: the warm-start Q and the fallback's state."""

    name = "lowrank"

    def __init__(self, rank: int = 2, fallback: Codec | None = None, seed: int = 0,
                 min_gain: float = 2.0) -> None:
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if fallback is None:
            from gossipml.codecs.dense import IdentityCodec

            fallback = IdentityCodec()
        self.rank, self.fallback, self.seed, self.min_gain = rank, fallback, seed, min_gain

    def gains(self, shape: tuple[int, ...]) -> bool:
        """True when the tensor is a matrix whose factors are ``min_gain`` x smaller than it."""
        if len(shape) < 2 or math.prod(shape) == 0:
            return False
        rows, cols = shape[0], math.prod(shape[1:])
        rank = min(self.rank, rows, cols)
        return (rows + cols) * rank * self.min_gain <= rows * cols

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """(P, Q) factors, or the fallback's payload for tensors that would not shrink."""
        state = dict(state or {})
        if not tensor.is_floating_point() or not self.gains(tuple(tensor.shape)):
            payload, state["fallback"] = self.fallback.encode(tensor, state.get("fallback"))
            return payload, state
        matrix = as_matrix(tensor.detach()).to(work_dtype(tensor.dtype))
        rows, cols = matrix.shape
        rank = min(self.rank, rows, cols)
        q = state.get("q")
        if q is None or q.shape != (cols, rank) or q.dtype != matrix.dtype:
            q = initial_q(cols, rank, self.seed, matrix.device, matrix.dtype)
        p, q = power_step(matrix, q)
        state["q"] = q
        meta = {"rank": rank, "wire": dtype_name(matrix.dtype)}
        return Payload(self.name, dtype_name(tensor.dtype), tuple(tensor.shape), meta,
                       (to_buffer(p), to_buffer(q))), state

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """``P Q^T`` reshaped to the tensor's shape and dtype."""
        dtype, shape, numel = header(payload)
        if len(shape) < 2 or numel == 0 or not dtype.is_floating_point:
            raise CodecError(f"lowrank payload needs a non-empty floating matrix, got {shape}")
        rows, cols = shape[0], numel // shape[0]
        rank = meta_int(payload.meta, "rank", 1, min(rows, cols))
        wdtype = work_dtype(dtype)  # what the sender computes in: float64 only for float64
        wire = payload.meta.get("wire") if isinstance(payload.meta, Mapping) else None
        if wire != dtype_name(wdtype):
            raise CodecError(f"lowrank meta['wire'] must be {dtype_name(wdtype)} for a {dtype} "
                             f"tensor, got {wire!r:.40}")
        b_p, b_q = expect_buffers(payload, 2)
        p = view_buffer(b_p, wdtype, rows * rank, "lowrank P").to(device).view(rows, rank)
        q = view_buffer(b_q, wdtype, cols * rank, "lowrank Q").to(device).view(cols, rank)
        return (p @ q.t()).to(dtype).reshape(shape)

    def estimate_nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Exact wire bytes of the factors (float32, float64 for float64), or the fallback's."""
        if not self.gains(shape):
            return self.fallback.estimate_nbytes(shape, dtype)
        rows, cols = shape[0], math.prod(shape[1:])
        item = 8 if dtype == torch.float64 else 4
        return (rows + cols) * min(self.rank, rows, cols) * item


def _make_lowrank(params: Mapping[str, Any], values: Any = None) -> LowRankCodec:
    """``lowrank`` from spec parameters; ``fallback`` is any registered codec name."""
    name = str(params.get("fallback", "identity"))
    try:
        fallback = codec_entry(name).make({}, None)
    except ValueError as exc:
        raise ValueError(f"lowrank: fallback {name!r} is not usable ({exc})") from None
    return LowRankCodec(int(params.get("rank", 2)), fallback, int(params.get("seed", 0)),
                        float(params.get("min_gain", 2.0)))


register_codec("lowrank", _make_lowrank, keys=("rank", "fallback", "seed", "min_gain"),
               positional="rank", role="matrix")
