"""Shared fixtures: one torch thread, and a zmq context that is always torn down."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def zmq_context():
    """A fresh zmq context; every socket made from it is closed at the end (linger 0)."""
    import zmq

    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)
