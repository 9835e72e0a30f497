"""The receive budget over real sockets: inbound connections past the limit are cut, messages
past the size limit are refused unread, and the bound is what the config says."""

from __future__ import annotations

import time

import zmq

from gossipml.comm.budget import CUT_REASON, header_slack_bytes, message_bytes_for
from gossipml.comm.config import DEFAULT_MAX_MESSAGE_BYTES, TransportConfig
from gossipml.comm.transport import Transport
from gossipml.errors import ConfigError

import pytest


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[int | None, int]] = []

    def __call__(self, sender, frames) -> None:
        self.items.append((sender, len(frames)))


def _until(pred, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()


def test_connections_past_the_limit_are_cut(zmq_context):
    # Prepare: a transport that keeps 3 inbound connections; 12 raw DEALERs connect to it
    cfg = TransportConfig(max_connections=3)
    inbox = Inbox()
    t = Transport(0, "tcp://127.0.0.1:0", {}, cfg, inbox, context=zmq_context).start()
    socks = []
    try:
        for i in range(12):
            s = zmq_context.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RECONNECT_IVL, 60_000)  # a cut one stays away for this test
            s.setsockopt(zmq.ROUTING_ID, b"gml:%d:x" % (i + 1))
            s.connect(t.address)
            socks.append(s)
        # Assert: 9 are cut, 3 stay open, and the transport counts the cuts
        assert _until(lambda: t.stats.errors.get(CUT_REASON, 0) >= 9), t.stats.errors
        guard = t.receiver.guard
        assert guard.open <= 3 and guard.peak <= 3
        # the three kept still deliver
        for s in socks:
            s.send_multipart([b"hello"], zmq.NOBLOCK)
        assert _until(lambda: len(inbox.items) >= 3)
        time.sleep(0.2)
        assert len(inbox.items) == 3, inbox.items
    finally:
        for s in socks:
            s.close()
        t.close()


def test_an_oversized_message_is_handed_up_empty(zmq_context):
    cfg = TransportConfig(max_message_bytes=4096)
    inbox = Inbox()
    t = Transport(0, "tcp://127.0.0.1:0", {}, cfg, inbox, context=zmq_context).start()
    s = zmq_context.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(t.address)
    try:
        s.send_multipart([b"x" * 3000, b"y" * 3000])  # each frame fits MAXMSGSIZE, not the sum
        assert _until(lambda: inbox.items == [(None, 0)])
        assert t.stats.oversized == 1
    finally:
        s.close()
        t.close()


def test_limits_and_bound():
    assert message_bytes_for(1000, 2) == 2000 + header_slack_bytes(2)
    cfg = TransportConfig()
    assert cfg.message_limit_bytes == DEFAULT_MAX_MESSAGE_BYTES  # no model known
    sized = cfg.sized(10_000, 5)
    assert (sized.max_message_bytes, sized.max_connections) == (10_000, 5)
    assert sized.receive_bound_bytes == 5 * (cfg.recv_hwm + 1) * 10_000
    with pytest.raises(ConfigError, match="max_connections"):
        TransportConfig(max_connections=0)
    with pytest.raises(ConfigError, match="max_message_bytes"):
        TransportConfig(max_message_bytes=10)
