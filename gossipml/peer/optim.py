"""One line in an existing training loop: a torch optimizer whose every step is also a gossip step.

    optimizer = GossipOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), peer)
    for x, y in loader:                   # your loop, unchanged
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()                  # the update, then peer.step(): send, wait, merge

After a round that merged new parameters it clears the state a merge makes wrong (L-BFGS's
curvature pairs: :func:`gossipml.tasks.optim.reset_after_merge`), so a program needs nothing else.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch

from gossipml.tasks.optim import reset_after_merge

__all__ = ["GossipOptimizer"]


class Steppable(Protocol):
    """What the wrapper needs of a peer: ``step()`` after each local step (``Peer.step``)."""

    def step(self) -> dict[str, Any] | None:
        """Count one local step; a round's result when the step ended a round."""
        ...


class GossipOptimizer:
    """``optimizer`` plus ``peer.step()`` after every ``step()``; everything else is the wrapped
    optimizer's (``zero_grad``, ``param_groups``, ``state_dict``, schedulers attach to it)."""

    def __init__(self, optimizer: torch.optim.Optimizer, peer: Steppable) -> None:
        self.optimizer = optimizer
        self.peer = peer
        self.last_round: dict[str, Any] | None = None  # the newest round's result

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step, then one gossip step; returns what the optimizer's step returned."""
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        result = self.peer.step()
        if result is not None:
            self.last_round = result
            if result.get("merged"):
                reset_after_merge(self.optimizer)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups (learning rates live here)."""
        return self.optimizer.param_groups

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state (the peer checkpoints its own)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state)
