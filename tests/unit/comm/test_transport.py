"""The communication thread over real sockets: delivery, no blocking on a dead peer, emulation."""

from __future__ import annotations

import threading
import time


from gossipml.comm.config import TransportConfig
from gossipml.comm.transport import Outgoing, Transport, parse_routing_id, routing_id


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[int | None, list[bytes]]] = []
        self.cond = threading.Condition()

    def __call__(self, sender, frames) -> None:
        with self.cond:
            self.items.append((sender, [bytes(f.buffer) for f in frames]))
            self.cond.notify_all()

    def wait(self, n: int, timeout_s: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.items) >= n, timeout=timeout_s)


def _pair(ctx, cfg=TransportConfig(), policy=None):
    inbox_b = Inbox()
    b = Transport(1, "tcp://127.0.0.1:0", {}, cfg, inbox_b, context=ctx).start()
    a = Transport(0, "tcp://127.0.0.1:0", {1: b.address}, cfg, Inbox(), context=ctx,
                  link_policy=policy).start()
    return a, b, inbox_b


def test_routing_id_round_trip():
    assert parse_routing_id(routing_id(17)) == 17
    assert parse_routing_id(b"\x00\x01random") is None
    assert parse_routing_id(b"gml:notanint") is None


def test_delivers_multipart_and_reports_done(zmq_context):
    a, b, inbox = _pair(zmq_context)
    done = threading.Event()
    try:
        big = bytes(range(256)) * 4096  # 1 MiB
        deadline = time.monotonic() + 5
        while not inbox.items and time.monotonic() < deadline:  # IMMEDIATE: wait for connect
            a.submit(Outgoing((1,), lambda: [b"head", big], on_done=done.set))
            inbox.wait(1, 0.2)
        assert inbox.items, "no message arrived within 5 s"
        sender, frames = inbox.items[0]
        assert sender == 0 and frames == [b"head", big]
        assert done.wait(5)
        assert a.stats.bytes_sent >= len(big) and b.stats.bytes_received >= len(big)
    finally:
        a.close(), b.close()


def test_send_to_dead_neighbour_never_blocks(zmq_context, tmp_path):
    dead = f"ipc://{tmp_path}/nobody-listens"  # unlike a freed tcp port, nobody can take it
    a = Transport(0, "tcp://127.0.0.1:0", {1: dead}, TransportConfig(), Inbox(),
                  context=zmq_context).start()
    try:
        for _ in range(200):  # submit only queues: it returns even though nothing can be sent
            a.submit(Outgoing((1,), lambda: [b"x" * 1000]))
        deadline = time.monotonic() + 20
        while a.stats.send_dropped < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.stats.send_dropped == 200 and a.stats.messages_sent == 0
    finally:
        a.close()


def test_link_policy_drops_and_delays(zmq_context):
    def policy(dest: int, n: int) -> tuple[bool, float]:
        return (n % 2 == 1, 0.3)  # every second message dropped, the rest delayed 0.3 s

    a, b, inbox = _pair(zmq_context, policy=policy)
    try:
        time.sleep(0.3)  # let the connection come up
        t0 = time.monotonic()
        for i in range(6):
            a.submit(Outgoing((1,), lambda i=i: [b"m%d" % i]))
        assert inbox.wait(3, 5.0)
        assert time.monotonic() - t0 >= 0.29
        time.sleep(0.5)
        assert [f[0] for _, f in inbox.items] == [b"m0", b"m2", b"m4"]
        assert a.stats.emulated_drops == 3
    finally:
        a.close(), b.close()


def test_oversized_message_is_counted_not_delivered(zmq_context):
    cfg = TransportConfig(max_message_bytes=64 * 1024)
    a, b, inbox = _pair(zmq_context, cfg)
    try:
        time.sleep(0.3)
        a.submit(Outgoing((1,), lambda: [b"x" * 40_000, b"y" * 40_000]))  # 80 KB in total
        assert inbox.wait(1, 5.0)
        assert inbox.items[0][1] == []  # the handler is told, with no frames
        assert b.stats.oversized == 1
    finally:
        a.close(), b.close()
