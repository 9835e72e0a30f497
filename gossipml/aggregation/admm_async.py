"""Asynchronous decentralized ADMM whose edge duals survive lost, overwritten and late versions.

Synchronous ADMM (module ``admm``) adds ``rho/2 (x_i^(t) - x_j^(t))`` to the dual of edge (i, j)
at every round ``t``, so after version ``T`` the dual is a difference of running sums,

    lambda_ij(T) = rho/2 (S_i(T) - S_j(T)),     S_i(T) = sum_{t <= T} x_i^(t),

and ``lambda_ij(T) = -lambda_ji(T)`` exactly: that antisymmetry is what makes ADMM's fixed point
the optimum (``sum_i grad f_i = 0``). Accumulating the increments at each end instead, from the
versions each end happened to receive, breaks it for good as soon as one version goes missing
(a send skipped for want of a free buffer, a version overwritten in the mailbox, one merged
late): a 4-peer digits run at rho = 1 then ends 6e-4 to 4e-2 (relative loss) off the optimum
after 5-8 lost versions out of ~480.

So every message carries, next to the model ``x_j^(v)``, the sender's running sum ``S_j(v)``
(float64 tensors named ``SUM_PREFIX + name``). A peer keeps its own recent sums and, per
neighbour, the sums it received; its dual for the edge is recomputed, not accumulated, at the
newest version ``T <= own version`` for which it holds both sums. A lost version then costs
nothing: the next one's sum contains it. Both ends compute their duals from the same two
floating-point sums, so at any common ``T`` they are exactly opposite; two ends at different
``T`` differ by increments that vanish at consensus (the usual asynchronous-ADMM staleness,
Wei and Ozdaglar, "On the O(1/k) convergence of asynchronous distributed ADMM", 2013, and
Chang et al., "Asynchronous distributed ADMM for large-scale optimization", 2016). The primal step
is module ``admm``'s with the newest model held for each neighbour. The sums are float64 so that
their rounding stays far below the optimum's tolerance however long a run lasts.

Own versions are the peer's rounds: a version the peer stepped through without sending or
merging kept its model, so the sum is filled with the last model known (exact for ADMM with a
prox, whose model changes only in its step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from gossipml.aggregation.base import Model

__all__ = ["Prox", "AsyncAdmmState", "async_admm_step", "record_own", "split_sums",
           "sum_names", "SUM_PREFIX", "edge_dual"]

Params = Mapping[str, torch.Tensor]
#: ``prox(v, step, start)`` -> ``argmin_x f(x) + ||x - v||^2 / (2 step)``; ``start`` is the peer's
#: current model, where an inexact (iterative) prox begins (exact ones ignore it).
Prox = Callable[[Model, float, Model], Model]
#: Name prefix of the running-sum tensors a message carries next to the model's.
SUM_PREFIX = "admm.sum/"


@dataclass
class AsyncAdmmState:
    """Own version and recent running sums, neighbours' received sums, newest models, duals."""

    history_limit: int = 64  # sums kept per peer (own, and per neighbour); oldest dropped
    version: int = 0  # the own version the next step is at
    recorded: int = -1  # newest own version in ``own_sums``
    last_own: Model | None = None  # the model at the versions after ``recorded``
    own_sums: dict[int, Model] = field(default_factory=dict)
    sums: dict[int, dict[int, Model]] = field(default_factory=dict)
    newest: dict[int, tuple[int, Model]] = field(default_factory=dict)
    duals: dict[int, Model] = field(default_factory=dict)
    dual_version: dict[int, int] = field(default_factory=dict)


def sum_names(names: Sequence[str] | Params) -> dict[str, str]:
    """Model tensor name -> the name its running sum travels under."""
    return {n: SUM_PREFIX + n for n in names}


def split_sums(params: Params) -> tuple[Model, Model]:
    """A received tensor map split into (the model, its running sums keyed by model names)."""
    model = {n: t for n, t in params.items() if not n.startswith(SUM_PREFIX)}
    sums = {n[len(SUM_PREFIX):]: t for n, t in params.items() if n.startswith(SUM_PREFIX)}
    return model, sums


def record_own(state: AsyncAdmmState, t: int, own: Params) -> Model | None:
    """``S_i(t)``, adding ``own`` as version ``t`` (and the last known model for versions skipped
    since the last one recorded); None for a version older than the history kept."""
    if t <= state.recorded:
        return state.own_sums.get(t)
    total = (state.own_sums[state.recorded] if state.recorded in state.own_sums
             else {n: torch.zeros_like(x, dtype=torch.float64) for n, x in own.items()})
    for u in range(state.recorded + 1, t):
        filler = own if state.last_own is None else state.last_own
        total = {n: total[n] + filler[n].double() for n in total}
        state.own_sums[u] = total
    total = {n: total[n] + own[n].double() for n in total}
    state.own_sums[t] = total
    state.recorded = t
    state.last_own = {n: x.detach().clone() for n, x in own.items()}
    _bound(state.own_sums, state.history_limit)
    return total


def edge_dual(own_sum: Params, their_sum: Params, rho: float) -> Model:
    """``lambda_ij(T) = rho/2 (S_i(T) - S_j(T))``: exactly ``-lambda_ji(T)``."""
    return {n: 0.5 * rho * (own_sum[n] - their_sum[n]) for n in own_sum}


def _update_dual(state: AsyncAdmmState, j: int, rho: float) -> None:
    """Recompute edge (i, j)'s dual at the newest version both sums are held for."""
    held = state.sums.get(j, {})
    common = [v for v in held if v <= state.version and v in state.own_sums]
    if not common:
        return  # keep the dual of an older common version (zero before the first)
    t = max(common)
    if t > state.dual_version.get(j, -1):
        state.duals[j] = edge_dual(state.own_sums[t], held[t], rho)
        state.dual_version[j] = t
    for v in [v for v in held if v < t]:  # older sums are never needed again
        del held[v]


def async_admm_step(
    own: Params,
    arrivals: Sequence[tuple[int, int, Params]],
    state: AsyncAdmmState,
    rho: float,
    prox: Prox,
) -> Model:
    """One asynchronous ADMM step at own version ``state.version``; ``arrivals`` are
    ``(sender, version, tensors)`` with the sender's running sums under ``SUM_PREFIX`` names (a
    message without them updates only the newest model held)."""
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    record_own(state, state.version, own)
    for sender, version, params in arrivals:
        model, sums = split_sums(params)
        if sums:
            held = state.sums.setdefault(sender, {})
            held[version] = {n: s.double() for n, s in sums.items()}
            _bound(held, state.history_limit)
        if sender not in state.newest or version >= state.newest[sender][0]:
            state.newest[sender] = (version, model)
    for j in state.newest:
        _update_dual(state, j, rho)
    state.version += 1
    if not state.newest:
        return {n: x.clone() for n, x in own.items()}
    d = len(state.newest)
    step = 1.0 / (rho * d)
    v = {n: torch.zeros_like(x) for n, x in own.items()}
    for j, (_, x_j) in state.newest.items():
        dual = state.duals.get(j)
        for name, x_i in own.items():
            v[name] += 0.5 * (x_i + x_j[name]) / d
            if dual is not None:
                v[name] -= (step * dual[name]).to(x_i.dtype)
    new = prox(v, step, {n: x.clone() for n, x in own.items()})
    state.last_own = {n: x.detach().clone() for n, x in new.items()}  # until recorded again
    return new


def _bound(versions: dict[int, Model], limit: int) -> None:
    while len(versions) > limit:
        del versions[min(versions)]
