"""``[transport]`` keys reach real ZeroMQ sockets (read back with ``getsockopt``) and the
communication thread of a real :class:`Transport` over tcp loopback: two values, two behaviours."""

from __future__ import annotations

import time
from typing import Any

import zmq

from gossipml.comm.config import TransportConfig
from gossipml.comm.sockets import make_dealer, make_router
from gossipml.comm.transport import Outgoing, Transport


def _router_opt(ctx: zmq.Context, option: int, **cfg: Any) -> int:
    return make_router(ctx, TransportConfig(**cfg), None).getsockopt(option)


def _dealer_opt(ctx: zmq.Context, option: int, **cfg: Any) -> int:
    sock = make_dealer(ctx, TransportConfig(**cfg), None, 0, 1, "tcp://127.0.0.1:9")
    return sock.getsockopt(option)


def test_max_message_bytes_is_the_routers_limit(zmq_context):
    assert _router_opt(zmq_context, zmq.MAXMSGSIZE, max_message_bytes=4096) == 4096
    assert _router_opt(zmq_context, zmq.MAXMSGSIZE, max_message_bytes=8192) == 8192


def test_recv_hwm_is_the_routers_queue(zmq_context):
    assert [_router_opt(zmq_context, zmq.RCVHWM, recv_hwm=v) for v in (3, 7)] == [3, 7]


def test_send_hwm_is_each_dealers_queue(zmq_context):
    assert [_dealer_opt(zmq_context, zmq.SNDHWM, send_hwm=v) for v in (3, 7)] == [3, 7]


def test_send_timeout_s_is_each_dealers_send_timeout(zmq_context):
    got = [_dealer_opt(zmq_context, zmq.SNDTIMEO, send_timeout_s=v) for v in (0.5, 2.0)]
    assert got == [500, 2000]


def test_linger_s_is_each_dealers_linger(zmq_context):
    assert [_dealer_opt(zmq_context, zmq.LINGER, linger_s=v) for v in (0.25, 3.0)] == [250, 3000]


def _ticks(zmq_context, poll_interval_s: float, window_s: float = 0.4) -> int:
    ticks = []
    transport = Transport(0, "tcp://127.0.0.1:0", {}, TransportConfig(
        poll_interval_s=poll_interval_s), lambda sender, frames: None, context=zmq_context,
        on_tick=lambda: ticks.append(1))
    with transport.start():
        time.sleep(window_s)
    return len(ticks)


def test_poll_interval_s_is_how_often_the_idle_thread_wakes(zmq_context):
    fast, slow = _ticks(zmq_context, 0.01), _ticks(zmq_context, 0.2)
    assert fast > 3 * slow, (fast, slow)  # ~40 wakes against ~2 (plus start and close)


def _offloaded(zmq_context, **cfg: Any) -> int:
    """Messages of 64 KiB that peer 0 sent to peer 1 (a same-host dest) through shared memory."""
    got: list[Any] = []
    config = TransportConfig(**cfg)
    receiver = Transport(1, "tcp://127.0.0.1:0", {}, config, lambda s, f: got.append(f),
                         context=zmq_context).start()
    sender = Transport(0, "tcp://127.0.0.1:0", {1: receiver.address}, config,
                       lambda s, f: None, context=zmq_context, shm_dests=frozenset({1})).start()
    try:
        deadline = time.monotonic() + 5.0
        while not got and time.monotonic() < deadline:  # resent until the link is up
            sender.submit(Outgoing((1,), lambda: [b"header", bytes(64 << 10)]))
            time.sleep(0.1)
        assert got, "the message did not arrive"
        return sender.shm_offloaded
    finally:
        sender.close()
        receiver.close()


def test_shm_turns_the_same_host_path_on(zmq_context):
    assert _offloaded(zmq_context, shm=True, shm_min_bytes=1024) >= 1
    assert _offloaded(zmq_context, shm=False, shm_min_bytes=1024) == 0


def test_shm_min_bytes_is_the_smallest_message_offloaded(zmq_context):
    assert _offloaded(zmq_context, shm=True, shm_min_bytes=1024) >= 1
    assert _offloaded(zmq_context, shm=True, shm_min_bytes=1 << 20) == 0
