"""What every feature-split peer computes alike from the config: the data as float64 tensors,
the column blocks, and the training schedule's arguments (:func:`train_kwargs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Problem", "load_problem", "train_kwargs"]


@dataclass(frozen=True)
class Problem:
    """Training and test data (float64 features; int64 labels or float64 targets) and blocks."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    outputs: int
    num_classes: int
    lam: float
    blocks: list[slice]


def load_problem(cfg: Any, n_peers: int) -> Problem:
    """The dataset ``[data]`` names, flattened, split into ``n_peers`` blocks of columns."""
    from gossipml.data import dataset_for, feature_blocks

    data = dataset_for(cfg.data, import_path=cfg.task.import_path)

    def xs(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a.reshape(a.shape[0], -1), dtype=torch.float64)

    def ys(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float64 if data.is_regression else torch.int64)

    x = xs(data.x_train)
    return Problem(x, ys(data.y_train), xs(data.x_test), ys(data.y_test),
                   max(data.num_classes, 1), data.num_classes, float(cfg.task.weight_decay),
                   feature_blocks(x.shape[1], n_peers))


def train_kwargs(cfg: Any, problem: Problem, block: slice, *, max_full_rounds: int,
                 grad_tol: float) -> dict[str, Any]:
    """Keyword arguments of :func:`~gossipml.featuresplit.peer.train_peer` for one block."""
    return dict(sgd_steps=cfg.peer.rounds, lr=cfg.task.lr, momentum=cfg.task.momentum,
                batch_size=cfg.task.batch_size, max_full_rounds=max_full_rounds,
                grad_tol=grad_tol, startup_timeout_s=cfg.peer.startup_timeout_s,
                x_test=problem.x_test[:, block].contiguous(), y_test=problem.y_test,
                log_every=cfg.peer.eval_every_rounds)
