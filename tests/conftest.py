"""Shared fixtures: one torch thread, a zmq context that is always torn down, free loopback
addresses, running peers on threads with a bound on time, and peers on an in-memory network
(real parts, real torch tensors, no sockets)."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import pytest
import torch

from gossipml.comm.memory import MemoryNetwork
from gossipml.config import ExperimentConfig
from gossipml.peer.peer import Peer

torch.set_num_threads(1)

RunThreads = Callable[[list[Callable[[], Any]], float], list[Any]]


@pytest.fixture
def zmq_context():
    """A fresh zmq context; every socket made from it is closed at the end (linger 0)."""
    import zmq

    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _loopback_peers(n: int) -> dict[int, str]:
    from gossipml.comm.addresses import free_ports

    return {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(free_ports(n))}


@pytest.fixture
def loopback_peers() -> Callable[[int], dict[int, str]]:
    """``loopback_peers(n)``: ``n`` tcp loopback addresses on ports free right now."""
    return _loopback_peers


def _run_threads(fns: list[Callable[[], Any]], timeout_s: float) -> list[Any]:
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def wrap(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    if any(t.is_alive() for t in threads):
        raise AssertionError(f"a peer thread did not finish within {timeout_s} s")
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def run_threads() -> RunThreads:
    """``run_threads(fns, timeout_s)``: each function on its own thread; their results; fails if
    one overruns or raises."""
    return _run_threads


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
