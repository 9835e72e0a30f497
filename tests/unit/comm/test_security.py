"""CURVE over real sockets: allow-list, counted refusals, and no plaintext on the wire."""

from __future__ import annotations

import logging
import select
import socket
import threading

import msgpack
import pytest
import zmq

from gossipml.comm import security
from gossipml.comm.security import (configure_curve_client, configure_curve_server, generate_keypair,
                               load_allowed_keys, load_keypair, start_authenticator,
                               warn_plaintext_once)

HEADER = msgpack.packb({"version": 1, "kind": "model", "sender": 3, "round": 17})


@pytest.fixture
def keys(tmp_path):
    """Key pairs for a server, a trusted client and a stranger; the allow-list holds the first two."""
    for name in ("server", "friend", "stranger"):
        generate_keypair(tmp_path / "keys", name)
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("server", "friend"):
        (allow / f"{name}.key").write_bytes((tmp_path / "keys" / f"{name}.key").read_bytes())
    return {n: load_keypair(tmp_path / "keys", n) for n in ("server", "friend", "stranger")}, allow


class Relay:
    """A TCP forwarder on 127.0.0.1 that records every byte passing in either direction."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.captured = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pairs: dict[socket.socket, socket.socket] = {}
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener, *pairs], [], [], 0.05)
            for s in ready:
                if s is self.listener:
                    down, _ = self.listener.accept()
                    up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
                    pairs[down], pairs[up] = up, down
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if data:
                    self.captured += data
                    pairs[s].sendall(data)
                else:
                    other = pairs.pop(s)
                    pairs.pop(other, None)
                    s.close()
                    other.close()
        for s in [self.listener, *pairs]:
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _router(ctx: zmq.Context, server_keys=None) -> tuple[zmq.Socket, int]:
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    if server_keys:
        configure_curve_server(router, server_keys)
    router.bind("tcp://127.0.0.1:0")
    return router, int(router.last_endpoint.decode().rsplit(":", 1)[1])


def _dealer(ctx: zmq.Context, port: int, client_keys=None, server_public=None) -> zmq.Socket:
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.sndtimeo = 2000
    if client_keys:
        configure_curve_client(dealer, client_keys, server_public)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    return dealer


def _receive(router: zmq.Socket, timeout_ms: int) -> list[bytes] | None:
    if router.poll(timeout_ms, zmq.POLLIN):
        return router.recv_multipart()
    return None


def test_allow_listed_client_gets_through_and_stranger_is_refused(zmq_context, keys):
    pairs, allow = keys
    auth = start_authenticator(zmq_context, load_allowed_keys(allow))
    try:
        router, port = _router(zmq_context, pairs["server"])
        friend = _dealer(zmq_context, port, pairs["friend"], pairs["server"].public)
        friend.send_multipart([HEADER, b"payload"])
        got = _receive(router, 3000)
        assert got is not None and got[1:] == [HEADER, b"payload"]
        assert auth.accepted >= 1 and auth.refused == 0

        stranger = _dealer(zmq_context, port, pairs["stranger"], pairs["server"].public)
        stranger.send_multipart([HEADER, b"evil"], flags=zmq.NOBLOCK)
        assert _receive(router, 1500) is None
        assert auth.refused >= 1
        assert auth.refused_keys == {pairs["stranger"].public}
    finally:
        auth.stop()


def test_plaintext_client_is_refused_by_a_curve_server(zmq_context, keys):
    pairs, allow = keys
    auth = start_authenticator(zmq_context, load_allowed_keys(allow))
    try:
        router, port = _router(zmq_context, pairs["server"])
        plain = _dealer(zmq_context, port)
        plain.send_multipart([HEADER, b"evil"], flags=zmq.NOBLOCK)
        assert _receive(router, 1000) is None
    finally:
        auth.stop()


@pytest.mark.parametrize("curve", [False, True])
def test_wire_bytes_hide_header_fields_only_under_curve(zmq_context, keys, curve):
    pairs, allow = keys
    auth = start_authenticator(zmq_context, load_allowed_keys(allow)) if curve else None
    relay = None
    try:
        router, port = _router(zmq_context, pairs["server"] if curve else None)
        relay = Relay(port)
        dealer = _dealer(zmq_context, relay.port, pairs["friend"] if curve else None,
                         pairs["server"].public if curve else None)
        for _ in range(3):
            dealer.send_multipart([HEADER, b"tensor-bytes"])
            assert _receive(router, 3000) is not None, "the message did not pass the relay"
    finally:
        if relay:
            relay.close()
        if auth:
            auth.stop()
    wire = bytes(relay.captured)
    assert len(wire) > 3 * len(HEADER)
    for needle in (b"sender", b"round", b"tensor-bytes"):
        assert (needle in wire) is (not curve), f"{needle!r} {'visible' if curve else 'missing'}"


def test_missing_keys_say_how_to_make_them(tmp_path):
    with pytest.raises(ValueError, match="gossipml keys"):
        load_keypair(tmp_path, "nobody")
    with pytest.raises(ValueError, match="does not exist"):
        load_allowed_keys(tmp_path / "nope")
    public, secret = generate_keypair(tmp_path, "p")
    assert public.name == "p.key" and secret.name == "p.key_secret"
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="plain file name"):
        generate_keypair(tmp_path, "../p")


def test_plaintext_warning_is_said_once(caplog, monkeypatch):
    monkeypatch.setattr(security, "_warned_pid", None)
    log = logging.getLogger("test.plain")
    with caplog.at_level(logging.WARNING):
        assert warn_plaintext_once(log) is True
        assert warn_plaintext_once(log) is False
    assert sum("IN THE CLEAR" in r.message for r in caplog.records) == 1
