"""A task's own model, loss and metric from ``"module:callable"`` references in ``[task]``.

The contract (the same under every launcher):

- ``model``: a callable returning an ``nn.Module``; keyword arguments from ``[task.model_args]``,
  plus ``input_shape`` and ``num_classes`` (read from the dataset) when its signature names them
  and the table does not set them.
- ``loss``: ``f(outputs, targets) -> scalar tensor``; default cross-entropy for class labels,
  ``0.5 |f(x) - t|^2`` for real targets.
- ``metric``: ``f(outputs, targets) -> number`` over the whole test split, reported where the
  built-in tasks report accuracy.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from gossipml.data.plugin import PluginError, resolve_reference
from gossipml.tasks.config import TaskConfig
from gossipml.tasks.models import LossFn, build_model, loss_function

__all__ = ["model_for", "loss_for", "metric_for", "MetricFn"]

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def model_for(cfg: TaskConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model ``cfg`` names: a built-in by name, or the experiment's own callable."""
    if not cfg.is_plugin:
        return build_model(cfg.model, input_shape, num_classes, cfg.hidden)
    factory = resolve_reference(cfg.model, "[task] model", cfg.import_path)
    kwargs = dict(cfg.model_args)
    for name, value in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)):
        if name not in kwargs and _accepts(factory, name):
            kwargs[name] = value
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise PluginError(f"[task] model = {cfg.model!r} called with {sorted(kwargs)} "
                          f"([task.model_args] plus input_shape/num_classes): {exc}") from exc
    if not isinstance(model, nn.Module):
        raise PluginError(f"[task] model = {cfg.model!r} returned a {type(model).__name__}; it "
                          f"must return a torch.nn.Module")
    return model


def loss_for(cfg: TaskConfig, num_classes: int) -> LossFn:
    """The training loss: ``[task] loss`` when set, else the model's (or the data's) default."""
    if cfg.loss is not None:
        return resolve_reference(cfg.loss, "[task] loss", cfg.import_path)
    if cfg.is_plugin:
        return loss_function("lstsq" if num_classes == 0 else "mlp", num_classes)
    return loss_function(cfg.model, num_classes)


def metric_for(cfg: TaskConfig) -> MetricFn | None:
    """``[task] metric`` resolved, or None for the built-in accuracy."""
    if cfg.metric is None:
        return None
    return resolve_reference(cfg.metric, "[task] metric", cfg.import_path)
