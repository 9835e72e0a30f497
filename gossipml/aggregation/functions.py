"""Pure aggregation math on models (``dict[str, Tensor]``), in the style of Flower's ``aggregate.py``.

Every function computes in float32 (float64 stays float64) on the models' device and returns
tensors of the first model's dtype. References: coordinate-wise median and trimmed mean (Yin et
al., "Byzantine-robust distributed learning: towards optimal statistical rates", ICML 2018);
clipped gossip (He, Karimireddy, Jaggi, "Byzantine-robust decentralized learning via
ClippedGossip", 2022); partial averaging over a parameter subset (the lecture's partial/backup
aggregation).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from gossipml.aggregation.base import Model

__all__ = [
    "weighted_average", "coordinate_median", "trimmed_mean", "trim_count", "clipped_gossip",
    "model_distance", "partial_mask", "partial_average",
]

Params = Mapping[str, torch.Tensor]


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _stack(models: Sequence[Params], name: str) -> torch.Tensor:
    first = models[0][name]
    return torch.stack([m[name].to(first.device, _work_dtype(first)) for m in models])


def _require(models: Sequence[Params]) -> None:
    if not models:
        raise ValueError("need at least one model to aggregate; pass the own model too")


def weighted_average(models: Sequence[Params], weights: Sequence[float]) -> Model:
    """``sum_i w_i x_i / sum_i w_i`` per tensor (weights are normalized; they must be >= 0)."""
    _require(models)
    if len(weights) != len(models):
        raise ValueError(f"got {len(weights)} weights for {len(models)} models; pass one each")
    total = float(sum(weights))
    if any(w < 0 for w in weights) or not total > 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    out: Model = {}
    for name, ref in models[0].items():
        w = torch.tensor([float(x) / total for x in weights], dtype=_work_dtype(ref),
                         device=ref.device)
        stacked = _stack(models, name)
        out[name] = torch.tensordot(w, stacked, dims=1).to(ref.dtype)
    return out


def coordinate_median(models: Sequence[Params]) -> Model:
    """Coordinate-wise median; for an even count the mean of the two middle values (Yin et al.)."""
    _require(models)
    n = len(models)
    out: Model = {}
    for name, ref in models[0].items():
        ordered = _stack(models, name).sort(dim=0).values
        mid = ordered[(n - 1) // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
        out[name] = mid.to(ref.dtype)
    return out


def trim_count(n_models: int, trim_fraction: float) -> int:
    """Values dropped at each end: ``min(ceil(trim_fraction * n), (n - 1) // 2)``."""
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    return min(math.ceil(trim_fraction * n_models - 1e-9), (n_models - 1) // 2)


def trimmed_mean(models: Sequence[Params], trim_fraction: float) -> Model:
    """Coordinate-wise mean after dropping ``trim_count(n, trim_fraction)`` values at each end."""
    _require(models)
    k = trim_count(len(models), trim_fraction)
    out: Model = {}
    for name, ref in models[0].items():
        ordered = _stack(models, name).sort(dim=0).values
        out[name] = ordered[k:len(models) - k].mean(dim=0).to(ref.dtype)
    return out


def model_distance(a: Params, b: Params) -> float:
    """Euclidean distance ``||a - b||_2`` over all tensors of the model taken as one vector."""
    total = 0.0
    for name, x in a.items():
        diff = x.to(_work_dtype(x)) - b[name].to(x.device, _work_dtype(x))
        total += float(diff.pow(2).sum())
    return math.sqrt(total)


def clipped_gossip(
    own: Params, others: Sequence[Params], weights: Sequence[float], radius: float
) -> Model:
    """``x_i + sum_j w_ij clip(x_j - x_i, radius)``, ``clip(z, t) = z min(1, t / ||z||)`` (He et al.).

    ``weights`` are the neighbours' mixing weights (the own weight is implicit, ``1 - sum w``).
    """
    if len(weights) != len(others):
        raise ValueError(f"got {len(weights)} weights for {len(others)} neighbour models")
    if radius <= 0:
        raise ValueError(f"clip radius must be > 0, got {radius}")
    out = {name: x.to(_work_dtype(x)).clone() for name, x in own.items()}
    for model, w in zip(others, weights):
        dist = model_distance(model, own)
        scale = float(w) * (min(1.0, radius / dist) if dist > 0 else 1.0)
        for name, x in own.items():
            out[name] += scale * (model[name].to(x.device, _work_dtype(x)) - x.to(_work_dtype(x)))
    return {name: t.to(own[name].dtype) for name, t in out.items()}


def partial_mask(
    reference: Params,
    *,
    names: Sequence[str] = (),
    fraction: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Boolean mask per tensor: tensors whose name starts with one of ``names`` (all if empty),
    and within them a random ``fraction`` of the coordinates drawn from ``generator``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction < 1.0 and generator is None:
        raise ValueError("a partial fraction < 1 needs a seeded torch.Generator")
    mask: dict[str, torch.Tensor] = {}
    for name, x in reference.items():
        chosen = not names or any(name.startswith(prefix) for prefix in names)
        if not chosen:
            mask[name] = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        elif fraction >= 1.0:
            mask[name] = torch.ones(x.shape, dtype=torch.bool, device=x.device)
        else:
            draw = torch.rand(x.shape, generator=generator)
            mask[name] = (draw < fraction).to(x.device)
    return mask


def partial_average(
    models: Sequence[Params], weights: Sequence[float], mask: Mapping[str, torch.Tensor]
) -> Model:
    """Weighted average where ``mask`` is True, the first (own) model's values elsewhere."""
    averaged = weighted_average(models, weights)
    own = models[0]
    return {name: torch.where(mask[name], averaged[name], own[name]) for name in own}
