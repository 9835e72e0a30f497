"""Models by name and the loss each is trained with.

- ``mlp``: flatten, ``Linear(in, hidden)``, ReLU, ``Linear(hidden, classes)``; cross-entropy.
- ``cnn``: two 3x3 conv layers (16, 32 channels) each with ReLU and 2x2 max-pooling, then one
  linear layer; cross-entropy. Sized to train fast on one CPU thread.
- ``logreg``: one linear layer, softmax cross-entropy (multinomial logistic regression).
- ``svm``: one linear layer, multi-class hinge loss ``mean_j max(0, 1 - s_y + s_j)`` over
  ``j != y`` (Weston & Watkins 1999, torch ``multi_margin_loss``).
- ``lstsq``: one linear layer, squared error ``0.5 |f(x) - t|^2`` averaged over items, ``t`` the
  target (regression) or the one-hot label (classification).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gossipml.tasks.config import LINEAR_MODELS

__all__ = ["build_model", "loss_function", "linear_layer", "LossFn"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mlp(input_shape: tuple[int, ...], outputs: int, hidden: int) -> nn.Module:
    n_in = int(torch.Size(input_shape).numel())
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


def _cnn(input_shape: tuple[int, ...], outputs: int, hidden: int) -> nn.Module:
    if len(input_shape) != 3 or input_shape[1] < 4 or input_shape[2] < 4:
        raise ValueError(f"model 'cnn' needs images of shape (channels, height, width) of at "
                         f"least 4x4, got input_shape {input_shape}; use 'mlp' for flat data")
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (h // 4) * (w // 4), outputs),
    )


def _linear(input_shape: tuple[int, ...], outputs: int, hidden: int) -> nn.Module:
    n_in = int(torch.Size(input_shape).numel())
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, outputs))


_BUILDERS: dict[str, Callable[[tuple[int, ...], int, int], nn.Module]] = {
    "mlp": _mlp, "cnn": _cnn, "logreg": _linear, "svm": _linear, "lstsq": _linear,
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                hidden: int = 128) -> nn.Module:
    """Model ``name`` for inputs of ``input_shape``; ``num_classes == 0`` (regression) gives one
    output and is only allowed for ``lstsq``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(_BUILDERS)}")
    if num_classes == 0 and name != "lstsq":
        raise ValueError(f"model {name!r} needs class labels, but the dataset is a regression "
                         f"(real targets); use model = 'lstsq'")
    return _BUILDERS[name](tuple(input_shape), max(num_classes, 1), hidden)


def _squared(num_classes: int) -> LossFn:
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = (target.to(out.dtype).reshape(out.shape) if num_classes == 0
             else F.one_hot(target, num_classes).to(out.dtype))
        return 0.5 * (out - t).pow(2).sum(dim=1).mean()
    return loss


def loss_function(model_name: str, num_classes: int) -> LossFn:
    """The training loss of ``model_name`` (mean over the batch)."""
    if model_name == "lstsq":
        return _squared(num_classes)
    if model_name == "svm":
        return F.multi_margin_loss
    return F.cross_entropy


def linear_layer(model: nn.Module) -> nn.Linear:
    """The one ``nn.Linear`` of a linear model (``logreg``, ``svm``, ``lstsq``)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(layers) != 1:
        raise ValueError(f"expected a linear model ({list(LINEAR_MODELS)}), found "
                         f"{len(layers)} linear layers")
    return layers[0]
