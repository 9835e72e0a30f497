"""``build_aggregator``: the explicit registry from rule name to aggregator class."""

from __future__ import annotations

from typing import Any, Callable

from gossipml.aggregation.admm import AdmmAggregator
from gossipml.aggregation.base import Aggregator
from gossipml.aggregation.config import AggregationConfig
from gossipml.aggregation.distill import DistillAggregator, EnsembleAggregator
from gossipml.aggregation.rules import (
    ClippedGossipAggregator, MeanAggregator, MedianAggregator, PartialAggregator,
    TrimmedMeanAggregator,
)

__all__ = ["register_rule", "build_aggregator", "registered_rules"]

AggregatorBuilder = Callable[..., Aggregator]


def _simple(cls: type) -> AggregatorBuilder:
    def build(cfg: AggregationConfig, *, num_samples: int = 0, **_: Any) -> Aggregator:
        return cls(cfg, num_samples=num_samples)

    return build


def _admm(cfg: AggregationConfig, *, prox=None, num_samples: int = 0, **_: Any) -> Aggregator:
    return AdmmAggregator(cfg, prox=prox, num_samples=num_samples)


_REGISTRY: dict[str, AggregatorBuilder] = {}


def register_rule(name: str, builder: AggregatorBuilder) -> None:
    """Add a rule; a name already taken raises (pick another name)."""
    if name in _REGISTRY:
        raise ValueError(f"aggregation rule {name!r} is already registered; choose another name")
    _REGISTRY[name] = builder


def registered_rules() -> tuple[str, ...]:
    """The rule names ``build_aggregator`` knows."""
    _ensure_defaults()
    return tuple(_REGISTRY)


def _ensure_defaults() -> None:
    if _REGISTRY:
        return
    for name, builder in {
        "mean": _simple(MeanAggregator),
        "partial": _simple(PartialAggregator),
        "median": _simple(MedianAggregator),
        "trimmed_mean": _simple(TrimmedMeanAggregator),
        "clipped": _simple(ClippedGossipAggregator),
        "admm": _admm,
        "output_average": EnsembleAggregator,
        "vote": EnsembleAggregator,
        "distill": DistillAggregator,
    }.items():
        register_rule(name, builder)


def build_aggregator(cfg: AggregationConfig | None = None, **context: Any) -> Aggregator:
    """The aggregator for ``cfg.rule``. Context: ``num_samples`` (own dataset size, for
    weights="samples"), ``prox`` (admm: the local loss's prox oracle), ``model_factory`` (a
    zero-argument builder of the own architecture; ensembles and distill), ``data`` and
    ``public_data`` (distill: local inputs and an optional unlabeled set, tensors or batches)."""
    cfg = cfg or AggregationConfig()
    _ensure_defaults()
    if cfg.rule not in _REGISTRY:
        raise ValueError(f"unknown aggregation rule {cfg.rule!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[cfg.rule](cfg, **context)
