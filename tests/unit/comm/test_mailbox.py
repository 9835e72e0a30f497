"""The mailbox's liveness: a goodbye marks a sender gone until it is heard from again."""

from __future__ import annotations

import torch

from gossipml.comm.mailbox import Mailbox


def test_a_model_from_a_sender_marked_done_brings_it_back():
    """A forged goodbye (in the clear anyone can claim an id) must not silence a neighbour
    whose models keep coming: since regular heartbeats go only where nothing else was sent,
    a model may be all a live neighbour sends."""
    box = Mailbox()
    box.heard(1, 3, done=True)
    assert box.snapshot()[3] == {1}
    box.put(1, 4, {"w": torch.zeros(2)}, {})
    assert box.snapshot()[3] == set()
    box.heard(1, 5, done=True)  # a real goodbye still counts
    box.refused(1, 6)  # as does any later message, refused or not
    assert box.snapshot()[3] == set()
