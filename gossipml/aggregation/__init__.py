"""Aggregation: how a peer turns its own model and its neighbours' into one.

Sums of models (weighted averaging, partial averaging, consensus ADMM, robust median / trimmed
mean / clipped gossip) and ensembles (output averaging, voting, ensemble-then-distill). Importing
``rules``, ``admm`` and ``distill`` registers the built-in rules in
:mod:`.registry`, the one list ``[aggregation] rule`` is checked against.
"""

from __future__ import annotations

from gossipml.aggregation.admm import AdmmAggregator, AdmmState, admm_step, quadratic_prox
from gossipml.aggregation.admm_async import AsyncAdmmState, async_admm_step
from gossipml.aggregation.base import Aggregator, Contribution, Model
from gossipml.aggregation.checks import check_model, filter_contributions, reason_slug
from gossipml.aggregation.build import build_aggregator
from gossipml.aggregation.config import WEIGHT_SCHEMES, AggregationConfig
from gossipml.aggregation.distill import DistillAggregator, EnsembleAggregator, distill, relabel
from gossipml.aggregation.ensemble import EnsemblePredictor, ModelStore
from gossipml.aggregation.functions import (
    clipped_gossip, coordinate_median, partial_average, partial_mask, trimmed_mean,
    weighted_average,
)
from gossipml.aggregation.registry import register_rule, registered_rules
from gossipml.aggregation.rules import (
    ClippedGossipAggregator, FilteringAggregator, MeanAggregator, MedianAggregator,
    PartialAggregator, TrimmedMeanAggregator,
)
from gossipml.aggregation.weights import (
    age_weights, sample_weights, scheme_weights, topology_weights, uniform_weights,
)

__all__ = [
    "Aggregator", "Contribution", "Model", "AggregationConfig", "WEIGHT_SCHEMES",
    "build_aggregator", "register_rule", "registered_rules", "check_model",
    "filter_contributions", "reason_slug",
    "weighted_average", "coordinate_median", "trimmed_mean", "clipped_gossip", "partial_mask",
    "partial_average", "uniform_weights", "topology_weights", "sample_weights", "age_weights",
    "scheme_weights", "AdmmAggregator", "AdmmState", "admm_step", "quadratic_prox",
    "AsyncAdmmState", "async_admm_step", "EnsemblePredictor", "ModelStore",
    "EnsembleAggregator", "DistillAggregator", "distill", "relabel", "FilteringAggregator",
    "MeanAggregator", "PartialAggregator", "MedianAggregator", "TrimmedMeanAggregator",
    "ClippedGossipAggregator",
]
