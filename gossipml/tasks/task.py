"""A peer's task: its model, optimizer and data, with one training step and an evaluation.

Every peer computes the same partition (from the data seed) and keeps its own part; the data
goes to the device once and batches are indexed there. Batch order is reshuffled every epoch
by a generator seeded with ``seed + peer_index``. Model weights are seeded with ``seed``
(``same_init``) or ``seed + peer_index``, without touching torch's global generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from gossipml.data import DataConfig, Dataset, Stream, dataset_for, label_histograms
from gossipml.data import partition_indices
from gossipml.tasks.config import LINEAR_MODELS, TaskConfig
from gossipml.tasks.device import resolve_device
from gossipml.tasks.models import LossFn, linear_layer
from gossipml.tasks.plugin import loss_for, metric_for, model_for
from gossipml.tasks.optim import build_optimizer, lr_factor, optimizer_step, set_lr

__all__ = ["Task", "build_task"]


class Task:
    """One peer's training job on a fixed shard (``stream is None``) or an online stream."""

    def __init__(self, cfg: TaskConfig, dataset: Dataset, indices: np.ndarray | None,
                 device: torch.device, seed: int, stream: Stream | None = None,
                 init_seed: int = 0) -> None:
        self.cfg, self.dataset, self.device, self.stream = cfg, dataset, device, stream
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = model_for(cfg, dataset.input_shape, dataset.num_classes)
        self.model: nn.Module = model.to(device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.loss_fn: LossFn = loss_for(cfg, dataset.num_classes)
        self.metric_fn = metric_for(cfg)
        self._gen = torch.Generator().manual_seed(int(seed))
        if stream is None:
            idx = np.asarray(indices, dtype=np.int64)
            self.x = torch.as_tensor(dataset.x_train[idx]).to(device)
            self.y = torch.as_tensor(dataset.y_train[idx]).to(device)
        else:
            self.x = self.y = None
        self.num_samples = int(self.x.shape[0]) if self.x is not None else 0
        self.label_histogram: list[int] | None = (
            None if stream is not None or dataset.is_regression
            else label_histograms(dataset.y_train, [indices], dataset.num_classes)[0])
        test_idx = _eval_subset(dataset.y_test.shape[0], cfg.eval_max_samples)
        self.x_test = torch.as_tensor(dataset.x_test[test_idx]).to(device)
        self.y_test = torch.as_tensor(dataset.y_test[test_idx]).to(device)
        self._perm: torch.Tensor | None = None
        self._cursor = 0
        self.steps = 0
        self.total_steps = 0  # the run's length in local steps, for the lr schedule

    def set_horizon(self, total_steps: int, done_steps: int | None = None) -> None:
        """Tell the lr schedule the run's length (and, on resume, the steps already taken)."""
        self.total_steps = int(total_steps)
        if done_steps is not None:
            self.steps = int(done_steps)

    def current_lr(self) -> float:
        """The learning rate the schedule gives the next step."""
        cfg = self.cfg
        if cfg.lr_schedule != "constant" and not (cfg.lr_decay_steps or self.total_steps):
            raise ValueError(f"lr_schedule {cfg.lr_schedule!r} needs the run's length: set "
                             "[task] lr_decay_steps, or train through peer.run / gossipml run")
        return cfg.lr * lr_factor(cfg, self.steps, self.total_steps)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stream is not None:
            return self.stream.next_batch(self.cfg.batch_size)
        n, b = self.num_samples, min(self.cfg.batch_size, self.num_samples)
        if self._perm is None or self._cursor + b > n:  # new epoch: reshuffle (drop the tail)
            self._perm = torch.randperm(n, generator=self._gen).to(self.device)
            self._cursor = 0
        idx = self._perm[self._cursor:self._cursor + b]
        self._cursor += b
        return self.x[idx], self.y[idx]

    def train_step(self) -> float:
        """One optimizer step on one minibatch of the peer's own data; returns its loss."""
        if self.stream is None and self.num_samples == 0:
            raise RuntimeError("this peer's partition is empty; use fewer peers or another "
                               "partition")
        self.model.train()
        x, y = self._next_batch()
        if self.cfg.schedules_lr:
            set_lr(self.optimizer, self.current_lr())
        loss = optimizer_step(self.optimizer, lambda: self.loss_fn(self.model(x), y))
        self.steps += 1
        return loss

    @torch.no_grad()
    def _loss_and_accuracy(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
        was_training = self.model.training
        self.model.eval()
        total, correct, n, outs = 0.0, 0, x.shape[0], []
        for start in range(0, n, self.cfg.eval_batch_size):
            xb, yb = x[start:start + self.cfg.eval_batch_size], y[start:start + self.cfg.eval_batch_size]
            out = self.model(xb)
            total += float(self.loss_fn(out, yb)) * xb.shape[0]
            if self.metric_fn is not None:
                outs.append(out)
            elif not self.dataset.is_regression:
                correct += int((out.argmax(dim=1) == yb).sum())
        self.model.train(was_training)
        if self.metric_fn is not None:
            return total / max(n, 1), float(self.metric_fn(torch.cat(outs), y))
        acc = None if self.dataset.is_regression else correct / max(n, 1)
        return total / max(n, 1), acc

    def evaluate(self) -> dict[str, Any]:
        """Loss and accuracy on the common test split (accuracy None for regression); linear
        tasks add ``train_loss``, streams add ``distance_to_optimum``."""
        loss, acc = self._loss_and_accuracy(self.x_test, self.y_test)
        out: dict[str, Any] = {"accuracy": acc, "loss": loss}
        if self.cfg.model in LINEAR_MODELS:
            out["train_loss"] = self.train_loss()
        if self.dataset.world is not None and self.cfg.model in LINEAR_MODELS:
            out["distance_to_optimum"] = self.distance_to_optimum()
        return out

    def train_loss(self) -> float:
        """Mean training loss over the peer's whole shard (a stream: over the test sample)."""
        if self.x is None or self.num_samples == 0:
            return self._loss_and_accuracy(self.x_test, self.y_test)[0]
        return self._loss_and_accuracy(self.x, self.y)[0]

    def distance_to_optimum(self) -> float:
        """Distance of the linear model's parameters to the synthetic world's known optimum."""
        if self.dataset.world is None:
            raise ValueError(f"dataset {self.dataset.name!r} has no known optimum; use a "
                             f"synthetic_* dataset")
        layer = linear_layer(self.model)
        return self.dataset.world.distance(layer.weight.detach().cpu().numpy(),
                                           layer.bias.detach().cpu().numpy())


def _eval_subset(n_test: int, max_samples: int | None) -> np.ndarray:
    """The same test items on every peer: all, or a fixed seeded subset of ``max_samples``."""
    if max_samples is None or max_samples >= n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng(0xE7A1).permutation(n_test)[:max_samples])


def build_task(task_cfg: TaskConfig, data_cfg: DataConfig, peer_index: int, n_peers: int,
               seed: int, dataset: Dataset | None = None) -> Task:
    """Peer ``peer_index`` of ``n_peers``: load (or reuse) the dataset, take this peer's part of the
    data config's partition (or its own stream), and build model and optimizer on the device."""
    if not 0 <= peer_index < n_peers:
        raise ValueError(f"peer_index {peer_index} is not in 0..{n_peers - 1}")
    data = dataset_for(data_cfg, dataset, import_path=task_cfg.import_path)
    device = resolve_device(task_cfg.device)
    peer_seed = int(np.random.SeedSequence([seed, peer_index]).generate_state(1)[0])
    init_seed = seed if task_cfg.same_init else peer_seed
    if data_cfg.stream:
        stream = Stream(data.world, seed=peer_seed, device=device)
        return Task(task_cfg, data, None, device, peer_seed, stream=stream, init_seed=init_seed)
    parts = partition_indices(data.y_train, n_peers, data_cfg)
    return Task(task_cfg, data, parts[peer_index], device, peer_seed, init_seed=init_seed)
