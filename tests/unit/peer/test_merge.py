"""Which held model of each sender is merged, and how the aggregate enters the live model."""

from __future__ import annotations

import pytest
import torch

from gossipml.comm.mailbox import Mailbox
from gossipml.peer.merge import apply_aggregate, contributions


def _params(fill: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 2), fill)}


@pytest.fixture
def mailbox() -> Mailbox:
    box = Mailbox(rounds_kept=3)
    for r in (3, 4, 5):  # sender 1 is two rounds ahead of round 3; its 3 is still held
        box.put(1, r, _params(float(r)), {"num_samples": 10})
    box.put(2, 2, _params(2.0), {})  # sender 2 is behind
    return box


def test_round_r_model_is_taken_when_held_else_the_newest(mailbox):
    got = contributions(mailbox, (1, 2, 3), 3, False, {1: 0.25, 2: 0.5})
    assert [(c.sender, c.round, c.weight, c.num_samples) for c in got] == [
        (1, 3, 0.25, 10), (2, 2, 0.5, 0)]  # nothing from 3: left out
    assert float(got[0].params["w"][0, 0]) == 3.0


def test_take_newest_takes_each_senders_newest(mailbox):
    got = contributions(mailbox, (1, 2), 3, True, {})
    assert [(c.sender, c.round) for c in got] == [(1, 5), (2, 2)]
    assert all(c.weight == pytest.approx(1 / 3) for c in got)  # no weights: 1 / (senders + 1)


def test_a_sender_whose_newer_model_was_refused_is_left_out(mailbox):
    mailbox.refused(2, 3)  # sender 2 delivered round 3, and it was refused: its round 2 is stale
    got = contributions(mailbox, (1, 2), 3, False, {})
    assert [c.sender for c in got] == [1]


def test_apply_aggregate_copies_or_moves_by_the_consensus_step():
    own = {"w": torch.zeros(2, 2)}
    apply_aggregate(own, {"w": torch.full((2, 2), 4.0)}, 1.0)
    assert torch.equal(own["w"], torch.full((2, 2), 4.0))
    apply_aggregate(own, {"w": torch.zeros(2, 2, dtype=torch.float64)}, 0.25)  # x + 0.25 (0 - x)
    assert own["w"].dtype == torch.float32 and torch.equal(own["w"], torch.full((2, 2), 3.0))
