"""The aggregator contract: combine the peer's own model with the models it received.

Models are ``dict[str, torch.Tensor]`` (a state dict of floating tensors). Aggregators are pure:
no sockets, threads or clocks; everything they need comes in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch

__all__ = ["Model", "Contribution", "Aggregator", "Stateful"]

Model = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Contribution:
    """One neighbour's model as it arrived: who sent it, at which round, with which weight."""

    sender: int
    round: int
    params: Mapping[str, torch.Tensor]
    weight: float = 1.0  # mixing weight the receiver assigns (uniform / Metropolis-Hastings / ...)
    num_samples: int = 0  # sender's local dataset size, for averaging by sample count
    info: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Aggregator(Protocol):
    """``aggregate(own, received, self_weight, own_round=r)`` returns the new own model."""

    def aggregate(
        self, own: Mapping[str, torch.Tensor], received: Sequence[Contribution], self_weight: float,
        *, own_round: int | None = None,
    ) -> Model:
        """Combine ``own`` (weight ``self_weight``) with ``received`` at the peer's round
        ``own_round`` (rules with per-round state, such as asynchronous ADMM, read it); pure."""
        ...


@runtime_checkable
class Stateful(Protocol):
    """A part whose state must survive a restart (ADMM duals, an ensemble's kept models):
    checkpoints call ``state_dict`` and give it back through ``load_state_dict``."""

    def state_dict(self) -> dict[str, Any]:
        """Plain, checkpointable state (tensors, numbers, lists, dicts)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        ...
