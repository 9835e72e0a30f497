"""A communication thread that dies anyway (a bug, not an input: inputs are contained) stops its
peer with an error that names it, on real sockets; it never leaves a peer training deaf."""

from __future__ import annotations

import time

import pytest
import torch

from gossipml.config import ExperimentConfig


class Bug(Exception):
    """Stands for a programming error on the communication thread."""


def _kill_comm_thread(peer) -> None:
    def boom() -> None:
        raise Bug("injected on the communication thread")

    peer.transport.call(boom)  # "call" runs it on the thread, outside any handler's containment
    deadline = time.monotonic() + 5
    while peer.transport.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not peer.transport.alive


def test_a_dead_communication_thread_stops_step_exchange_and_the_wait(loopback_peers):
    from gossipml.peer import Peer

    cfg = ExperimentConfig.from_dict({"pacing": {"mode": "sync", "timeout_s": 30.0}})
    addresses = loopback_peers(2)
    with Peer(torch.nn.Linear(3, 2), cfg, id=0, peers=addresses) as peer:
        assert peer.transport.alive and peer.transport.error is None
        _kill_comm_thread(peer)
        assert isinstance(peer.transport.error, Bug)
        for call in (peer.step, peer.exchange, lambda: peer.wait_for_neighbors(30.0)):
            t0 = time.monotonic()
            with pytest.raises(RuntimeError, match=r"peer 0: communication thread died: Bug\("):
                call()
            assert time.monotonic() - t0 < 1.0  # at once, not after a 30 s wait


def test_a_thread_dying_mid_wait_ends_the_round_with_the_error(loopback_peers):
    from gossipml.peer import Peer

    cfg = ExperimentConfig.from_dict({"pacing": {"mode": "sync", "timeout_s": 30.0}})
    addresses = loopback_peers(2)
    with Peer(torch.nn.Linear(3, 2), cfg, id=0, peers=addresses) as peer:
        peer.transport.call(lambda: time.sleep(0.3) or (_ for _ in ()).throw(Bug("mid-wait")))
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="communication thread died"):
            peer.exchange()  # waits for peer 1 (never started) until the thread dies
        assert time.monotonic() - t0 < 5.0
