"""The two ends of a peer's merge: which held model of each chosen sender enters the aggregate,
and how the aggregate goes back into the live model (with the consensus step). Pure: the
mailbox is only read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from gossipml.aggregation.base import Contribution
from gossipml.comm.mailbox import Mailbox

__all__ = ["contributions", "apply_aggregate", "kept_by", "Filtering"]


@runtime_checkable
class Filtering(Protocol):
    """An aggregator that drops some contributions (non-finite, wrong shape) before combining
    and names them: ``last_rejected`` is the last call's ``(sender, reason)`` pairs."""

    last_rejected: Any


def kept_by(aggregator: object, received: Sequence[Contribution]) -> list[Contribution]:
    """The contributions the aggregator's last call actually combined: ``received`` less the
    senders it rejected (all of them for a rule that filters nothing)."""
    if not isinstance(aggregator, Filtering):
        return list(received)
    dropped = {sender for sender, _ in aggregator.last_rejected}
    return [c for c in received if c.sender not in dropped]


def contributions(mailbox: Mailbox, senders: tuple[int, ...], r: int, take_newest: bool,
                  weights: Mapping[int, float]) -> list[Contribution]:
    """Each sender's round-``r`` model if held (it may already be a round ahead), or its newest
    (always so with ``take_newest``: async and SSP, so the network keeps its pace); senders with
    nothing, or only models older than one they sent and we refused, are left out."""
    newest = mailbox.snapshot()[0]
    refused = mailbox.refused_rounds()
    out = []
    for j in senders:
        held = (None if take_newest else mailbox.at_round(j, r)) or newest.get(j)
        if held is None or refused.get(j, -1) > held.round:
            continue
        out.append(Contribution(
            sender=j, round=held.round, params=held.params,
            weight=float(weights.get(j, 1.0 / (len(senders) + 1))),
            num_samples=int(held.info.get("num_samples", 0))))
    return out


def apply_aggregate(own: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor],
                    gamma: float) -> None:
    """Write the aggregate into the live tensors: ``x <- x + gamma (aggregate - x)``."""
    with torch.no_grad():
        for name, tensor in new.items():
            if gamma == 1.0:
                own[name].copy_(tensor)
            else:
                own[name].add_(tensor.to(own[name].dtype) - own[name], alpha=gamma)
