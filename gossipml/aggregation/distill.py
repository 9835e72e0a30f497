"""Ensemble-then-distill, the lecture's three steps, as an aggregator.

(1) each peer trains on its own data; (2) it keeps its neighbours' newest models (bounded
``ModelStore``) and builds the ensemble of its own and theirs; (3) the ensemble relabels a fraction
of the peer's local data (plus an optional unlabeled public set) with soft labels at temperature
T, and a model of the own architecture is distilled on them by minimizing
``T^2 KL(p_ens^T || softmax(student / T))`` (Hinton et al. 2015; FedDF, Lin et al. 2020). The
student's state dict is the aggregation result, so the model size never changes.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from gossipml.aggregation.base import Contribution, Model
from gossipml.aggregation.config import AggregationConfig
from gossipml.aggregation.ensemble import EnsemblePredictor, ModelStore, load_copy
from gossipml.aggregation.functions import weighted_average
from gossipml.aggregation.registry import register_rule
from gossipml.aggregation.rules import FilteringAggregator

__all__ = ["as_inputs", "relabel", "distill", "EnsembleAggregator", "DistillAggregator"]

ModelFactory = Callable[[], nn.Module]


def as_inputs(data: Any) -> torch.Tensor:
    """Inputs from a tensor, an ``(x, y)`` pair, or a sequence of batches (tensors or pairs)."""
    if data is None:
        raise ValueError("no data given; pass the peer's local inputs (tensor or batches)")
    if isinstance(data, torch.Tensor):
        return data
    if (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor)
            and isinstance(data[1], torch.Tensor) and data[1].ndim == 1
            and len(data[0]) == len(data[1])):
        return data[0]
    batches = [b if isinstance(b, torch.Tensor) else torch.as_tensor(b[0]) for b in data]
    if not batches:
        raise ValueError("data is an empty sequence of batches")
    return torch.cat(batches)


def relabel(teacher: EnsemblePredictor, x: torch.Tensor, fraction: float,
            generator: torch.Generator, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``fraction`` of ``x`` and the teacher's soft labels on it (at its temperature)."""
    count = max(1, round(fraction * len(x)))
    idx = torch.randperm(len(x), generator=generator)[:count].to(x.device)
    chosen = x[idx]
    soft = torch.cat([teacher.probs(chosen[i:i + batch_size])
                      for i in range(0, len(chosen), batch_size)])
    return chosen, soft


def distill(student: nn.Module, x: torch.Tensor, soft_targets: torch.Tensor, *,
            temperature: float, steps: int, lr: float, batch_size: int,
            generator: torch.Generator, optimizer: str = "adam") -> list[float]:
    """Fit ``student`` to ``soft_targets`` by ``steps`` minibatch steps of ``T^2 KL``; losses."""
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(student.parameters(), lr=lr)
    student.train()
    losses: list[float] = []
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator).to(x.device)
        log_p = torch.log_softmax(student(x[idx]).float() / temperature, dim=-1)
        loss = torch.nn.functional.kl_div(log_p, soft_targets[idx], reduction="batchmean")
        loss = loss * temperature**2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


class EnsembleAggregator(FilteringAggregator):
    """Output averaging / voting: keeps neighbour models, leaves the own model as it is; predict
    with ``predictor(own_module)``."""

    #: whether a merge writes new parameters (optimizer state tied to the old ones goes stale)
    replaces_params: ClassVar[bool] = False

    def __init__(self, cfg: AggregationConfig, *, model_factory: ModelFactory | None = None,
                 num_samples: int = 0, **_: Any) -> None:
        super().__init__(cfg, num_samples=num_samples)
        self.model_factory = model_factory
        self.store = ModelStore(cfg.max_models)

    def _combines_alone(self) -> bool:
        return True

    def state_dict(self) -> dict[str, Any]:
        """The kept neighbour models (see :meth:`ModelStore.state_dict`)."""
        return {"ensemble_models": self.store.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        if state.get("ensemble_models") is not None:
            self.store.load_state_dict(state["ensemble_models"])

    def _remember(self, kept: Sequence[Contribution]) -> None:
        for c in kept:
            self.store.put(c.sender, c.round, c.params)

    def _combine(self, own, kept, self_weight, own_round):  # noqa: D102
        self._remember(kept)
        return {name: x.detach().clone() for name, x in own.items()}

    def predictor(self, own_module: nn.Module) -> EnsemblePredictor:
        """The ensemble of ``own_module`` and the kept neighbour models."""
        if self.model_factory is None:
            raise ValueError("ensemble prediction needs model_factory=... in build_aggregator")
        mode = "vote" if self.cfg.rule == "vote" else "average"
        return EnsemblePredictor.from_store(own_module, self.store, self.model_factory, mode)


class DistillAggregator(EnsembleAggregator):
    """Ensemble-then-distill (module docstring); needs ``model_factory`` and ``data``."""

    replaces_params: ClassVar[bool] = True  # the student becomes the own model

    def __init__(self, cfg: AggregationConfig, *, model_factory: ModelFactory | None = None,
                 data: Any = None, public_data: Any = None, num_samples: int = 0,
                 **_: Any) -> None:
        if model_factory is None or data is None:
            raise ValueError("rule='distill' needs build_aggregator(cfg, model_factory=..., "
                             "data=...): a builder of the own architecture and local inputs")
        super().__init__(cfg, model_factory=model_factory, num_samples=num_samples)
        self.inputs = as_inputs(data)
        self.public = as_inputs(public_data) if public_data is not None else None
        self.calls = 0
        self.last_losses: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        """The kept models and the call count (so the relabel seeds go on after a restart)."""
        return {**super().state_dict(), "distill_calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        if state.get("distill_calls") is not None:
            self.calls = int(state["distill_calls"])

    def _combine(self, own: Mapping[str, torch.Tensor], kept, self_weight, own_round) -> Model:
        self._remember(kept)
        if len(self.store) == 0:
            return {name: x.detach().clone() for name, x in own.items()}
        assert self.model_factory is not None
        device = next(iter(own.values())).device
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.calls)
        self.calls += 1
        neighbours = [m.params for m in self.store]
        members = [load_copy(p, self.model_factory, device) for p in [own, *neighbours]]
        teacher = EnsemblePredictor(members, "average", cfg.temperature)
        x, soft = relabel(teacher, self.inputs.to(device), cfg.relabel_fraction, generator)
        if self.public is not None:
            xp = self.public.to(device)
            x, soft = torch.cat([x, xp]), torch.cat([soft, teacher.probs(xp)])
        start = own if cfg.distill_init == "own" else weighted_average(
            [own, *neighbours], [1.0] * (1 + len(neighbours)))
        student = load_copy(start, self.model_factory, device)
        self.last_losses = distill(
            student, x, soft, temperature=cfg.temperature, steps=cfg.distill_steps,
            lr=cfg.distill_lr, batch_size=cfg.distill_batch_size, generator=generator,
            optimizer=cfg.distill_optimizer,
        )
        state = student.state_dict()
        return {name: state[name].detach().to(own[name].dtype) for name in own}


register_rule("output_average", EnsembleAggregator)
register_rule("vote", EnsembleAggregator)
register_rule("distill", DistillAggregator)
