"""Fixtures of the key audit: payload bytes, peers on an in-memory network, tiny digits tasks."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import torch

from gossipml.comm.memory import MemoryNetwork
from gossipml.config import ExperimentConfig
from gossipml.peer.peer import Peer


def _payload_bytes(payload: Any) -> bytes:
    """Every buffer of a codec payload, concatenated."""
    return b"".join(bytes(memoryview(b).cast("B")) for b in payload.buffers)


@pytest.fixture
def wire_bytes() -> Callable[[Any, torch.Tensor], bytes]:
    """``wire_bytes(codec, x)``: the bytes of codec's first payload for ``x`` (plus its meta)."""

    def encode(codec: Any, x: torch.Tensor) -> bytes:
        payload, _ = codec.encode(x, None)
        return repr(sorted(payload.meta.items())).encode() + _payload_bytes(payload)

    return encode


def _linear(fill: float) -> torch.nn.Linear:
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(fill)
    return model


@pytest.fixture
def memory_peers() -> Iterator[Callable[..., list[Peer]]]:
    """``make(fills, config_dict)``: started Peers (3 -> 2 linear models filled with ``fills``)
    on one MemoryNetwork; all closed afterwards."""
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


@pytest.fixture(scope="session")
def digits() -> Any:
    """scikit-learn's digits, loaded once for every task built in the audit."""
    from gossipml.data import load_dataset

    return load_dataset("digits")
