"""Unit-test fixtures: peers on an in-memory network (real parts, real torch tensors, no
sockets), shared by the peer tests and the key audit."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import torch

from gossipml.comm.memory import MemoryNetwork
from gossipml.config import ExperimentConfig
from gossipml.peer.peer import Peer


def _linear(fill: float) -> torch.nn.Linear:
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(fill)
    return model


@pytest.fixture
def linear_model() -> Callable[[float], torch.nn.Linear]:
    """``linear_model(fill)``: a 3 -> 2 linear model whose every weight and bias is ``fill``."""
    return _linear


@pytest.fixture
def memory_peers() -> Iterator[Callable[..., list[Peer]]]:
    """``make(fills, config_dict)``: one started Peer (a 3 -> 2 linear model filled with its
    fill) per fill on one MemoryNetwork; all closed afterwards."""
    made: list[Peer] = []

    def make(fills: list[float], config: dict[str, Any], *,
             network: MemoryNetwork | None = None) -> list[Peer]:
        net = network or MemoryNetwork()
        cfg = ExperimentConfig.from_dict(config)
        addresses = {i: f"memory://{i}" for i in range(len(fills))}
        peers = [Peer(_linear(f), cfg, id=i, peers=addresses, transport_factory=net.transport)
                 for i, f in enumerate(fills)]
        made.extend(peers)
        return [p.start() for p in peers]

    yield make
    for peer in made:
        peer.close()
