"""The two ends of a peer's merge: which held model of each chosen sender enters the aggregate,
and how the aggregate goes back into the live model (with the consensus step); and a backup
peer's catch-up, which merges its way to the round its neighbours went on to."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from gossipml.aggregation.base import Contribution
from gossipml.comm.mailbox import Mailbox

if TYPE_CHECKING:
    from gossipml.peer import Peer

__all__ = ["contributions", "apply_aggregate", "catch_up"]


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


def catch_up(peer: "Peer", pacing: Any) -> tuple[list[int], list[int], list[int]]:
    """Backup with catch-up (``BackupPacing.catch_up``): when the first k neighbours finished the
    peer's round without it, jump to theirs, merging their newer models; mid-round, first send
    the merged model as this round's, for whoever still waits on it. Returns the rounds skipped
    from the current clock on (the loop runs none of them; at a round's end the current clock is
    a round not begun), the senders merged and their staleness."""
    if not getattr(pacing, "catch_up_enabled", False):
        return [], [], []
    view = peer._view(peer.clock, time.monotonic())
    target = pacing.catch_up(view)
    if target is None:
        return [], [], []
    newer = tuple(j for j in peer.topology.in_neighbors(peer.id, target)
                  if view.arrived_rounds.get(j, -1) >= peer.clock)
    merged, staleness, _ = peer._merge(newer, target - 1, take_newest=True)
    if peer.local_steps % peer.interval_steps:
        peer._publish(peer.clock, peer.topology.out_neighbors(peer.id, peer.clock))
    skipped = list(range(peer.clock, target))
    peer.clock = target
    return skipped, merged, staleness
