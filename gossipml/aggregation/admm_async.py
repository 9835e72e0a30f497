"""Asynchronous decentralized ADMM: step with the newest neighbour values, duals matched by version.

Using stale values in the dual update at both ends of an edge breaks the antisymmetry
``lambda_ij = -lambda_ji`` that makes ADMM's fixed point the optimum (a 4-peer quadratic then ends
0.2-1.9 away from it). So here the dual increment for version ``t`` of an edge is always
``rho/2 (x_i^(t) - x_j^(t))``, the same pair at both ends: a peer keeps its own recent iterates
and the neighbour versions it has not matched yet, and matches versions up to
``min(own version, newest neighbour version)``. The primal step uses the newest neighbour value
(module ``admm``'s update otherwise). Every version must arrive (in order or not) for exactness;
a missed version is filled with the next newer one received, which is an approximation (a peer
hands the aggregator every held version: ``wants_every_version``). Own versions the peer stepped
through without calling the aggregator (nothing arrived) kept the model, so the next call's model
stands for them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from gossipml.aggregation.base import Model

__all__ = ["Prox", "AsyncAdmmState", "async_admm_step"]

Params = Mapping[str, torch.Tensor]
#: ``prox(v, step, start)`` -> ``argmin_x f(x) + ||x - v||^2 / (2 step)``; ``start`` is the peer's
#: current model, where an inexact (iterative) prox begins (exact ones ignore it).
Prox = Callable[[Model, float, Model], Model]


@dataclass
class AsyncAdmmState:
    """Own version, own recent iterates, unmatched neighbour versions, matched version per edge."""

    history_limit: int = 64  # own iterates / neighbour versions kept per edge (oldest dropped)
    version: int = 0
    duals: dict[int, Model] = field(default_factory=dict)
    own_history: dict[int, Model] = field(default_factory=dict)
    pending: dict[int, dict[int, Model]] = field(default_factory=dict)
    matched: dict[int, int] = field(default_factory=dict)
    newest: dict[int, tuple[int, Model]] = field(default_factory=dict)


def _zeros(like: Params) -> Model:
    return {n: torch.zeros_like(x) for n, x in like.items()}


def _match_duals(state: AsyncAdmmState, j: int, rho: float, like: Params) -> None:
    """Apply ``rho/2 (x_i^(t) - x_j^(t))`` for every version not yet matched on edge (i, j)."""
    versions = state.pending.get(j, {})
    if not versions:
        return
    upto = min(state.version, max(versions))
    dual = state.duals.setdefault(j, _zeros(like))
    for t in range(state.matched.get(j, -1) + 1, upto + 1):
        x_i = state.own_history.get(t, state.own_history[min(state.own_history)])
        x_j = versions[min(b for b in versions if b >= t)]  # the version, or the next one (fill)
        for name in dual:
            dual[name] += 0.5 * rho * (x_i[name] - x_j[name])
    if upto > state.matched.get(j, -1):
        state.matched[j] = upto
    for b in [b for b in versions if b <= upto]:
        del versions[b]


def async_admm_step(
    own: Params,
    arrivals: Sequence[tuple[int, int, Params]],
    state: AsyncAdmmState,
    rho: float,
    prox: Prox,
) -> Model:
    """One asynchronous ADMM step at a peer; ``arrivals`` are ``(sender, version, x_j)``."""
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    mine = {n: x.clone() for n, x in own.items()}
    if state.own_history:  # versions stepped without a call kept the model: they equal this one
        for t in range(max(state.own_history) + 1, state.version):
            state.own_history[t] = mine
    state.own_history[state.version] = mine
    for sender, version, params in arrivals:
        state.pending.setdefault(sender, {})[version] = dict(params)
        if sender not in state.newest or version >= state.newest[sender][0]:
            state.newest[sender] = (version, dict(params))
    for j in state.newest:
        _match_duals(state, j, rho, own)
        _bound(state.pending.get(j, {}), state.history_limit)
    # own iterates are dropped by age only: one matched by every neighbour heard so far is still
    # needed by a neighbour not heard yet (its first versions pair with our first ones)
    _bound(state.own_history, state.history_limit)
    state.version += 1
    if not state.newest:
        return {n: x.clone() for n, x in own.items()}
    d = len(state.newest)
    step = 1.0 / (rho * d)
    v = _zeros(own)
    for j, (_, x_j) in state.newest.items():
        dual = state.duals.setdefault(j, _zeros(own))
        for name, x_i in own.items():
            v[name] += 0.5 * (x_i + x_j[name]) / d - step * dual[name]
    return prox(v, step, {n: x.clone() for n, x in own.items()})


def _bound(versions: dict[int, Model], limit: int) -> None:
    while len(versions) > limit:
        del versions[min(versions)]
