"""The in-memory transport: the counting and delivery the peer parts rely on, without sockets."""

from __future__ import annotations

from gossipml.comm.config import TransportConfig
from gossipml.comm.memory import MemoryNetwork
from gossipml.comm.port import Port, call_and_wait
from gossipml.comm.transport import Outgoing


def _pair(net: MemoryNetwork, config: TransportConfig | None = None):
    got: list[tuple[int | None, list[bytes]]] = []
    cfg = config or TransportConfig()
    a = net.transport(0, "memory://0", {1: "memory://1"}, cfg, lambda s, f: None).start()
    b = net.transport(1, "memory://1", {0: "memory://0"}, cfg,
                      lambda s, f: got.append((s, [bytes(x.buffer) for x in f]))).start()
    return a, b, got


def test_frames_arrive_copied_and_counted_on_both_sides():
    net = MemoryNetwork()
    a, b, got = _pair(net)
    assert isinstance(a, Port)
    payload = bytearray(b"abcd")
    done = []
    a.submit(Outgoing((1,), lambda: [b"head", payload], on_done=lambda: done.append(1)))
    payload[:] = b"zzzz"  # the receiver holds its own copy
    assert got == [(0, [b"head", b"abcd"])] and done == [1]
    assert (a.stats.messages_sent, a.stats.bytes_sent) == (1, 8)
    assert (b.stats.messages_received, b.stats.bytes_received) == (1, 8)


def test_queued_network_holds_messages_until_run():
    net = MemoryNetwork(queued=True)
    a, _, got = _pair(net)
    a.submit(Outgoing((1,), lambda: [b"x"]))
    assert got == [] and net.in_flight == 1
    assert net.run_until_idle() == 1 and got == [(0, [b"x"])]


def test_unknown_unreachable_failing_and_oversized_sends_are_counted():
    net = MemoryNetwork()
    a, b, got = _pair(net, TransportConfig(max_message_bytes=1024))
    a.submit(Outgoing((7,), lambda: [b"x"]))
    assert a.stats.errors == {"unknown_neighbor": 1}

    def fail() -> list[bytes]:
        raise ValueError("codec broke")

    done = []
    a.submit(Outgoing((1,), fail, on_done=lambda: done.append(1)))
    assert a.stats.send_failed == 1 and done == [1]  # the buffer is released all the same
    a.submit(Outgoing((1,), lambda: [b"y" * 2048]))
    assert got == [(0, [])] and b.stats.oversized == 1  # the handler sees "too large"
    b.close()
    a.submit(Outgoing((1,), lambda: [b"z"]))
    assert a.stats.send_dropped == 1 and len(got) == 1


def test_call_and_wait_runs_on_the_owner_and_raises_back():
    net = MemoryNetwork()
    a, _, _ = _pair(net)
    assert call_and_wait(a, lambda: 42, 1.0) == 42
    try:
        call_and_wait(a, lambda: 1 / 0, 1.0)
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the error should reach the caller")
