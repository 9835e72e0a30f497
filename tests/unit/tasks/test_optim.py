"""Optimizer state after a merge: L-BFGS forgets its curvature pairs, Adam and momentum keep theirs."""

from __future__ import annotations

import pytest
import torch

from gossipml.tasks import TaskConfig, build_optimizer, optimizer_step
from gossipml.tasks.optim import reset_after_merge

X = torch.linspace(-1, 1, 64).reshape(16, 4)
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1


def _model(seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 1)


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> float:
    return optimizer_step(opt, lambda: torch.nn.functional.mse_loss(model(X).squeeze(1), Y))


def _merge(model: torch.nn.Module, other: torch.nn.Module) -> None:
    with torch.no_grad():
        for p, q in zip(model.parameters(), other.parameters()):
            p.copy_((p + q) / 2)  # what an averaging merge does to the live parameters


def test_lbfgs_after_a_merge_steps_as_a_fresh_optimizer_from_the_merged_point():
    # Prepare: L-BFGS with a few steps of curvature history, then a merge moves its parameters
    cfg = TaskConfig(optimizer="lbfgs", lr=0.5, lbfgs_max_iter=2)
    model = _model(0)
    opt = build_optimizer(model.parameters(), cfg)
    for _ in range(3):
        _step(model, opt)
    assert opt.state[model.weight]["old_dirs"]  # curvature pairs are held
    _merge(model, _model(1))
    twin = _model(2)
    twin.load_state_dict(model.state_dict())
    fresh = build_optimizer(twin.parameters(), cfg)
    # Execute
    assert reset_after_merge(opt) is True
    # Assert: nothing kept, and the next step equals a fresh optimizer's from the merged point
    assert not any(opt.state.values())
    _step(model, opt), _step(twin, fresh)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_without_the_reset_lbfgs_steps_differently_from_the_merged_point():
    # the history the reset drops does change the step (so the test above can fail)
    cfg = TaskConfig(optimizer="lbfgs", lr=0.5, lbfgs_max_iter=2)
    model, twin = _model(0), _model(2)
    opt = build_optimizer(model.parameters(), cfg)
    for _ in range(3):
        _step(model, opt)
    _merge(model, _model(1))
    twin.load_state_dict(model.state_dict())
    _step(model, opt), _step(twin, build_optimizer(twin.parameters(), cfg))
    assert not torch.equal(model.weight, twin.weight)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_first_order_state_survives_a_merge(name):
    model = _model(0)
    opt = build_optimizer(model.parameters(), TaskConfig(optimizer=name, lr=0.01, momentum=0.9))
    _step(model, opt)
    before = {k: v.clone() for k, v in opt.state[model.weight].items()
              if isinstance(v, torch.Tensor)}
    assert reset_after_merge(opt) is False
    after = opt.state[model.weight]
    assert before and all(torch.equal(after[k], v) for k, v in before.items())
