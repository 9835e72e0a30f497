"""Linear models split by feature, and the single-machine reference they are judged against.

Model-parallel split (the lecture's second kind of content, intermediate results): peer ``p``
owns columns ``x[:, B_p]`` and weights ``W[:, B_p]`` (``B_p`` from
:func:`gossipml.data.feature_blocks`). Per step every peer sends its partial product
``x[:, B_p] W[:, B_p]^T``; the margin is ``sum_p partials + b``; the loss gradient with respect to
the margin, ``G``, is the same on every peer, and peer ``p`` updates only its block with
``grad W[:, B_p] = G^T x[:, B_p]`` (chain rule through a sum).
"""

from __future__ import annotations

import torch

from gossipml.data import Dataset
from gossipml.tasks.config import LINEAR_MODELS
from gossipml.tasks.models import loss_function

__all__ = ["partial_margin", "margin_loss_and_grad", "block_gradient", "reference_loss"]


def partial_margin(x_block: torch.Tensor, w_block: torch.Tensor) -> torch.Tensor:
    """This peer's share of the margin: ``x[:, B_p] @ W[:, B_p]^T`` of shape (items, outputs)."""
    return x_block @ w_block.T


def margin_loss_and_grad(model: str, margin: torch.Tensor, y: torch.Tensor,
                         num_classes: int) -> tuple[float, torch.Tensor]:
    """Mean loss of ``model`` at the full margin and its gradient ``G = dL/dmargin``."""
    if model not in LINEAR_MODELS:
        raise ValueError(f"feature split needs a linear model {list(LINEAR_MODELS)}, got {model!r}")
    m = margin.detach().clone().requires_grad_(True)
    loss = loss_function(model, num_classes)(m, y)
    (grad,) = torch.autograd.grad(loss, m)
    return float(loss.detach()), grad


def block_gradient(grad_margin: torch.Tensor, x_block: torch.Tensor) -> torch.Tensor:
    """Gradient of the loss with respect to this peer's weight block: ``G^T x[:, B_p]``."""
    return grad_margin.T @ x_block


def reference_loss(model: str, dataset: Dataset, *, l2: float = 0.0, max_iter: int = 500,
                   tol: float = 1e-10) -> float:
    """Minimum of ``mean loss + l2/2 |W|^2`` of linear ``model`` on all of ``dataset``'s training
    data, fitted on one machine by full-batch L-BFGS (float64): the target of distributed runs.

    On separable data (digits) logreg and svm reach 0 without ``l2``; use ``lstsq`` or ``l2 > 0``
    when comparing relative losses.
    """
    if model not in LINEAR_MODELS:
        raise ValueError(f"reference_loss needs a linear model {list(LINEAR_MODELS)}, got "
                         f"{model!r}")
    x = torch.as_tensor(dataset.x_train).reshape(dataset.x_train.shape[0], -1).double()
    y = torch.as_tensor(dataset.y_train)
    y = y.double() if dataset.is_regression else y
    outputs = max(dataset.num_classes, 1)
    w = torch.zeros(outputs, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(outputs, dtype=torch.float64, requires_grad=True)
    data_loss = loss_function(model, dataset.num_classes)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return data_loss(out, target) + 0.5 * l2 * w.pow(2).sum()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=tol, tolerance_change=tol,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(x @ w.T + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(loss_fn(x @ w.T + b, y))
