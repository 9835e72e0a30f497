"""Each ``[aggregation]`` key changes what ``build_aggregator`` returns for the same own model
and the same received models (two values, two results)."""

from __future__ import annotations

from typing import Any

import torch

from gossipml.aggregation import AggregationConfig, build_aggregator
from gossipml.aggregation.base import Contribution


def _linear(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(3, 4, generator=gen), "bias": torch.randn(3, generator=gen)}


OWN = _linear(0)
FAR = {k: v * 5 + 3 for k, v in _linear(9).items()}  # an outlier
RECEIVED = [Contribution(1, 4, _linear(1), weight=0.25, num_samples=10),
            Contribution(2, 2, _linear(2), weight=0.25, num_samples=200),
            Contribution(3, 5, _linear(3), weight=0.25, num_samples=50),
            Contribution(4, 5, FAR, weight=0.25, num_samples=50)]
INPUTS = torch.randn(40, 4, generator=torch.Generator().manual_seed(5))


def _aggregate(**table: Any) -> dict[str, torch.Tensor]:
    agg = build_aggregator(AggregationConfig(**table), num_samples=100,
                           model_factory=lambda: torch.nn.Linear(4, 3), data=INPUTS)
    return agg.aggregate(OWN, RECEIVED, 0.2, own_round=5)


def _differ(a: dict[str, Any], b: dict[str, Any]) -> None:
    one, two = _aggregate(**a), _aggregate(**b)
    assert any(not torch.allclose(one[k], two[k]) for k in one), \
        f"[aggregation] {a} and {b} give the same model: a key is ignored"


DISTILL = {"rule": "distill", "distill_steps": 5}


def test_rule_chooses_how_models_combine():
    _differ({"rule": "mean"}, {"rule": "median"})


def test_weights_chooses_the_weight_scheme():
    _differ({"weights": "uniform"}, {"weights": "samples"})


def test_age_exponent_discounts_old_models():
    _differ({"weights": "age", "age_exponent": 0.0}, {"weights": "age", "age_exponent": 2.0})


def test_partial_names_choose_the_tensors_averaged():
    one = _aggregate(rule="partial", partial_names=("weight",))
    two = _aggregate(rule="partial", partial_names=("bias",))
    assert torch.equal(one["bias"], OWN["bias"]) and not torch.equal(one["weight"], OWN["weight"])
    assert torch.equal(two["weight"], OWN["weight"]) and not torch.equal(two["bias"], OWN["bias"])


def test_partial_fraction_sets_the_coordinates_averaged():
    _differ({"rule": "partial", "partial_fraction": 0.3}, {"rule": "partial",
                                                          "partial_fraction": 1.0})


def test_seed_draws_another_partial_mask():
    _differ({"rule": "partial", "partial_fraction": 0.5, "seed": 1},
            {"rule": "partial", "partial_fraction": 0.5, "seed": 2})


def test_trim_fraction_sets_how_much_is_trimmed():
    _differ({"rule": "trimmed_mean", "trim_fraction": 0.0},
            {"rule": "trimmed_mean", "trim_fraction": 0.4})


def test_clip_radius_bounds_each_pull():
    _differ({"rule": "clipped", "clip_radius": 0.1}, {"rule": "clipped", "clip_radius": 10.0})


def test_max_models_bounds_the_ensemble():
    sizes = {}
    for max_models in (1, 8):
        agg = build_aggregator(AggregationConfig(rule="output_average", max_models=max_models),
                               model_factory=lambda: torch.nn.Linear(4, 3))
        agg.aggregate(OWN, RECEIVED, 0.2, own_round=5)
        sizes[max_models] = len(agg.store)
    assert sizes == {1: 1, 8: 4}


def test_temperature_softens_the_distilled_targets():
    _differ({**DISTILL, "temperature": 1.0}, {**DISTILL, "temperature": 8.0})


def test_distill_steps_is_how_long_the_student_trains():
    _differ({**DISTILL, "distill_steps": 1}, {**DISTILL, "distill_steps": 10})


def test_distill_lr_is_the_students_step_size():
    _differ({**DISTILL, "distill_lr": 1e-3}, {**DISTILL, "distill_lr": 1e-1})


def test_distill_batch_size_is_the_students_batch():
    _differ({**DISTILL, "distill_batch_size": 2}, {**DISTILL, "distill_batch_size": 40})


def test_distill_optimizer_is_the_students_optimizer():
    _differ({**DISTILL, "distill_optimizer": "adam"}, {**DISTILL, "distill_optimizer": "sgd"})


def test_relabel_fraction_is_the_share_of_inputs_relabelled():
    _differ({**DISTILL, "relabel_fraction": 0.1}, {**DISTILL, "relabel_fraction": 1.0})


def test_distill_init_is_where_the_student_starts():
    _differ({**DISTILL, "distill_init": "own"}, {**DISTILL, "distill_init": "average"})


def test_seed_draws_other_distill_batches():
    _differ({**DISTILL, "seed": 1}, {**DISTILL, "seed": 2})
