"""Local optimizers by name, and one step of any of them (L-BFGS needs a closure)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from gossipml.tasks.config import TaskConfig

__all__ = ["build_optimizer", "optimizer_step"]


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
