"""Local optimizers by name, and one step of any of them (L-BFGS needs a closure)."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from gossipml.tasks.config import TaskConfig

__all__ = ["build_optimizer", "optimizer_step", "lr_factor", "set_lr", "reset_after_merge"]


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TaskConfig) -> torch.optim.Optimizer:
    """``sgd`` (heavy-ball momentum), ``adam``, ``adamw`` or ``lbfgs`` (strong-Wolfe line search)."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lbfgs":
        return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=cfg.lbfgs_max_iter,
                                 history_size=cfg.lbfgs_history, line_search_fn="strong_wolfe")
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adam, adamw or lbfgs")


def optimizer_step(optimizer: torch.optim.Optimizer,
                   loss_of: Callable[[], torch.Tensor]) -> float:
    """One optimizer step on the loss ``loss_of()`` computes; returns the loss before the step.

    First-order optimizers evaluate once; L-BFGS re-evaluates through the closure as its line
    search needs. Weight decay for L-BFGS is not applied (torch's LBFGS has none).
    """
    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        return loss.detach()

    if isinstance(optimizer, torch.optim.LBFGS):
        return float(optimizer.step(closure))
    loss = closure()
    optimizer.step()
    return float(loss)


def lr_factor(cfg: TaskConfig, step: int, total_steps: int) -> float:
    """The multiple of ``cfg.lr`` for local step ``step`` (0-based) of a run of ``total_steps``.

    Pure. Linear warm-up over ``warmup_steps`` (from 1/warmup_steps to 1), then the schedule over
    the ``lr_decay_steps`` after it (0: the rest of ``total_steps``); past its end the schedule
    stays at its final value. ``constant`` is 1 throughout (after warm-up)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = cfg.lr_decay_steps or max(total_steps - cfg.warmup_steps, 1)
    t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    low = cfg.lr_min_factor
    if cfg.lr_schedule == "cosine":
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.lr_schedule == "linear":
        return 1 - (1 - low) * t
    if cfg.lr_schedule == "step":
        return cfg.lr_gamma ** sum(t >= m for m in cfg.lr_milestones)
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def reset_after_merge(optimizer: torch.optim.Optimizer) -> bool:
    """Forget the optimizer state a merge that replaced the parameters made wrong; True if any.

    L-BFGS: its curvature pairs are ``s = t d`` (the step it took) and ``y = g_new - g_old``
    (the gradient change over that step). After a merge moves the parameters, the next ``y``
    spans the step *and* the merge jump while ``s`` is only the step, so the pair, and the
    inverse-Hessian estimate built from the kept pairs, is wrong (it can even lose ``s'y > 0``).
    Its state (history, previous gradient, direction, step length) is cleared: the next step is
    a fresh optimizer's from the merged point. Adam's moments and SGD's momentum buffer are kept:
    they are running averages of gradients, which stay valid directions near the merged point
    (the models being averaged are close by consensus), and they decay within a few steps;
    resetting Adam would restart its bias correction (a step of size ``lr`` per coordinate)
    at every round.
    """
    if isinstance(optimizer, torch.optim.LBFGS):
        had = any(bool(state) for state in optimizer.state.values())
        optimizer.state.clear()
        return had
    return False
