"""Synthetic distributions with a known optimum, drawn as online streams or as fixed datasets.

A *world* (the true parameters) is fixed by one seed that every peer shares; each peer draws its
own samples from it with its own generator, for as long as it trains. Features are standard normal.

- ``linear``: ``y = x w* + b* + noise * e``, ``e ~ N(0, 1)``; least squares is minimised at
  ``(w*, b*)`` (the regression function).
- ``logistic``: ``y ~ Bernoulli(sigmoid(x w* + b*))``; the logistic loss is minimised at
  ``(w*, b*)`` (a well-specified model). A two-class softmax model holds it as row 1 minus row 0.
- ``gmm``: class ``k`` uniform, ``x ~ N(mu_k, s^2 I)`` with ``s = 1``; the Bayes posterior is a softmax with
  ``w_k = mu_k / s^2``, ``b_k = -|mu_k|^2 / (2 s^2)`` (Hastie et al., ESL, 4.3), identified up to
  adding the same vector to every class, so distances compare class-centred parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Stream", "StreamWorld", "make_world", "STREAM_KINDS"]

STREAM_KINDS: tuple[str, ...] = ("linear", "logistic", "gmm")


@dataclass(frozen=True)
class StreamWorld:
    """The true parameters of one synthetic distribution (shared by every peer)."""

    kind: str
    weight: np.ndarray  # (outputs, features) in the matching linear model's layout
    bias: np.ndarray  # (outputs,)
    noise: float
    means: np.ndarray | None = None  # gmm class means (classes, features)

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.weight.shape[1])

    @property
    def num_classes(self) -> int:
        """Classes of the labels; 0 for regression."""
        return {"linear": 0, "logistic": 2}.get(self.kind, int(self.weight.shape[0]))

    def optimum(self) -> tuple[np.ndarray, np.ndarray]:
        """The known minimiser ``(weight, bias)`` of the task's loss, in the model's layout."""
        return self.weight.copy(), self.bias.copy()

    def distance(self, weight: np.ndarray, bias: np.ndarray) -> float:
        """Euclidean distance of a model ``(weight, bias)`` to the optimum, up to identifiability.

        logistic with a two-row softmax model compares row 1 - row 0; gmm compares class-centred
        ``[W b] - mean_k [W b]`` (softmax is invariant to a common shift).
        """
        w = np.asarray(weight, dtype=np.float64)
        b = np.asarray(bias, dtype=np.float64).reshape(-1)
        theta = np.concatenate([w.reshape(w.shape[0], -1), b[:, None]], axis=1)
        star = np.concatenate([self.weight, self.bias[:, None]], axis=1).astype(np.float64)
        if self.kind == "logistic" and theta.shape[0] == 2:
            theta = theta[1:] - theta[:1]
        elif self.kind == "gmm":
            theta = theta - theta.mean(axis=0, keepdims=True)
            star = star - star.mean(axis=0, keepdims=True)
        if theta.shape != star.shape:
            raise ValueError(f"model parameters of shape {theta.shape} do not match the "
                             f"{self.kind} optimum {star.shape}")
        return float(np.linalg.norm(theta - star))


def make_world(kind: str, n_features: int, *, seed: int, n_classes: int = 3,
               noise: float = 0.1) -> StreamWorld:
    """Draw the true parameters of a ``kind`` distribution from ``seed`` (same seed, same world)."""
    if kind not in STREAM_KINDS:
        raise ValueError(f"unknown stream kind {kind!r}; choose one of {list(STREAM_KINDS)}")
    rng = np.random.default_rng([seed, 0x57AE])
    if kind == "gmm":
        sigma = 1.0  # unit-variance classes keep the optimum moderate; noise is for linear only
        means = rng.normal(0.0, 1.0, (n_classes, n_features)) * (2.0 / np.sqrt(n_features))
        weight = means / sigma**2
        bias = -np.sum(means**2, axis=1) / (2 * sigma**2)
        return StreamWorld(kind, weight.astype(np.float32), bias.astype(np.float32), float(sigma),
                           means.astype(np.float32))
    w = rng.normal(0.0, 1.0, (1, n_features)) * (2.0 / np.sqrt(n_features))
    b = rng.normal(0.0, 0.5, (1,))
    return StreamWorld(kind, w.astype(np.float32), b.astype(np.float32), float(noise))


class Stream:
    """Fresh batches from a world, for ever, on ``device``, from this peer's own ``seed``."""

    def __init__(self, world: StreamWorld, seed: int, device: str | torch.device = "cpu") -> None:
        self.world = world
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self._w = torch.as_tensor(world.weight, device=self.device)
        self._b = torch.as_tensor(world.bias, device=self.device)
        self._means = None if world.means is None else torch.as_tensor(world.means,
                                                                         device=self.device)

    def optimum(self) -> tuple[np.ndarray, np.ndarray]:
        """The known minimiser ``(weight, bias)``."""
        return self.world.optimum()

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` fresh samples: float32 features and labels (int64) or targets."""
        g, d = self.generator, self.world.n_features
        if self.world.kind == "gmm":
            k = self._means.shape[0]
            y = torch.randint(0, k, (batch_size,), generator=g, device=self.device)
            x = self._means[y] + self.world.noise * torch.randn(
                batch_size, d, generator=g, device=self.device)
            return x, y
        x = torch.randn(batch_size, d, generator=g, device=self.device)
        z = x @ self._w[0] + self._b[0]
        if self.world.kind == "linear":
            return x, z + self.world.noise * torch.randn(batch_size, generator=g,
                                                         device=self.device)
        u = torch.rand(batch_size, generator=g, device=self.device)
        return x, (u < torch.sigmoid(z)).long()

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next_batch(32)
