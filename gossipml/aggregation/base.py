"""The aggregator contract: combine the peer's own model with the models it received.

Models are ``dict[str, torch.Tensor]`` (a state dict of floating tensors). Aggregators are pure:
no sockets, threads or clocks; everything they need comes in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch

__all__ = ["Model", "Contribution", "Aggregator"]

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
    """``aggregate(own, received, self_weight)`` returns the new own model."""

    def aggregate(
        self, own: Mapping[str, torch.Tensor], received: Sequence[Contribution], self_weight: float
    ) -> Model:
        """Combine ``own`` (weight ``self_weight``) with ``received``; pure."""
        ...
