"""Sums of models: averaging, weights, robust rules, partial, checks (small literal tensors)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.aggregation import (
    AggregationConfig, Contribution, build_aggregator, check_model, clipped_gossip,
    coordinate_median, filter_contributions, partial_mask, register_rule, sample_weights,
    topology_weights, trimmed_mean, weighted_average,
)
from gossipml.aggregation.functions import model_distance
from gossipml.aggregation.weights import age_weights, scheme_weights


def m(*values: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float32)}


def contrib(sender: int, model, weight: float = 1.0, round: int = 0, samples: int = 0):
    return Contribution(sender=sender, round=round, params=model, weight=weight,
                        num_samples=samples)


def test_median_of_1_2_100_is_2():
    assert coordinate_median([m(1.0), m(2.0), m(100.0)])["w"].item() == 2.0


def test_median_even_count_is_mean_of_middle_two():
    assert coordinate_median([m(1.0), m(2.0), m(4.0), m(100.0)])["w"].item() == 3.0


def test_trimmed_mean_drops_one_at_each_end():
    models = [m(-50.0, 1.0), m(1.0, 2.0), m(2.0, 3.0), m(3.0, 4.0), m(100.0, -9.0)]
    out = trimmed_mean(models, 0.2)["w"]  # 5 models, 0.2 -> drop 1 lowest and 1 highest
    assert torch.allclose(out, torch.tensor([2.0, 2.0]))


def test_trimmed_mean_zero_fraction_is_mean():
    assert trimmed_mean([m(1.0), m(2.0), m(6.0)], 0.0)["w"].item() == pytest.approx(3.0)


def test_weighted_average_with_metropolis_hastings_weights():
    # path 0-1-2, peer 1 has degree 2, neighbours degree 1: MH w_1j = 1/(1+max(2,1)) = 1/3
    weights = topology_weights(1.0 / 3.0, [1.0 / 3.0, 1.0 / 3.0])
    assert weights == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    out = weighted_average([m(3.0), m(0.0), m(9.0)], weights)
    assert out["w"].item() == pytest.approx(4.0)
    # a peer with an MH self weight 1/2 and one neighbour of weight 1/4 present (one missing):
    # the missing 1/4 goes to the own model
    assert topology_weights(0.5, [0.25]) == pytest.approx([0.75, 0.25])


def test_weighted_average_keeps_dtype_and_rejects_bad_weights():
    half = [{"w": torch.tensor([1.0], dtype=torch.float16)}, {"w": torch.tensor([3.0],
                                                                 dtype=torch.float16)}]
    assert weighted_average(half, [1, 1])["w"].dtype == torch.float16
    with pytest.raises(ValueError, match="weights"):
        weighted_average([m(1.0)], [-1.0])
    with pytest.raises(ValueError, match="one each"):
        weighted_average([m(1.0), m(2.0)], [1.0])


def test_sample_and_age_weights():
    assert sample_weights(10, [30, 60]) == pytest.approx([0.1, 0.3, 0.6])
    assert sample_weights(0, [20, 40]) == pytest.approx([30 / 90, 20 / 90, 40 / 90])  # own: mean
    # w ~ b (1 + tau)^-a: with a = 1 and staleness 0, 1, 3 the factors are 1, 1/2, 1/4
    assert age_weights([1, 1, 1], [0, 1, 3], 1.0) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    received = [contrib(1, m(0.0), 0.25, round=9), contrib(2, m(0.0), 0.25, round=7)]
    w = scheme_weights("age", received, 0.5, own_round=10, age_exponent=1.0)
    raw = [0.5, 0.25 / 2, 0.25 / 4]
    assert w == pytest.approx([r / sum(raw) for r in raw])


def test_clipping_bounds_a_far_model():
    own, near, far = m(0.0, 0.0), m(1.0, 0.0), m(3000.0, 4000.0)
    out = clipped_gossip(own, [near, far], [0.25, 0.25], radius=2.0)
    # near is within the radius: full step 0.25; far is clipped to length 2: at most 0.5 moved
    assert model_distance(out, own) <= 0.25 * 1.0 + 0.25 * 2.0 + 1e-6
    assert torch.allclose(out["w"], torch.tensor([0.25 + 0.25 * 2 * 0.6, 0.25 * 2 * 0.8]))


def test_clipped_aggregator_adaptive_radius_resists_a_scaled_model():
    cfg = AggregationConfig(rule="clipped", weights="metropolis")
    agg = build_aggregator(cfg)
    own = m(1.0, 1.0)
    honest, byzantine = m(1.2, 0.8), m(100.0, 100.0)
    out = agg.aggregate(own, [contrib(1, honest, 1 / 3), contrib(2, byzantine, 1 / 3)], 1 / 3)
    assert model_distance(out, own) <= 2 * model_distance(honest, own) / 3 + 1e-6


def test_check_model_reasons():
    ref = {"a": torch.zeros(2), "b": torch.zeros(3, 1)}
    assert check_model({"a": torch.ones(2), "b": torch.ones(3, 1)}, ref) is None
    cases = {
        "nan": {"a": torch.tensor([0.0, float("nan")]), "b": torch.zeros(3, 1)},
        "inf": {"a": torch.tensor([0.0, float("inf")]), "b": torch.zeros(3, 1)},
        "missing_tensor": {"a": torch.zeros(2)},
        "extra_tensor": {"a": torch.zeros(2), "b": torch.zeros(3, 1), "c": torch.zeros(1)},
        "wrong_shape": {"a": torch.zeros(2), "b": torch.zeros(1, 3)},
        "wrong_dtype": {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros(3, 1)},
    }
    for slug, params in cases.items():
        reason = check_model(params, ref)
        assert reason is not None and reason.startswith(slug + ":"), (slug, reason)


@pytest.mark.parametrize("rule", ["mean", "partial", "median", "trimmed_mean", "clipped",
                                  "admm", "output_average", "vote"])
def test_every_rule_rejects_nan_inf_and_wrong_shape_first(rule):
    agg = build_aggregator(AggregationConfig(rule=rule), model_factory=lambda: torch.nn.Linear(1, 1))
    own = m(1.0, 2.0)
    received = [
        contrib(1, m(float("nan"), 0.0)), contrib(2, m(float("inf"), 0.0)),
        contrib(3, {"w": torch.zeros(3)}), contrib(4, m(1.0, 2.0)),
    ]
    out = agg.aggregate(own, received, 0.5)
    assert torch.isfinite(out["w"]).all() and out["w"].shape == (2,)
    assert torch.allclose(out["w"], own["w"])  # the only good neighbour equals own
    assert [s for s, _ in agg.last_rejected] == [1, 2, 3]
    assert dict(agg.rejected) == {"nan": 1, "inf": 1, "wrong_shape": 1}


def test_filter_contributions_splits():
    kept, rejected = filter_contributions(m(0.0), [contrib(5, m(1.0)), contrib(6, m(0.0, 1.0))])
    assert [c.sender for c in kept] == [5]
    assert rejected[0][0] == 6 and rejected[0][1].startswith("wrong_shape")


def test_partial_by_names_and_fraction():
    own = {"fc1.w": torch.zeros(4), "fc2.w": torch.zeros(1000)}
    other = {"fc1.w": torch.ones(4), "fc2.w": torch.ones(1000)}
    agg = build_aggregator(AggregationConfig(rule="partial", partial_names=("fc1",)))
    out = agg.aggregate(own, [contrib(1, other)], 0.5)
    assert torch.allclose(out["fc1.w"], torch.full((4,), 0.5))
    assert torch.count_nonzero(out["fc2.w"]) == 0
    mask = partial_mask(own, fraction=0.3, generator=torch.Generator().manual_seed(0))
    assert 200 <= int(mask["fc2.w"].sum()) <= 400
    agg = build_aggregator(AggregationConfig(rule="partial", partial_fraction=0.3))
    out = agg.aggregate(own, [contrib(1, other)], 0.5)
    moved = int((out["fc2.w"] == 0.5).sum())
    assert 200 <= moved <= 400 and moved + int((out["fc2.w"] == 0).sum()) == 1000


def test_config_validation_and_registry():
    with pytest.raises(ValueError, match="rule must be one of"):
        AggregationConfig(rule="avg")
    with pytest.raises(ValueError, match="trim_fraction"):
        AggregationConfig(trim_fraction=0.5)
    with pytest.raises(ValueError, match="max_models"):
        AggregationConfig(max_models=0)
    with pytest.raises(ValueError, match="already registered"):
        register_rule("mean", lambda cfg, **kw: None)
    with pytest.raises(ValueError, match="model_factory"):
        build_aggregator(AggregationConfig(rule="distill"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=9), st.floats(0.0, 0.49))
def test_robust_rules_stay_within_the_range(values, trim_fraction):
    models = [m(v) for v in values]
    lo, hi = min(values), max(values)
    for out in (coordinate_median(models), trimmed_mean(models, trim_fraction)):
        assert lo - 1e-3 <= out["w"].item() <= hi + 1e-3
    avg = weighted_average(models, [1.0] * len(models))["w"].item()
    assert math.isclose(avg, sum(values) / len(values), rel_tol=1e-4, abs_tol=1e-2)
