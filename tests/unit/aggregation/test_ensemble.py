"""Ensembles: bounded model store, output averaging and voting, ensemble-then-distill."""

from __future__ import annotations

import torch
from torch import nn

from gossipml.aggregation import (
    AggregationConfig, Contribution, EnsemblePredictor, ModelStore, build_aggregator,
)

N_CLASSES = 3


def fixed_linear(bias: list[float]) -> nn.Linear:
    layer = nn.Linear(2, N_CLASSES)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor(bias))
    return layer


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, N_CLASSES))


def params_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    y = torch.randint(N_CLASSES, (n,), generator=g)
    return centers[y] + 0.8 * torch.randn(n, 2, generator=g), y


def test_model_store_keeps_newest_per_sender_and_is_bounded():
    store = ModelStore(max_models=2)
    assert store.put(1, 5, {"w": torch.zeros(1)})
    assert not store.put(1, 4, {"w": torch.ones(1)})  # older than held: ignored
    assert store.put(1, 6, {"w": torch.ones(1)})
    assert store.put(2, 3, {"w": torch.zeros(1)})
    assert store.put(3, 7, {"w": torch.zeros(1)})  # evicts sender 2 (oldest round, 3)
    assert [(s.sender, s.round) for s in store] == [(3, 7), (1, 6)]
    assert not store.put(4, 1, {"w": torch.zeros(1)})  # older than all: evicted at once
    assert len(store) == 2


def test_output_average_and_vote_differ_where_they_should():
    # two members mildly prefer class 0, one strongly prefers class 1
    members = [fixed_linear([1.0, 0.0, 0.0]), fixed_linear([1.0, 0.0, 0.0]),
               fixed_linear([0.0, 20.0, 0.0])]
    x = torch.zeros(4, 2)
    assert EnsemblePredictor(members, "vote").predict(x).tolist() == [0] * 4
    assert EnsemblePredictor(members, "average").predict(x).tolist() == [1] * 4
    probs = EnsemblePredictor(members, "average").probs(x)
    assert torch.allclose(probs.sum(dim=-1), torch.ones(4))


def test_output_average_aggregator_keeps_own_and_predicts_with_neighbours():
    cfg = AggregationConfig(rule="output_average", max_models=2)
    agg = build_aggregator(cfg, model_factory=lambda: nn.Linear(2, N_CLASSES))
    own = fixed_linear([0.0, 0.0, 1.0])
    received = [Contribution(j, 1, params_of(fixed_linear([0.0, 5.0, 0.0]))) for j in (1, 2, 3)]
    out = agg.aggregate(params_of(own), received, 0.5)
    assert torch.equal(out["bias"], own.bias.detach())
    assert len(agg.store) == 2
    assert agg.predictor(own).predict(torch.zeros(1, 2)).item() == 1


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> None:
    torch.manual_seed(seed)  # only for the optimizer's internals; batches are full here
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_distillation_moves_the_student_toward_the_ensemble():
    torch.manual_seed(0)
    x, y = blobs(600, seed=1)
    teachers = []
    for k in range(3):  # each neighbour saw a different slice of the data
        t = mlp()
        train(t, x[k * 200:(k + 1) * 200], y[k * 200:(k + 1) * 200], steps=60, seed=k)
        teachers.append(t)
    own = mlp()  # untrained own model
    x_local, _ = blobs(300, seed=2)
    x_eval, _ = blobs(300, seed=3)
    ensemble = EnsemblePredictor([own, *teachers], "average")
    target = ensemble.predict(x_eval)
    before = (own(x_eval).argmax(-1) == target).float().mean().item()
    cfg = AggregationConfig(rule="distill", temperature=2.0, distill_steps=150, distill_lr=0.01,
                            relabel_fraction=0.8, max_models=4, seed=7)
    agg = build_aggregator(cfg, model_factory=mlp, data=(x_local, torch.zeros(300).long()))
    received = [Contribution(j + 1, 1, params_of(t)) for j, t in enumerate(teachers)]
    new = agg.aggregate(params_of(own), received, 0.25)
    own.load_state_dict(new)
    after = (own(x_eval).argmax(-1) == target).float().mean().item()
    assert after > before + 0.2 and after > 0.85, (before, after)
    assert agg.last_losses[-1] < agg.last_losses[0]


def test_repeated_distill_rounds_keep_size_and_bound_the_store():
    torch.manual_seed(0)
    x_local, _ = blobs(64, seed=4)
    public, _ = blobs(32, seed=5)
    cfg = AggregationConfig(rule="distill", distill_steps=3, max_models=3, distill_batch_size=16,
                            distill_init="average")
    agg = build_aggregator(cfg, model_factory=mlp, data=[x_local[:32], x_local[32:]],
                           public_data=public)
    own = mlp()
    n_params = sum(p.numel() for p in own.parameters())
    names = set(own.state_dict())
    for r in range(6):
        received = [Contribution(j, r, params_of(mlp())) for j in range(r, r + 4)]
        new = agg.aggregate(params_of(own), received, 0.2)
        assert set(new) == names
        own.load_state_dict(new)
        assert sum(p.numel() for p in own.parameters()) == n_params
        assert len(agg.store) <= cfg.max_models
    assert len(agg.store) == cfg.max_models


def test_ensemble_accuracy_scores_the_rule_s_own_prediction():
    # Prepare: each member knows one class (its bias); labels 0, 1, 2 in equal parts
    members = [fixed_linear([3.0, 0.0, 0.0]), fixed_linear([0.0, 2.0, 0.0]),
               fixed_linear([0.0, 0.0, 1.0])]
    x, y = torch.zeros(9, 2), torch.tensor([0, 1, 2] * 3)
    # Execute + Assert: every member alone scores 1/3; both rules pick class 0 here (the
    # strongest bias under averaging, the highest average among the tied votes)
    assert EnsemblePredictor(members[:1]).accuracy(x, y) == 1 / 3
    assert EnsemblePredictor(members, "average").accuracy(x, y, batch_size=4) == 1 / 3
    assert EnsemblePredictor(members, "vote").accuracy(x, y, batch_size=2) == 1 / 3
    # two members voting class 1 beat the one confident about class 0; averaging does not
    voters = [fixed_linear([9.0, 0.0, 0.0]), fixed_linear([0.0, 1.0, 0.0]),
              fixed_linear([0.0, 1.0, 0.0])]
    ones = torch.ones(9, dtype=torch.long)
    assert EnsemblePredictor(voters, "vote").accuracy(x, ones) == 1.0
    assert EnsemblePredictor(voters, "average").accuracy(x, ones) == 0.0


def test_only_rules_that_keep_the_own_model_say_so():
    ensemble = build_aggregator(AggregationConfig(rule="vote"), model_factory=mlp)
    assert ensemble.replaces_params is False  # L-BFGS state survives its merges
    x = torch.zeros(4, 2)
    distill = build_aggregator(AggregationConfig(rule="distill"), model_factory=mlp, data=x)
    assert distill.replaces_params is True
