"""Aggregators for the weighted-sum family: mean, partial, median, trimmed mean, clipped gossip.

Thin classes over ``functions.py``; each filters bad models first (``checks.py``) and counts the
rejections by reason in ``.rejected`` (the last call's ``(sender, reason)`` in ``.last_rejected``).
"""

from __future__ import annotations

import collections
import statistics
from typing import Any, Mapping, Sequence

import torch

from gossipml.aggregation.base import Contribution, Model
from gossipml.aggregation.checks import filter_contributions, reason_slug
from gossipml.aggregation.config import AggregationConfig
from gossipml.aggregation.functions import (
    clipped_gossip, coordinate_median, model_distance, partial_average, partial_mask,
    trimmed_mean, weighted_average,
)
from gossipml.aggregation.registry import register_rule
from gossipml.aggregation.weights import scheme_weights

__all__ = [
    "FilteringAggregator", "MeanAggregator", "PartialAggregator", "MedianAggregator",
    "TrimmedMeanAggregator", "ClippedGossipAggregator",
]

Params = Mapping[str, torch.Tensor]


class FilteringAggregator:
    """Shared part: reject bad models, count reasons, then call ``_combine`` on what is left.
    Rules with state a restart must keep (partial's draw count, ADMM duals, kept ensembles) add
    ``state_dict``/``load_state_dict`` and so are :class:`~gossipml.aggregation.base.Stateful`;
    the rejection counters are statistics, not state."""

    def __init__(self, cfg: AggregationConfig, *, num_samples: int = 0) -> None:
        self.cfg = cfg
        self.num_samples = num_samples
        self.rejected: collections.Counter[str] = collections.Counter()
        self.last_rejected: list[tuple[int, str]] = []

    def aggregate(
        self,
        own: Params,
        received: Sequence[Contribution],
        self_weight: float,
        *,
        own_round: int | None = None,
    ) -> Model:
        """Filter ``received``, then combine; the own model alone comes back as a copy."""
        kept, rejected = filter_contributions(own, received)
        self.last_rejected = rejected
        self.rejected.update(reason_slug(reason) for _, reason in rejected)
        if not kept and not self._combines_alone():
            return {name: x.detach().clone() for name, x in own.items()}
        return self._combine(own, kept, self_weight, own_round)

    def _combines_alone(self) -> bool:
        return False  # stateful rules (ADMM, ensembles) override: they step even with no news

    def _weights(
        self, received: Sequence[Contribution], self_weight: float, own_round: int | None
    ) -> list[float]:
        return scheme_weights(
            self.cfg.weights, received, self_weight, own_samples=self.num_samples,
            own_round=own_round, age_exponent=self.cfg.age_exponent,
        )

    def _combine(
        self, own: Params, kept: list[Contribution], self_weight: float, own_round: int | None
    ) -> Model:
        raise NotImplementedError


class MeanAggregator(FilteringAggregator):
    """Weighted average of own and received under the configured weight scheme."""

    def _combine(self, own, kept, self_weight, own_round):  # noqa: D102
        weights = self._weights(kept, self_weight, own_round)
        return weighted_average([own, *(c.params for c in kept)], weights)


class PartialAggregator(FilteringAggregator):
    """Weighted average over a subset only (tensor-name prefixes and/or a fraction of coordinates,
    drawn anew each call from ``seed`` and the call count); the rest keeps the own values."""

    def __init__(self, cfg: AggregationConfig, *, num_samples: int = 0) -> None:
        super().__init__(cfg, num_samples=num_samples)
        self.calls = 0

    def state_dict(self) -> dict[str, Any]:
        """The draw count (it seeds the mask when no ``own_round`` is given)."""
        return {"partial_calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        if state.get("partial_calls") is not None:
            self.calls = int(state["partial_calls"])

    def _combine(self, own, kept, self_weight, own_round):  # noqa: D102
        step = own_round if own_round is not None else self.calls
        self.calls += 1
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        mask = partial_mask(own, names=self.cfg.partial_names,
                            fraction=self.cfg.partial_fraction, generator=generator)
        weights = self._weights(kept, self_weight, own_round)
        return partial_average([own, *(c.params for c in kept)], weights, mask)


class MedianAggregator(FilteringAggregator):
    """Coordinate-wise median of own and received (weights ignored)."""

    def _combine(self, own, kept, self_weight, own_round):  # noqa: D102
        return coordinate_median([own, *(c.params for c in kept)])


class TrimmedMeanAggregator(FilteringAggregator):
    """Coordinate-wise trimmed mean of own and received (``trim_fraction`` at each end)."""

    def _combine(self, own, kept, self_weight, own_round):  # noqa: D102
        return trimmed_mean([own, *(c.params for c in kept)], self.cfg.trim_fraction)


class ClippedGossipAggregator(FilteringAggregator):
    """Clipped gossip; the radius is ``clip_radius`` or, when unset, the lower median of this
    call's neighbour distances (so with two neighbours, one of them far off, the nearer one sets it)."""

    def _combine(self, own, kept, self_weight, own_round):  # noqa: D102
        weights = self._weights(kept, self_weight, own_round)[1:]
        radius = self.cfg.clip_radius
        if radius is None:
            distances = [model_distance(c.params, own) for c in kept]
            radius = statistics.median_low(distances) or 1e-12
        return clipped_gossip(own, [c.params for c in kept], weights, radius)


def _simple(cls: type[FilteringAggregator]):
    """Builder of a rule whose aggregator needs only the config and the own sample count."""
    def build(cfg: AggregationConfig, *, num_samples: int = 0, **_: Any) -> FilteringAggregator:
        return cls(cfg, num_samples=num_samples)

    return build


for _name, _cls in {"mean": MeanAggregator, "partial": PartialAggregator,
                    "median": MedianAggregator, "trimmed_mean": TrimmedMeanAggregator,
                    "clipped": ClippedGossipAggregator}.items():
    register_rule(_name, _simple(_cls))
