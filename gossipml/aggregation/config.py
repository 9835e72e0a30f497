"""``AggregationConfig``: the ``[aggregation]`` table, frozen and validated on construction.

Messages name the key, not the table: :func:`gossipml.config.load_experiment` adds the one
``[aggregation]`` prefix. ``rule`` is checked against the rule registry (:mod:`.registry`), so
a rule added with ``register_rule`` can be named in TOML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gossipml.aggregation.registry import registered_rules
from gossipml.aggregation.weights import mixing_scheme

__all__ = ["WEIGHT_SCHEMES", "DISTILL_INITS", "AggregationConfig"]

WEIGHT_SCHEMES: tuple[str, ...] = ("uniform", "metropolis", "topology", "samples", "age")
DISTILL_INITS: tuple[str, ...] = ("own", "average")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


@dataclass(frozen=True)
class AggregationConfig:
    """How a peer merges its own model with its neighbours' (see ``build_aggregator``)."""

    rule: str = "mean"
    # "topology": follow [topology] weights; uniform/samples/age override it (see mixing_scheme)
    weights: str = "topology"
    age_exponent: float = 0.5  # weights="age": w ~ base * (1 + staleness_rounds) ** -age_exponent
    # partial: average only a subset (tensor names, or a seeded fraction of the coordinates)
    partial_names: tuple[str, ...] = ()
    partial_fraction: float = 1.0
    # admm
    rho: float = 1.0
    asynchronous: bool = False  # admm: step with the newest neighbour values kept
    # admm: the local loss's prox (gossipml.tasks.prox): exact for lstsq, else prox_steps gradient
    # steps of size prox_lr (None: 1/(L + rho d), computed for linear models) on the whole shard
    # (prox_batch_size = 0) or on one minibatch of that size per step
    prox_steps: int = 10
    prox_lr: float | None = None
    prox_batch_size: int = 0
    # robust rules
    trim_fraction: float = 0.2
    clip_radius: float | None = None  # None: the median distance of the neighbours this round
    # ensembles
    max_models: int = 8  # neighbour models kept (newest per sender; oldest evicted)
    temperature: float = 2.0
    distill_steps: int = 50
    distill_lr: float = 1e-3
    distill_batch_size: int = 64
    distill_optimizer: str = "adam"
    relabel_fraction: float = 1.0
    distill_init: str = "own"  # start the student from the own model or the plain average
    public_samples: int = 0  # distill also on this many unlabeled inputs (same domain, seeded)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in registered_rules():
            raise ValueError(f"rule must be one of {list(registered_rules())}, got {self.rule!r} "
                             "(gossipml.aggregation.register_rule adds one)")
        _one_of("weights", self.weights, WEIGHT_SCHEMES)
        _one_of("distill_optimizer", self.distill_optimizer, OPTIMIZERS)
        _one_of("distill_init", self.distill_init, DISTILL_INITS)
        if not isinstance(self.partial_names, tuple):
            object.__setattr__(self, "partial_names", tuple(self.partial_names))
        checks = [
            (self.age_exponent >= 0, "age_exponent must be >= 0"),
            (0.0 < self.partial_fraction <= 1.0, "partial_fraction must be in (0, 1]"),
            (self.rho > 0, "rho must be > 0 (the ADMM penalty)"),
            (_is_int(self.prox_steps) and self.prox_steps >= 1,
             "prox_steps must be an integer >= 1 (gradient steps per ADMM prox)"),
            (self.prox_lr is None or self.prox_lr > 0,
             "prox_lr must be > 0, or left out for 1/(L + rho d) (linear models)"),
            (_is_int(self.prox_batch_size) and self.prox_batch_size >= 0,
             "prox_batch_size must be an integer >= 0 (0: the whole local shard per step)"),
            (0.0 <= self.trim_fraction < 0.5, "trim_fraction must be in [0, 0.5)"),
            (self.clip_radius is None or self.clip_radius > 0,
             "clip_radius must be > 0, or left out for the adaptive radius"),
            (self.max_models >= 1, "max_models must be >= 1"),
            (self.temperature > 0, "temperature must be > 0"),
            (self.distill_steps >= 0, "distill_steps must be >= 0"),
            (self.distill_lr > 0, "distill_lr must be > 0"),
            (self.distill_batch_size >= 1, "distill_batch_size must be >= 1"),
            (0.0 < self.relabel_fraction <= 1.0, "relabel_fraction must be in (0, 1]"),
            (self.public_samples >= 0, "public_samples must be >= 0 (0: local data only)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def for_topology(self, topology_weights: str) -> "AggregationConfig":
        """This table with ``weights`` resolved against ``[topology] weights`` (see
        :func:`~gossipml.aggregation.weights.mixing_scheme`): what a peer merges with."""
        scheme = mixing_scheme(self.weights, topology_weights)
        return self if scheme == self.weights else dataclasses.replace(self, weights=scheme)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {list(allowed)}, got {value!r}")
