"""Codecs wrapping codecs: error feedback (``+ef``) and choose-by-size.

Both are sender-side only: the payload names the inner codec that made it, so the receiver
decodes it without knowing a combinator was there.
"""

from __future__ import annotations

from typing import Any

import torch

from gossipml.codecs._util import work_dtype
from gossipml.codecs.base import Codec, Payload
from gossipml.codecs.registry import decode_payload

__all__ = ["ErrorFeedback", "BySize"]


class ErrorFeedback:
    """Error feedback: encode ``v = x + e``, then keep ``e' = v - decode(payload)`` (Seide et al.
    2014; Karimireddy et al., EF-SignSGD, ICML 2019). The residual is explicit state, so the
    running sum of what was sent stays within ``||e_t||`` of the running sum of the inputs:
    ``sum_t x_t - sum_t decode_t = e_T``."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name = f"{inner.name}+ef"

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Encode tensor + residual; state = (residual, inner state)."""
        residual, inner_state = state if state is not None else (None, None)
        if not tensor.is_floating_point():
            payload, inner_state = self.inner.encode(tensor, inner_state)
            return payload, (residual, inner_state)
        v = tensor.detach().to(work_dtype(tensor.dtype), copy=True)
        if residual is not None and residual.shape == v.shape:
            v.add_(residual)
        sent = v if v.dtype == tensor.dtype else v.to(tensor.dtype)
        payload, inner_state = self.inner.encode(sent, inner_state)
        decoded = decode_payload(payload, device=v.device)  # by payload: a fallback may answer
        v.sub_(decoded.reshape(v.shape).to(v.dtype))  # v becomes the new residual, in place
        return payload, (v, inner_state)

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """Decode by the payload's own codec (the inner codec, or a fallback it chose)."""
        return decode_payload(payload, device)

    def estimate_nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """The inner codec's wire bytes."""
        return self.inner.estimate_nbytes(shape, dtype)


class BySize:
    """Tensors with fewer than ``min_numel`` elements go through ``small``, the rest through
    ``large`` (hivemind's SizeAdaptiveCompression); bound: that of the codec used."""

    def __init__(self, large: Codec, small: Codec, min_numel: int) -> None:
        if min_numel < 0:
            raise ValueError(f"min_numel must be >= 0, got {min_numel}")
        self.large, self.small, self.min_numel = large, small, min_numel
        self.name = f"{large.name}|{small.name}<{min_numel}"

    def pick(self, numel: int) -> Codec:
        """The codec used for a tensor of ``numel`` elements."""
        return self.small if numel < self.min_numel else self.large

    def encode(self, tensor: torch.Tensor, state: Any) -> tuple[Payload, Any]:
        """Encode with the codec this size picks; the state is that codec's."""
        return self.pick(tensor.numel()).encode(tensor, state)

    def decode(self, payload: Payload, device: torch.device | str = "cpu") -> torch.Tensor:
        """Decode by the payload's codec name."""
        return decode_payload(payload, device)

    def estimate_nbytes(self, shape: tuple[int, ...], dtype: torch.dtype) -> int:
        """Wire bytes of the codec this size picks."""
        n = 1
        for d in shape:
            n *= int(d)
        return self.pick(n).estimate_nbytes(shape, dtype)
