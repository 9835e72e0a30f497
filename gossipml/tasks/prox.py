"""The prox of a peer's local loss, for ADMM: ``argmin_x f_i(x) + ||x - v||^2 / (2 s)``.

The local objective is ``f_i(x) = scale * mean_{k in shard} loss(x; k) + l2/2 sum ||W||^2``, the
penalty on every parameter of two or more dimensions (weights, not biases: the same objective as
:func:`gossipml.tasks.linear.reference_loss` with ``l2``). With ``scale = n_peers * n_i / N`` the
peers' objectives sum to ``n_peers`` times the centralized ``mean loss + l2/2 |W|^2`` over all
``N`` training items, so consensus ADMM's fixed point is the centralized optimum.

- ``lstsq``: exact: the prox is the solution of a linear system (normal equations with the
  ``1/s`` ridge), precomputed Gram matrix, solved in float64.
- every other model: inexact: ``steps`` gradient steps on the prox objective, warm-started at
  ``start`` (the peer's current model). Warm-starting keeps ADMM's fixed point exact however few
  the steps (at a fixed point the start is already stationary), unlike starting from ``v``. Each
  step uses the whole shard, or one minibatch of ``batch_size`` (a seeded generator). The step size
  is ``lr``, or for linear models ``1 / (L + 1/s)`` with ``L`` the loss's smoothness bound from
  the shard's Gram matrix (softmax cross-entropy: ``scale * lambda_max / 2 + l2``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch.func import functional_call

from gossipml.tasks.config import LINEAR_MODELS
from gossipml.tasks.models import linear_layer

__all__ = ["LocalProx", "build_local_prox"]

Model = dict[str, torch.Tensor]


def _design(x: torch.Tensor) -> torch.Tensor:
    """Flattened inputs with a column of ones (the bias), float64."""
    flat = x.reshape(x.shape[0], -1).double()
    return torch.cat([flat, torch.ones(flat.shape[0], 1, dtype=flat.dtype, device=flat.device)], 1)


def _targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    if num_classes == 0:
        return y.double().reshape(y.shape[0], -1)
    return torch.nn.functional.one_hot(y.long(), num_classes).double()


class LocalProx:
    """``prox(v, step, start)``: the prox of the local objective (module docstring) at ``v``."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[..., torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, *, model_name: str, num_classes: int,
                 scale: float = 1.0, l2: float = 0.0, steps: int = 10, lr: float | None = None,
                 batch_size: int = 0, seed: int = 0) -> None:
        if x.shape[0] == 0:
            raise ValueError("the local prox needs local data; this peer's partition is empty")
        if steps < 1 or batch_size < 0 or scale <= 0 or l2 < 0:
            raise ValueError(f"need steps >= 1, batch_size >= 0, scale > 0, l2 >= 0; got "
                             f"steps={steps}, batch_size={batch_size}, scale={scale}, l2={l2}")
        if lr is None and model_name not in LINEAR_MODELS:
            raise ValueError(f"model {model_name!r} has no computed prox step size: set "
                             "[aggregation] prox_lr (a gradient step size for its loss)")
        self.model, self.loss_fn, self.x, self.y = model, loss_fn, x, y
        self.model_name, self.num_classes = model_name, num_classes
        self.scale, self.l2, self.steps, self.lr = float(scale), float(l2), steps, lr
        self.batch_size = batch_size
        self._gen = torch.Generator().manual_seed(int(seed))
        self.exact = model_name == "lstsq" and batch_size == 0
        self._smoothness: float | None = None
        self._gram: tuple[torch.Tensor, torch.Tensor] | None = None
        self._penalized = {n for n, p in model.named_parameters() if p.dim() >= 2}
        self._linear_names: tuple[str, str] | None = None  # closed-form gradients: logreg, lstsq
        if model_name in ("logreg", "lstsq"):
            layer = linear_layer(model)
            names = {id(p): n for n, p in model.named_parameters()}
            self._linear_names = (names[id(layer.weight)], names[id(layer.bias)])

    def __call__(self, v: Mapping[str, torch.Tensor], step: float,
                 start: Mapping[str, torch.Tensor] | None = None) -> Model:
        """``argmin_x f(x) + ||x - v||^2 / (2 step)`` (exact for lstsq, else ``steps`` GD steps
        from ``start``, or from ``v`` when no start is given)."""
        if step <= 0:
            raise ValueError(f"prox step must be > 0, got {step}")
        if self.exact:
            return self._lstsq(v, step)
        x = {n: (start if start is not None else v)[n].detach().clone() for n in v}
        lr = self.lr if self.lr is not None else 1.0 / (self.smoothness() + 1.0 / step)
        for _ in range(self.steps):
            g = self.gradient(x, self._batch())
            x = {n: x[n] - lr * (g[n] + (x[n] - v[n]) / step) for n in x}
        return x

    def objective(self, params: Mapping[str, torch.Tensor]) -> float:
        """``f_i`` at ``params`` on the whole shard."""
        with torch.no_grad():
            return float(self._value(dict(params), self.x, self.y))

    def gradient(self, params: Mapping[str, torch.Tensor],
                 batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> Model:
        """``grad f_i`` at ``params`` (on ``batch``, default the whole shard)."""
        xb, yb = batch if batch is not None else (self.x, self.y)
        if self._linear_names is not None:
            return self._linear_gradient(params, xb, yb)
        leaves = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        with torch.enable_grad():
            grads = torch.autograd.grad(self._value(leaves, xb, yb), list(leaves.values()),
                                        allow_unused=True)
        return {n: (torch.zeros_like(t) if g is None else g.detach())
                for (n, t), g in zip(leaves.items(), grads)}

    def _linear_gradient(self, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                         y: torch.Tensor) -> Model:
        """Closed form: ``G = scale (p - onehot) / n`` (logreg) or ``scale (out - t) / n``
        (lstsq); ``grad W = G^T x + l2 W``, ``grad b = sum G``."""
        assert self._linear_names is not None
        w_name, b_name = self._linear_names
        w, b = params[w_name], params[b_name]
        flat = x.reshape(x.shape[0], -1).to(w.dtype)
        out = flat @ w.T + b
        if self.model_name == "logreg":
            g = torch.softmax(out, dim=1)
            g[torch.arange(g.shape[0], device=g.device), y.long()] -= 1.0
        else:
            g = out - _targets(y, self.num_classes).to(out.dtype)
        g *= self.scale / x.shape[0]
        grads = {n: torch.zeros_like(t) for n, t in params.items()}
        grads[w_name] = g.T @ flat + self.l2 * w
        grads[b_name] = g.sum(0)
        return grads

    def smoothness(self) -> float:
        """A bound on the local loss's gradient Lipschitz constant (linear models only)."""
        if self._smoothness is None:
            design = _design(self.x)
            top = float(torch.linalg.eigvalsh(design.T @ design / design.shape[0])[-1])
            factor = 0.5 if self.model_name == "logreg" else 1.0
            self._smoothness = self.scale * factor * top + self.l2
        return self._smoothness

    def _value(self, params: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.scale * self.loss_fn(functional_call(self.model, params, (x,)), y)
        if self.l2:
            loss = loss + 0.5 * self.l2 * sum(params[n].pow(2).sum() for n in params
                                              if n in self._penalized)
        return loss

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.batch_size or self.batch_size >= self.x.shape[0]:
            return None
        idx = torch.randperm(self.x.shape[0], generator=self._gen)[:self.batch_size]
        idx = idx.to(self.x.device)
        return self.x[idx], self.y[idx]

    def _lstsq(self, v: Mapping[str, torch.Tensor], step: float) -> Model:
        """Solve ``(scale G/n + l2 P + I/s) theta^T = scale X^T T/n + v^T/s``, theta = [W b]."""
        assert self._linear_names is not None
        w_name, b_name = self._linear_names
        if self._gram is None:
            design = _design(self.x)
            n = design.shape[0]
            self._gram = (design.T @ design / n,
                          design.T @ _targets(self.y, self.num_classes) / n)
        gram, xt = self._gram
        ridge = torch.full((gram.shape[0],), 1.0 / step, dtype=gram.dtype, device=gram.device)
        ridge[:-1] += self.l2
        theta_v = torch.cat([v[w_name].double(), v[b_name].double().reshape(-1, 1)], 1)
        theta = torch.linalg.solve(self.scale * gram + torch.diag(ridge),
                                   self.scale * xt + theta_v.T / step).T
        out = {n: t.detach().clone() for n, t in v.items()}
        out[w_name] = theta[:, :-1].to(v[w_name].dtype)
        out[b_name] = theta[:, -1].to(v[b_name].dtype)
        return out


def build_local_prox(task: Any, *, n_peers: int, total_samples: int, l2: float, steps: int,
                     lr: float | None, batch_size: int, seed: int = 0) -> LocalProx:
    """The prox of ``task``'s local objective, scaled by ``n_peers * n_i / total_samples`` so the
    peers' objectives sum to the centralized one (module docstring)."""
    if task.x is None:
        raise ValueError("ADMM's local prox needs a fixed local dataset; an online stream has "
                         "none: use rule = 'mean' (or another averaging rule) with [data] stream")
    if total_samples < 1 or n_peers < 1:
        raise ValueError(f"need n_peers >= 1 and total_samples >= 1, got {n_peers}, "
                         f"{total_samples}")
    scale = n_peers * task.num_samples / total_samples
    return LocalProx(task.model, task.loss_fn, task.x, task.y, model_name=task.cfg.model,
                     num_classes=task.dataset.num_classes, scale=scale, l2=l2, steps=steps,
                     lr=lr, batch_size=batch_size, seed=seed)

