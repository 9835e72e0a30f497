"""Decentralized consensus ADMM, one peer's pure update, with dual variables on its edges.

Problem: ``min sum_i f_i(x_i)`` s.t. ``x_i = z_ij = x_j`` on every edge (Boyd et al., "Distributed
optimization and statistical learning via ADMM", 2011, sec. 7; Shi et al., "On the linear
convergence of the ADMM in decentralized consensus optimization", 2014). With the edge duals
kept antisymmetric (``lambda_ij = -lambda_ji``, true when both start at 0), one round at peer i is

    lambda_ij += rho/2 (x_i - x_j)                           for each neighbour j
    z_ij       = (x_i + x_j) / 2
    x_i       <- argmin_x f_i(x) + sum_j <lambda_ij, x> + rho/2 ||x - z_ij||^2
               = prox_{f_i, s}(v),  s = 1/(rho d),  v = mean_j z_ij - s sum_j lambda_ij

where ``d`` is the number of neighbours used and ``prox_{f,s}(v) = argmin f(x) + ||x-v||^2/(2s)``.
The asynchronous variant (``admm_async``) steps with the newest value it holds for every
neighbour and recomputes each edge's dual from running sums of the iterates that every message
carries, so lost, overwritten or late versions leave the duals exactly antisymmetric and the
fixed point the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch

from gossipml.aggregation.admm_async import (AsyncAdmmState, Prox, async_admm_step, record_own,
                                             split_sums, sum_names)
from gossipml.aggregation.base import Contribution, Model
from gossipml.aggregation.checks import check_model
from gossipml.aggregation.config import AggregationConfig
from gossipml.aggregation.registry import register_rule
from gossipml.aggregation.rules import FilteringAggregator

__all__ = [
    "Prox", "AdmmState", "admm_step", "quadratic_prox", "prox_from_gradient", "AdmmAggregator",
    "admm_setup_problems", "MAX_ADMM_STALENESS",
]

Params = Mapping[str, torch.Tensor]
#: The largest ``[pacing] max_staleness`` asynchronous ADMM accepts (measured with 4 digits peers
#: at rho = 1: at the optimum with 1, 2 and 3; diverging with 4 and 8).
MAX_ADMM_STALENESS = 2


@dataclass
class AdmmState:
    """One peer's ADMM memory: the dual ``lambda_ij`` per neighbour."""

    duals: dict[int, Model] = field(default_factory=dict)


def admm_step(
    own: Params, neighbors: Mapping[int, Params], state: AdmmState, rho: float, prox: Prox
) -> Model:
    """One ADMM round at a peer (module docstring); updates ``state.duals`` in place."""
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    if not neighbors:
        return {name: x.detach().clone() for name, x in own.items()}
    d = len(neighbors)
    step = 1.0 / (rho * d)
    v = {name: torch.zeros_like(x) for name, x in own.items()}
    for j, xj in neighbors.items():
        dual = state.duals.setdefault(j, {n: torch.zeros_like(x) for n, x in own.items()})
        for name, xi in own.items():
            dual[name] += 0.5 * rho * (xi - xj[name])
            v[name] += 0.5 * (xi + xj[name]) / d - step * dual[name]
    return prox(v, step, {name: x.detach().clone() for name, x in own.items()})


def quadratic_prox(anchor: Params, curvature: float = 1.0) -> Prox:
    """Prox of ``f(x) = c/2 ||x - a||^2``: ``(c a + v/s) / (c + 1/s)``."""
    if curvature <= 0:
        raise ValueError(f"curvature must be > 0, got {curvature}")

    def prox(v: Model, step: float, start: Model | None = None) -> Model:
        return {n: (curvature * anchor[n] + v[n] / step) / (curvature + 1.0 / step) for n in v}

    return prox


def prox_from_gradient(
    grad: Callable[[Model], Model], lr: float, steps: int
) -> Prox:
    """An inexact prox from a gradient oracle: ``steps`` of gradient descent on
    ``f(x) + ||x - v||^2 / (2 s)`` from ``start`` (else ``v``); warm-started at the current model,
    ADMM's fixed point stays exact however few the steps (linearized ADMM when ``steps`` is 1)."""
    if lr <= 0 or steps < 1:
        raise ValueError(f"need lr > 0 and steps >= 1, got lr={lr}, steps={steps}")

    def prox(v: Model, step: float, start: Model | None = None) -> Model:
        x = {n: t.clone() for n, t in (start if start is not None else v).items()}
        for _ in range(steps):
            g = grad(x)
            x = {n: x[n] - lr * (g[n] + (x[n] - v[n]) / step) for n in x}
        return x

    return prox


