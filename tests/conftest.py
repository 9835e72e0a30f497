"""Shared fixtures: one torch thread, a zmq context that is always torn down, free loopback
addresses, and running peers on threads with a bound on time."""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest
import torch

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
