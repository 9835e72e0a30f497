"""One communication thread for many transports: delivery over real inproc and tcp sockets,
a failing peer ended alone, attach and detach, the context's socket allowance."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from gossipml.comm.config import TransportConfig
from gossipml.comm.hub import CommHub, sized_context
from gossipml.comm.transport import Outgoing, Transport


class Inbox:
    def __init__(self) -> None:
        self.senders: list[int | None] = []
        self.cond = threading.Condition()

    def __call__(self, sender, frames) -> None:
        with self.cond:
            self.senders.append(sender)
            self.cond.notify_all()

    def wait(self, n: int, timeout_s: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.senders) >= n, timeout=timeout_s)


def _ring(hub: CommHub, n: int, tag: str, **kw) -> tuple[list[Transport], list[Inbox]]:
    addr = {i: f"inproc://hub-{tag}-{i}" for i in range(n)}
    inboxes = [Inbox() for _ in range(n)]
    transports = [Transport(i, addr[i], {(i + 1) % n: addr[(i + 1) % n]}, TransportConfig(),
                            inboxes[i], hub=hub, **kw).start() for i in range(n)]
    return transports, inboxes


def _send_until(t: Transport, dest: int, inbox: Inbox, n: int) -> bool:
    """Resend until ``inbox`` holds ``n`` messages (IMMEDIATE drops what is sent too early)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        t.submit(Outgoing((dest,), lambda: [b"hello"]))
        if inbox.wait(n, 0.1):
            return True
    return False


def _comm_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("gossipml-")]


def test_fifty_transports_on_one_thread_deliver_to_each_other(zmq_context):
    with CommHub(zmq_context) as hub:
        transports, inboxes = _ring(hub, 50, "fifty")
        try:
            # Execute: every transport sends to its successor
            assert all(_send_until(t, (i + 1) % 50, inboxes[(i + 1) % 50], 1)
                       for i, t in enumerate(transports))
            # Assert: one thread served them all, each message came from the predecessor
            assert _comm_threads() == ["gossipml-comm-hub"] and hub.served == 50
            assert all(inboxes[i].senders[0] == (i - 1) % 50 for i in range(50))
            assert all(t.alive for t in transports)
        finally:
            for t in transports:
                t.close()
        assert hub.served == 0 and not any(t.alive for t in transports)


def test_a_peer_whose_serving_raises_is_ended_alone(zmq_context):
    boom = threading.Event()

    def tick() -> None:
        if boom.is_set():
            raise RuntimeError("a bug in this peer's periodic work")

    with CommHub(zmq_context, tick_interval_s=0.02) as hub:
        transports, inboxes = _ring(hub, 3, "fail")
        bad = Transport(9, "inproc://hub-fail-bad", {}, TransportConfig(), Inbox(), hub=hub,
                        on_tick=tick).start()
        try:
            boom.set()
            deadline = time.monotonic() + 5
            while bad.alive and time.monotonic() < deadline:
                time.sleep(0.02)
            # Assert: that transport is dead with its reason; the hub and the others go on
            assert not bad.alive and "periodic work" in repr(bad.error)
            assert hub.alive and hub.served == 3
            assert _send_until(transports[0], 1, inboxes[1], 1)
        finally:
            for t in (*transports, bad):
                t.close()


def test_hub_serves_tcp_transports_and_refuses_a_taken_address(zmq_context):
    with CommHub(zmq_context) as hub:
        inbox = Inbox()
        b = Transport(1, "tcp://127.0.0.1:0", {}, TransportConfig(), inbox, hub=hub).start()
        a = Transport(0, "tcp://127.0.0.1:0", {1: b.address}, TransportConfig(), Inbox(),
                      hub=hub).start()
        try:
            assert _send_until(a, 1, inbox, 1) and inbox.senders[0] == 0
            taken = Transport(2, b.address, {}, TransportConfig(), Inbox(), hub=hub)
            with pytest.raises(RuntimeError, match="cannot bind"):
                taken.start()
            assert hub.served == 2
        finally:
            a.close(), b.close()


def test_a_stopped_hub_refuses_new_transports_and_ends_the_attached(zmq_context):
    hub = CommHub(zmq_context).start()
    transports, _ = _ring(hub, 2, "stop")
    hub.close()
    # Assert: closing the hub ended its transports; a new one cannot attach
    assert not any(t.alive for t in transports)
    with pytest.raises(RuntimeError, match="not running"):
        Transport(5, "inproc://hub-stop-late", {}, TransportConfig(), Inbox(), hub=hub).start()
    for t in transports:
        t.close(timeout_s=0.5)  # already ended: returns at once


def test_sized_context_allows_more_than_libzmq_default_sockets():
    ctx = sized_context(3000)
    try:
        sockets = [ctx.socket(zmq.DEALER) for _ in range(1500)]  # the default cap is 1,023
        for s in sockets:
            s.close(linger=0)
    finally:
        ctx.term()
    with pytest.raises(ValueError, match="ulimit -n"):
        sized_context(10**9)
