"""Ensembles of the own and the neighbours' models: a bounded model store and a predictor.

Output averaging (mean of softmax probabilities) and majority voting, as in the lecture's
ensemble family (Dietterich, "Ensemble methods in machine learning", 2000).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from gossipml.aggregation.base import Model

__all__ = ["StoredModel", "ModelStore", "EnsemblePredictor", "load_copy", "ENSEMBLE_MODES"]

ENSEMBLE_MODES: tuple[str, ...] = ("average", "vote")
ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class StoredModel:
    """One kept neighbour model: sender, the round it was made at, its parameters."""

    sender: int
    round: int
    params: Model


class ModelStore:
    """The newest model per sender, at most ``max_models`` in all; the oldest round goes first."""

    def __init__(self, max_models: int) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self.max_models = max_models
        self._models: dict[int, StoredModel] = {}
        self._arrival = 0
        self._order: dict[int, int] = {}

    def put(self, sender: int, round: int, params: Mapping[str, torch.Tensor]) -> bool:
        """Keep a detached copy unless a model of the same or a newer round from ``sender`` is
        held; evict the oldest (round, then arrival) past the bound. True when it was kept."""
        held = self._models.get(sender)
        if held is not None and held.round >= round:
            return False
        copied = {n: t.detach().clone() for n, t in params.items()}
        self._models[sender] = StoredModel(sender, round, copied)
        self._arrival += 1
        self._order[sender] = self._arrival
        while len(self._models) > self.max_models:
            oldest = min(self._models, key=lambda s: (self._models[s].round, self._order[s]))
            del self._models[oldest], self._order[oldest]
        return sender in self._models

    def state_dict(self) -> dict[str, Any]:
        """The kept models (oldest first) for a checkpoint; see :meth:`load_state_dict`."""
        return {"max_models": self.max_models,
                "models": [{"sender": m.sender, "round": m.round, "params": dict(m.params)}
                           for m in reversed(self.models())]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (replacing what is held); at most
        ``max_models`` of them are kept, the bound of this store, not of the saved one."""
        self._models.clear()
        self._order.clear()
        for m in state.get("models", []):
            self.put(int(m["sender"]), int(m["round"]), m["params"])

    def models(self) -> list[StoredModel]:
        """Kept models, newest round first."""
        return sorted(self._models.values(), key=lambda m: (-m.round, -self._order[m.sender]))

    def __len__(self) -> int:
        return len(self._models)

    def __iter__(self) -> Iterator[StoredModel]:
        return iter(self.models())


def load_copy(params: Mapping[str, torch.Tensor], model_factory: ModelFactory,
              device: torch.device | str | None = None) -> nn.Module:
    """A fresh module from ``model_factory`` holding ``params`` (missing buffers keep defaults)."""
    module = model_factory()
    if device is not None:
        module = module.to(device)
    missing_params = set(params) - set(module.state_dict())
    if missing_params:
        raise ValueError(f"model_factory builds a model without {sorted(missing_params)[:3]}; "
                         "pass a factory for the peer's own architecture")
    module.load_state_dict(dict(params), strict=False)
    return module


class EnsemblePredictor:
    """Predict with several modules: ``mode="average"`` averages ``softmax(logits / T)``,
    ``mode="vote"`` takes the majority of the members' argmax (ties: highest average)."""

    def __init__(self, members: Sequence[nn.Module], mode: str = "average",
                 temperature: float = 1.0) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if mode not in ENSEMBLE_MODES:
            raise ValueError(f"mode must be one of {list(ENSEMBLE_MODES)}, got {mode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.members, self.mode, self.temperature = list(members), mode, temperature

    @classmethod
    def from_store(cls, own: nn.Module, store: ModelStore, model_factory: ModelFactory,
                   mode: str = "average", temperature: float = 1.0) -> "EnsemblePredictor":
        """The own module plus a copy of every kept neighbour model, on the own model's device."""
        device = next(own.parameters()).device
        members = [own] + [load_copy(m.params, model_factory, device) for m in store]
        return cls(members, mode, temperature)

    def _member_logits(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        with torch.no_grad():
            for member in self.members:
                was_training = member.training
                member.eval()
                outs.append(member(x).float())
                member.train(was_training)
        return torch.stack(outs)  # (members, batch, classes)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over members of ``softmax(logits / T)``: shape (batch, classes)."""
        return torch.softmax(self._member_logits(x) / self.temperature, dim=-1).mean(dim=0)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
        """The fraction of ``x`` whose :meth:`predict` equals ``y`` (in batches of ``batch_size``)."""
        if len(x) == 0:
            raise ValueError("no samples to score the ensemble on")
        correct = sum(int((self.predict(x[i:i + batch_size]) == y[i:i + batch_size]).sum())
                      for i in range(0, len(x), batch_size))
        return correct / len(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class per sample: argmax of the averaged probabilities, or the majority vote."""
        logits = self._member_logits(x)
        mean_probs = torch.softmax(logits / self.temperature, dim=-1).mean(dim=0)
        if self.mode == "average":
            return mean_probs.argmax(dim=-1)
        votes = torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).sum(dim=0)
        return (votes.float() + 0.999 * mean_probs).argmax(dim=-1)
