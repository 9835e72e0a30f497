"""PowerSGD rank-r approximation: one power-iteration step with a warm-started Q.

``P = orthogonalize(M Q)``, ``Q' = M^T P``, ``M ~ P Q'^T`` (Vogels et al., PowerSGD, NeurIPS
2019). Because P has orthonormal columns, ``P Q'^T = P P^T M`` is a projection of M, so
``||M - P Q'^T||_F <= ||M||_F`` always.
"""

from __future__ import annotations

import torch

__all__ = ["as_matrix", "initial_q", "power_step"]


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """View a tensor with ndim >= 2 as (shape[0], prod(shape[1:])) (conv weights: out x in*kh*kw)."""
    return tensor.reshape(tensor.shape[0], -1)


def initial_q(cols: int, rank: int, seed: int, device: torch.device | str,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A seeded standard normal (cols, rank) start for Q (drawn on CPU: identical on any host)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(cols, rank, generator=gen, dtype=dtype).to(device)


def power_step(matrix: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One PowerSGD step: returns (P with orthonormal columns, Q = M^T P)."""
    p = matrix @ q
    p, _ = torch.linalg.qr(p, mode="reduced")
    return p, matrix.t() @ p
