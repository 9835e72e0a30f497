"""Weight schemes for averaging: uniform, topology mixing weights, sample counts, model age.

Each returns one weight per model, own model first, summing to 1.
"""

from __future__ import annotations

from typing import Sequence

from gossipml.aggregation.base import Contribution

__all__ = [
    "uniform_weights", "topology_weights", "sample_weights", "age_weights", "scheme_weights",
    "mixing_scheme",
]

#: ``[topology] weights`` -> the scheme a merge uses when ``[aggregation] weights`` is left out.
_FROM_TOPOLOGY: dict[str, str] = {"uniform": "uniform", "metropolis": "metropolis"}


def mixing_scheme(aggregation_weights: str, topology_weights: str) -> str:
    """The weight scheme a merge uses: the one place where ``[aggregation] weights`` and
    ``[topology] weights`` meet.

    ``[aggregation] weights = "topology"`` (the default) follows ``[topology] weights``:
    ``"metropolis"`` merges with the topology's row ``w_ij = 1/(1+max(d_i,d_j))``, the mass of
    neighbours that did not arrive going to the own model; ``"uniform"`` gives own and every
    merged model ``1/(m+1)``. Any other ``[aggregation] weights`` (``uniform``, ``samples``,
    ``age``) wins over the topology. ``"metropolis"`` in ``[aggregation]`` names the topology's
    row, so it needs ``[topology] weights = "metropolis"``: anything else raises.
    """
    if topology_weights not in _FROM_TOPOLOGY:
        raise ValueError(f"[topology] weights must be one of {sorted(_FROM_TOPOLOGY)}, "
                         f"got {topology_weights!r}")
    if aggregation_weights == "topology":
        return _FROM_TOPOLOGY[topology_weights]
    if aggregation_weights == "metropolis" and topology_weights != "metropolis":
        raise ValueError('[aggregation] weights = "metropolis" merges with the topology\'s '
                         'mixing row, but [topology] weights = "uniform": set [topology] weights '
                         '= "metropolis" and leave [aggregation] weights out (it follows the '
                         'topology), or set [aggregation] weights = "uniform"')
    return aggregation_weights


def _normalized(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if any(w < 0 for w in weights) or not total > 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    return [float(w) / total for w in weights]


def uniform_weights(n_models: int) -> list[float]:
    """``1 / n`` for each of the ``n`` models."""
    if n_models < 1:
        raise ValueError("need at least one model")
    return [1.0 / n_models] * n_models


def topology_weights(self_weight: float, neighbor_weights: Sequence[float]) -> list[float]:
    """The topology's mixing weights (e.g. Metropolis-Hastings, ``w_ij = 1/(1+max(d_i,d_j))``,
    Xiao & Boyd 2004): ``[w_ii, w_ij...]``; the mass of neighbours that did not arrive,
    ``1 - w_ii - sum_j w_ij``, goes to the own model, which keeps the row stochastic."""
    total = float(self_weight) + float(sum(neighbor_weights))
    if total <= 1.0:
        return [float(self_weight) + (1.0 - total)] + [float(w) for w in neighbor_weights]
    return _normalized([self_weight, *neighbor_weights])


def sample_weights(own_samples: int, neighbor_samples: Sequence[int]) -> list[float]:
    """``n_i / sum_j n_j`` by local dataset size (FedAvg, McMahan et al. 2017).

    An unknown own count (0) counts as the mean of the neighbours'; all unknown means uniform.
    """
    counts = [float(c) for c in neighbor_samples]
    if own_samples > 0:
        own = float(own_samples)
    else:
        known = [c for c in counts if c > 0]
        own = sum(known) / len(known) if known else 0.0
    everything = [own, *counts]
    if sum(everything) <= 0:
        return uniform_weights(len(everything))
    return _normalized(everything)


def age_weights(
    base_weights: Sequence[float], staleness_rounds: Sequence[int], exponent: float = 0.5
) -> list[float]:
    """``w_j ~ b_j (1 + tau_j)^(-a)``: polynomial staleness decay for asynchronous gossip (FedAsync,
    Xie, Koyejo & Gupta 2019); ``tau_j >= 0`` is how many rounds model j is behind, own is 0."""
    if len(base_weights) != len(staleness_rounds):
        raise ValueError("need one staleness per weight (own model first, with staleness 0)")
    if exponent < 0:
        raise ValueError(f"age exponent must be >= 0, got {exponent}")
    return _normalized([
        float(b) * (1.0 + max(0, int(tau))) ** (-exponent)
        for b, tau in zip(base_weights, staleness_rounds)
    ])


def scheme_weights(
    scheme: str,
    received: Sequence[Contribution],
    self_weight: float,
    *,
    own_samples: int = 0,
    own_round: int | None = None,
    age_exponent: float = 0.5,
) -> list[float]:
    """Weights for ``[own, *received]`` under ``scheme`` (uniform/metropolis/samples/age; a peer
    resolves ``[aggregation] weights = "topology"`` with :func:`mixing_scheme` first).

    "metropolis" takes ``self_weight`` and each contribution's ``weight``: the row the caller
    passes (the topology's), missing mass to the own model; an unresolved "topology" is uniform,
    as under the default ``[topology] weights``;
    "age" decays the topology weights by staleness against ``own_round`` (or, when unknown, the
    newest round among the received models).
    """
    if scheme in ("uniform", "topology"):  # "topology" unresolved: [topology]'s default, uniform
        return uniform_weights(len(received) + 1)
    if scheme == "metropolis":
        return topology_weights(self_weight, [c.weight for c in received])
    if scheme == "samples":
        return sample_weights(own_samples, [c.num_samples for c in received])
    if scheme == "age":
        base = topology_weights(self_weight, [c.weight for c in received])
        ref = own_round if own_round is not None else max((c.round for c in received), default=0)
        return age_weights(base, [0] + [ref - c.round for c in received], age_exponent)
    raise ValueError(f"unknown weight scheme {scheme!r}; use uniform, metropolis, samples or age")
