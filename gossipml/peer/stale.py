"""Stale correction: merge a neighbour's old model as its difference from our own model then.

Averaging a model that is ``k`` rounds old pulls this peer back by its weight times the progress
made in those ``k`` rounds, since it carries none of it (asynchronous gossip and SSP merge such
models on purpose, so the network keeps its pace). With ``[pacing] stale_correction`` a model a
neighbour sent at round ``k`` while this peer is at round ``r > k`` enters the aggregate as

    x_j(k) + (x_i(r) - x_i(k))

where ``x_i(k)`` is this peer's own model as it stood at its round-``k`` exchange: the
neighbour's disagreement with us at its own time, applied to where we are now. Models of the
current round or ahead merge as they are, so synchronous rounds are unchanged; a model older
than the kept history (``window`` rounds) also merges as it is, and is counted. The history is
``window`` preallocated copies of the exchanged state, written in place each round. It is not
checkpointed: after a resume the first stale models merge as they are until it refills.

It pays with a decaying learning rate and costs at a constant one (figures:
docs/results/bench_pacing.md): keeping the own progress since a stale model's round at full
weight keeps that progress's SGD noise unaveraged too, which costs more than the rollback while
the rate stays high. So it is off by default; turn it on with a decaying rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch

from gossipml.aggregation.base import Contribution

__all__ = ["StaleCorrection"]


class StaleCorrection:
    """This peer's own exchanged state at each of its last ``window`` rounds, and the correction
    of stale contributions against it."""

    def __init__(self, params: Mapping[str, torch.Tensor], window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 round, got {window}")
        self.window = window
        self._slots = [{k: torch.empty_like(v) for k, v in params.items()}
                       for _ in range(window)]
        self._round_of: list[int | None] = [None] * window
        self.corrected = 0  # contributions merged as a difference
        self.too_old = 0  # stale contributions older than the history, merged as they are

    def record(self, r: int, params: Mapping[str, torch.Tensor]) -> None:
        """Keep ``params`` (the state this peer exchanges) as its round-``r`` model."""
        slot = r % self.window
        with torch.no_grad():
            for k, v in params.items():
                self._slots[slot][k].copy_(v)
        self._round_of[slot] = r

    def at(self, r: int) -> Mapping[str, torch.Tensor] | None:
        """This peer's round-``r`` model if it is still held."""
        slot = r % self.window
        return self._slots[slot] if self._round_of[slot] == r else None

    def correct(self, own: Mapping[str, torch.Tensor], contribs: Sequence[Contribution],
                r: int) -> tuple[list[Contribution], list[int]]:
        """``contribs`` with each one older than ``r`` replaced by its correction against
        ``own`` (this peer's model now); and the senders corrected."""
        out, corrected = [], []
        for c in contribs:
            past = self.at(c.round) if c.round < r else None
            if c.round < r and past is None:
                self.too_old += 1
            if past is None or set(past) != set(c.params):
                out.append(c)
                continue
            with torch.no_grad():
                params = {k: (c.params[k].to(own[k].dtype) + own[k]).sub_(past[k]) for k in own}
            out.append(dataclasses.replace(c, params=params))
            corrected.append(c.sender)
        self.corrected += len(corrected)
        return out, corrected
