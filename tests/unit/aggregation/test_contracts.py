"""The aggregator contract holds for every registered rule: ``aggregate(own, received,
self_weight, *, own_round=None)``; rules with state are ``Stateful`` and a restart from their
state (through a real checkpoint round trip) goes on exactly as if nothing had happened."""

from __future__ import annotations

import inspect
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gossipml.aggregation import (AggregationConfig, Contribution, MeanAggregator,
                                  build_aggregator, register_rule, registered_rules)
from gossipml.aggregation.base import Aggregator, Stateful
from gossipml.config import ConfigError, load_experiment

STATEFUL = {"partial", "admm", "output_average", "vote", "distill"}
STATELESS = {"mean", "median", "trimmed_mean", "clipped"}


def _factory() -> nn.Module:
    return nn.Linear(4, 3)


def _model(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in _factory().state_dict().items()}


def _context() -> dict[str, Any]:
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    return {"num_samples": 32, "model_factory": _factory, "data": x}


def _config(rule: str, **extra: Any) -> AggregationConfig:
    return AggregationConfig(rule=rule, partial_fraction=0.5, distill_steps=3, max_models=2,
                             **extra)


def _round(agg: Aggregator, own: dict, r: int, *, with_round: bool = True) -> dict:
    extra = agg.outgoing_spec(own) if hasattr(agg, "outgoing_spec") else {}
    received = [Contribution(sender=s, round=r, params={  # asynchronous ADMM: a running sum too
        **_model(100 * r + s), **{n: torch.full_like(t, float(r + s)) for n, t in extra.items()}},
        weight=0.25) for s in (1, 2, 3)]
    return agg.aggregate(own, received, 0.25, own_round=r if with_round else None)


def _checkpoint(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # plain state only: tensors, numbers, containers


CASES = sorted(STATEFUL | STATELESS) + ["admm-async"]


def _build(case: str) -> Aggregator:
    rule, _, mode = case.partition("-")
    return build_aggregator(_config(rule, asynchronous=mode == "async"), **_context())


@pytest.mark.parametrize("case", CASES)
def test_every_builtin_rule_meets_the_aggregator_contract(case):
    agg = _build(case)
    assert isinstance(agg, Aggregator)
    params = inspect.signature(agg.aggregate).parameters
    assert list(params)[:3] == ["own", "received", "self_weight"]
    assert params["own_round"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["own_round"].default is None
    out = _round(agg, _model(0), 1)
    assert set(out) == set(_model(0)) and all(torch.isfinite(t).all() for t in out.values())
    assert isinstance(agg, Stateful) == (case.split("-")[0] in STATEFUL)


def test_the_lists_above_cover_every_builtin_rule():
    builtin = {"mean", "partial", "median", "trimmed_mean", "clipped", "admm",
               "output_average", "vote", "distill"}
    assert builtin <= set(registered_rules()) and builtin == STATEFUL | STATELESS


@pytest.mark.parametrize("case", sorted(STATEFUL) + ["admm-async"])
def test_stateful_rules_resume_from_their_checkpointed_state(case):
    first = _build(case)
    own = _model(0)
    for r in range(3):  # no own_round: partial's draw count is the state that matters
        own = _round(first, own, r, with_round=case.startswith("admm-async"))
    saved = _checkpoint(first.state_dict())
    restarted = _build(case)
    restarted.load_state_dict(saved)
    for r in range(3, 5):
        want = _round(first, own, r, with_round=case.startswith("admm-async"))
        got = _round(restarted, own, r, with_round=case.startswith("admm-async"))
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
        own = want
    fresh = _round(_build(case), own, 5, with_round=case.startswith("admm-async"))
    resumed = _round(restarted, own, 5, with_round=case.startswith("admm-async"))
    if case not in ("output_average", "vote"):  # they return the own model: state shows in predict
        assert any(not torch.equal(fresh[n], resumed[n]) for n in fresh)
    else:
        assert len(restarted.store) == len(first.store) == 2


def test_admm_state_is_a_snapshot_not_a_live_view():
    agg = _build("admm")
    own = _round(agg, _model(0), 0)
    taken = agg.state_dict()
    before = {j: {n: t.clone() for n, t in d.items()} for j, d in taken["admm_duals"].items()}
    _round(agg, own, 1)
    for j, duals in before.items():
        for name, t in duals.items():
            assert torch.equal(taken["admm_duals"][j][name], t)
    assert any(not torch.equal(agg.state.duals[j][n], before[j][n])
               for j in before for n in before[j])


class _HalfwayAggregator(MeanAggregator):
    """A user rule: move halfway from the own model to the plain mean of the others."""

    def _combine(self, own, kept, self_weight, own_round):
        mean = {n: torch.stack([c.params[n] for c in kept]).mean(0) for n in own}
        return {n: 0.5 * own[n] + 0.5 * mean[n] for n in own}


if "test_halfway" not in registered_rules():
    register_rule("test_halfway", lambda cfg, *, num_samples=0, **_: _HalfwayAggregator(
        cfg, num_samples=num_samples))


def test_a_registered_rule_is_selected_from_toml(tmp_path: Path):
    path = tmp_path / "exp.toml"
    path.write_text('[aggregation]\nrule = "test_halfway"\n')
    cfg = load_experiment(path)
    assert cfg.aggregation.rule == "test_halfway"
    agg = build_aggregator(cfg.aggregation, num_samples=10)
    assert isinstance(agg, Aggregator) and not isinstance(agg, Stateful)
    own = {"w": torch.zeros(3)}
    got = agg.aggregate(own, [Contribution(1, 0, {"w": torch.full((3,), 2.0)}),
                              Contribution(2, 0, {"w": torch.full((3,), 4.0)})], 0.5, own_round=0)
    torch.testing.assert_close(got["w"], torch.full((3,), 1.5))
    path.write_text('[aggregation]\nrule = "test_halfway_not_registered"\n')
    with pytest.raises(ConfigError, match="register_rule"):
        load_experiment(path)


def test_register_rule_refuses_bad_names_and_builders():
    with pytest.raises(ValueError, match="already registered"):
        register_rule("admm", lambda cfg, **_: None)
    with pytest.raises(ValueError, match="non-empty"):
        register_rule("", lambda cfg, **_: None)
    with pytest.raises(TypeError, match="callable"):
        register_rule("test_not_callable", "mean")  # type: ignore[arg-type]
