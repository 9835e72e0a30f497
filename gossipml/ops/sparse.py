"""Sparsification math: exact top-k by magnitude via a sampled threshold, and seeded random-k."""

from __future__ import annotations

import torch

__all__ = ["topk_magnitude", "random_indices", "index_dtype"]

_SAMPLE = 1 << 14  # elements sampled to estimate the k-th magnitude
_SLACK = 1.25  # candidates aimed at, as a multiple of k, so the sample rarely undershoots


def index_dtype(numel: int) -> torch.dtype:
    """int32 indices while they fit (half the bytes on the wire), else int64."""
    return torch.int32 if numel <= torch.iinfo(torch.int32).max else torch.int64


def topk_magnitude(flat: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices (int64, unsorted) of the ``k`` largest ``|flat|``: exact, ties broken arbitrarily.

    For large tensors a threshold under the k-th magnitude is estimated from a seeded sample, the
    few candidates above it are kept, and ``torch.topk`` runs on them only (faster than a full
    ``torch.topk``: docs/results/bench_codecs.md); it falls back to a full topk if too few remain.
    """
    n = flat.numel()
    k = max(0, min(int(k), n))
    if k == 0:
        return torch.empty(0, dtype=torch.int64, device=flat.device)
    mag = flat.abs()
    if n <= 4 * _SAMPLE or k * 4 > n:
        return torch.topk(mag, k, sorted=False).indices
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pick = torch.randint(n, (_SAMPLE,), generator=gen).to(flat.device)
    sample = mag[pick]
    rank = min(_SAMPLE - 1, int(_SAMPLE * min(1.0, _SLACK * k / n)))
    thr = torch.topk(sample, rank + 1, sorted=True).values[-1]
    cand = (mag >= thr).nonzero().squeeze_(1)
    if cand.numel() < k:
        return torch.topk(mag, k, sorted=False).indices
    sel = torch.topk(mag[cand], k, sorted=False).indices
    return cand[sel]


def random_indices(numel: int, k: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``k`` distinct indices in [0, numel) drawn from ``seed`` (CPU generator: same on any host)."""
    k = max(0, min(int(k), numel))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if k * 8 >= numel:
        idx = torch.randperm(numel, generator=gen)[:k]
    else:  # sample with a margin, drop duplicates keeping draw order, trim to k
        draw = torch.randint(numel, (k + k // 4 + 16,), generator=gen)
        uniq, inverse = torch.unique(draw, return_inverse=True)
        first = torch.full((uniq.numel(),), draw.numel(), dtype=torch.int64)
        first.scatter_reduce_(0, inverse, torch.arange(draw.numel()), reduce="amin")
        idx = uniq[first.argsort()]
        if idx.numel() < k:
            idx = torch.randperm(numel, generator=gen)[:k]
        idx = idx[:k]
    return idx.to(device)
