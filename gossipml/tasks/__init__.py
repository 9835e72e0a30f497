"""Local optimization: models, optimizers, devices and a peer's training task."""

from __future__ import annotations

from gossipml.tasks.config import LINEAR_MODELS, MODELS, OPTIMIZERS, TaskConfig
from gossipml.tasks.device import resolve_device
from gossipml.tasks.linear import (
    block_gradient,
    margin_loss_and_grad,
    partial_margin,
    reference_loss,
)
from gossipml.tasks.models import build_model, linear_layer, loss_function
from gossipml.tasks.optim import build_optimizer, optimizer_step
from gossipml.tasks.task import Task, build_task

__all__ = [
    "LINEAR_MODELS", "MODELS", "OPTIMIZERS", "TaskConfig", "Task", "build_model",
    "build_optimizer", "build_task", "linear_layer", "loss_function", "optimizer_step",
    "resolve_device", "partial_margin", "margin_loss_and_grad", "block_gradient",
    "reference_loss",
]
