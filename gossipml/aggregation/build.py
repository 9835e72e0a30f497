"""``build_aggregator``: the aggregator a config's ``rule`` names, from the rule registry."""

from __future__ import annotations

from typing import Any

from gossipml.aggregation.base import Aggregator
from gossipml.aggregation.config import AggregationConfig
from gossipml.aggregation.registry import rule_builder

__all__ = ["build_aggregator"]


def build_aggregator(cfg: AggregationConfig | None = None, **context: Any) -> Aggregator:
    """The aggregator for ``cfg.rule``. Context: ``num_samples`` (own dataset size, for
    weights="samples"), ``prox`` (admm: the local loss's prox oracle), ``model_factory`` (a
    zero-argument builder of the own architecture; ensembles and distill), ``data`` and
    ``public_data`` (distill: local inputs and an optional unlabeled set, tensors or batches)."""
    cfg = cfg or AggregationConfig()
    return rule_builder(cfg.rule)(cfg, **context)