class AdmmAggregator(FilteringAggregator):
    """ADMM as an aggregator. ``prox`` (context) is the local loss's prox oracle (every launcher
    hands the task's, :mod:`gossipml.tasks.prox`); then the prox IS the local optimisation and
    :attr:`solves_local_problem` tells the training loop to take no local optimizer steps (they
    would move the model off the ADMM iterate). Without a prox (an embedding application that
    passes none) the locally trained model stands in for the local loss,
    ``f_i(x) ~ 1/2 ||x - own||^2``, and local steps run as for any rule.

    Asynchronous mode: a contribution's ``round`` is the sender's ADMM version (its round), the
    own version is ``own_round`` when given, else this aggregator's step count. Every message
    must carry the sender's running sums (:meth:`outgoing_tensors` of that version, next to the
    model; a peer sends them, :meth:`outgoing_spec` says which): the duals are recomputed from
    them, so a version that never arrives costs nothing (module ``admm_async``).
    """

    def __init__(
        self, cfg: AggregationConfig, *, prox: Prox | None = None, num_samples: int = 0
    ) -> None:
        super().__init__(cfg, num_samples=num_samples)
        self.prox = prox
        self.state = AdmmState()
        self.async_state = AsyncAdmmState(history_limit=max(8, 4 * cfg.max_models))
        self._sums: dict[tuple[int, int], Model] = {}  # (sender, version) -> its running sums

    @property
    def solves_local_problem(self) -> bool:
        """True with a prox oracle: the training loop then skips its local optimizer steps."""
        return self.prox is not None

    @property
    def wants_every_version(self) -> bool:
        """Asynchronous ADMM pairs running sums by version: every held neighbour version (not
        only the newest) gives it more versions to pair with; none is required."""
        return self.cfg.asynchronous

    def _combines_alone(self) -> bool:
        return self.cfg.asynchronous

    def outgoing_spec(self, own: Params) -> Model:
        """The tensors every message carries next to the model (zeros of their dtype and shape):
        the running sums in asynchronous mode, none in synchronous mode."""
        if not self.cfg.asynchronous:
            return {}
        return {name: torch.zeros_like(own[n], dtype=torch.float64)
                for n, name in sum_names(own).items()}

    def outgoing_tensors(self, version: int, own: Params) -> Model:
        """What a message of own version ``version`` carrying ``own`` adds to it: the running
        sum ``S_i(version)`` (asynchronous mode; recorded, so the next steps pair with it)."""
        if not self.cfg.asynchronous:
            return {}
        total = record_own(self.async_state, version, own)
        if total is None:
            raise ValueError(f"version {version} is older than the history kept "
                             f"(newest {self.async_state.recorded}): send versions in order")
        return {name: total[n] for n, name in sum_names(own).items()}

    def aggregate(self, own: Params, received: Sequence[Contribution], self_weight: float, *,
                  own_round: int | None = None) -> Model:
        """As every rule; in asynchronous mode the running sums are taken off each contribution
        first (kept for the step if they fit the model: same names and shapes, finite)."""
        if not self.cfg.asynchronous:
            return super().aggregate(own, received, self_weight, own_round=own_round)
        like = {n: torch.empty(x.shape, dtype=torch.float64, device="meta")
                for n, x in own.items()}
        self._sums, stripped = {}, []
        for c in received:
            model, sums = split_sums(c.params)
            if sums and check_model(sums, like) is None:
                self._sums[(c.sender, c.round)] = sums
            stripped.append(replace(c, params=model))
        return super().aggregate(own, stripped, self_weight, own_round=own_round)

    def state_dict(self) -> dict[str, Any]:
        """A copy of the duals (and the asynchronous versions and iterates): later steps, which
        update duals in place, do not change a state already taken."""
        a = self.async_state
        return _cloned({"admm_duals": self.state.duals,
                        "admm_async": {"version": a.version, "recorded": a.recorded,
                                       "last_own": a.last_own, "own_sums": a.own_sums,
                                       "sums": a.sums, "duals": a.duals,
                                       "dual_version": a.dual_version,
                                       "newest": {j: [v, m] for j, (v, m) in a.newest.items()}}})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put back (a copy of) what :meth:`state_dict` returned."""
        state = _cloned(state)
        if state.get("admm_duals") is not None:
            self.state.duals = {int(k): v for k, v in state["admm_duals"].items()}
        saved = state.get("admm_async")
        if saved is not None:
            a = self.async_state
            a.version, a.recorded = int(saved["version"]), int(saved["recorded"])
            a.last_own = saved["last_own"]
            a.own_sums = {int(k): v for k, v in saved["own_sums"].items()}
            a.sums = {int(j): {int(v): m for v, m in per.items()}
                      for j, per in saved["sums"].items()}
            a.duals = {int(k): v for k, v in saved["duals"].items()}
            a.dual_version = {int(k): int(v) for k, v in saved["dual_version"].items()}
            a.newest = {int(j): (int(v), m) for j, (v, m) in saved["newest"].items()}

    def _combine(self, own, kept: Sequence[Contribution], self_weight, own_round):  # noqa: D102
        work = {n: x.detach().to(_work_dtype(x)) for n, x in own.items()}
        fresh = [(c.sender, c.round, {n: t.to(work[n]).clone() for n, t in c.params.items()})
                 for c in kept]
        if self.cfg.asynchronous:  # the running sums back next to each kept model
            sums = self._sums
            fresh = [(j, v, {**x, **{name: sums[(j, v)][n]
                                     for n, name in sum_names(x).items()}})
                     if (j, v) in sums else (j, v, x) for j, v, x in fresh]
        prox = self.prox or quadratic_prox(work)
        if self.cfg.asynchronous:
            if own_round is not None:
                self.async_state.version = own_round
            new = async_admm_step(work, fresh, self.async_state, self.cfg.rho, prox)
        else:
            new = admm_step(work, {j: x for j, _, x in fresh}, self.state, self.cfg.rho, prox)
        return {n: new[n].to(own[n].dtype) for n in own}


def admm_setup_problems(*, asynchronous: bool, pacing_mode: str, codec_spec: str, content: str,
                        topology_kind: str, topology_static: bool, topology_undirected: bool,
                        consensus_step: float, membership: bool, push_every_steps: int | None,
                        interval_steps: int, stream: bool, max_staleness: int = 0,
                        pull_every_steps: int | None = None) -> list[str]:
    """Why an experiment's other parts break ADMM's math (empty: none); each says what to use."""
    problems = []
    if codec_spec != "identity" or content != "params":
        problems.append(
            f"ADMM updates each edge's dual with the pair (x_i, x_j) that both ends must see "
            f"alike; [codec] spec = {codec_spec!r}, content = {content!r} hands each end another "
            "copy (lossy, or a CHOCO estimate rebuilt from deltas) and moves the fixed point off "
            'the optimum: use [codec] spec = "identity", content = "params"')
    if not topology_static or membership:
        problems.append(
            f"ADMM keeps one dual per edge of a fixed graph; topology {topology_kind!r}"
            f"{' with [membership]' if membership else ''} changes the edges as it runs: use a "
            "static undirected topology (ring, full, torus, or an edges file of 'a b' lines) "
            "without membership")
    elif not topology_undirected:
        problems.append(
            f"ADMM needs every edge both ways (both ends update its dual); topology "
            f"{topology_kind!r} is directed: use ring, full, torus, or an edges file of 'a b' "
            "lines")
    if not asynchronous and pacing_mode != "sync":
        problems.append(
            f"synchronous ADMM steps with every neighbour's model of the same round; [pacing] "
            f'mode = {pacing_mode!r} merges others: use mode = "sync", or set [aggregation] '
            'asynchronous = true (asynchronous ADMM, under mode "async" or "ssp")')
    if asynchronous and (pacing_mode in ("async", "backup")
                         or (pacing_mode == "ssp" and max_staleness > MAX_ADMM_STALENESS)):
        problems.append(
            f"asynchronous ADMM steps with neighbour versions up to the pacing's staleness "
            f"behind, and its duals then lag its iterates: [pacing] mode = {pacing_mode!r}"
            f"{f' with max_staleness = {max_staleness}' if pacing_mode == 'ssp' else ''} "
            f"leaves the lag unbounded or too long (4 digits peers at rho = 1 diverge with "
            f'max_staleness = 4): use mode = "ssp" with max_staleness <= {MAX_ADMM_STALENESS}, '
            'or "sync"')
    if consensus_step != 1.0:
        problems.append(f"ADMM's new model is its prox step; [peer] consensus_step = "
                        f"{consensus_step} would blend it with the old one: use 1.0")
    if push_every_steps is not None and push_every_steps != interval_steps:
        problems.append("ADMM sends its model once per round, after its step: leave [pacing] "
                        "push_every_steps unset (or equal to interval_steps)")
    if pull_every_steps is not None:
        problems.append("ADMM pairs each neighbour's model versions with its duals (the running "
                        "sums a push carries); a pulled model is an extra, unpaired version (it "
                        "would only be refused, as missing_tensor): leave [pacing] "
                        "pull_every_steps unset")
    if stream:
        problems.append("ADMM's prox is over a fixed local dataset; [data] stream has none: use "
                        'a fixed dataset, or rule = "mean" on a stream')
    return problems


def _cloned(value: Any) -> Any:
    """``value`` with every tensor in its dicts, lists and tuples cloned."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(v) for v in value)
    return value


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _build_admm(cfg: AggregationConfig, *, prox: Prox | None = None, num_samples: int = 0,
                **_: Any) -> AdmmAggregator:
    return AdmmAggregator(cfg, prox=prox, num_samples=num_samples)


register_rule("admm", _build_admm)
