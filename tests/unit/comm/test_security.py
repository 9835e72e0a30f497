"""CURVE over real sockets: allow-list, counted refusals, identity bound to keys, no plaintext on
the wire, and key files that are never readable by others."""

from __future__ import annotations

import logging
import os
import select
import socket
import stat
import threading
import time

import msgpack
import pytest
import zmq

from gossipml.cli import main
from gossipml.comm import security
from gossipml.comm.config import TransportConfig
from gossipml.comm.security import (CurveSetup, configure_curve_client, configure_curve_server,
                                    generate_keypair, load_allowed_ids,
                                    load_keypair, load_public_key, peer_id_of_user,
                                    start_authenticator, warn_plaintext_once)
from gossipml.comm.transport import Transport, routing_id

HEADER = msgpack.packb({"version": 1, "kind": "model", "sender": 3, "round": 17})


ROLES = {"server": "peer-0", "friend": "peer-1", "stranger": "peer-2"}


@pytest.fixture
def keys(tmp_path):
    """Key pairs for a server, a trusted client and a stranger; the allow-list holds the first two."""
    for name in ROLES.values():
        generate_keypair(tmp_path / "keys", name)
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("peer-0", "peer-1"):
        (allow / f"{name}.key").write_bytes((tmp_path / "keys" / f"{name}.key").read_bytes())
    return {r: load_keypair(tmp_path / "keys", n) for r, n in ROLES.items()}, allow


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
    auth = start_authenticator(zmq_context, load_allowed_ids(allow))
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
    auth = start_authenticator(zmq_context, load_allowed_ids(allow))
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
    auth = start_authenticator(zmq_context, load_allowed_ids(allow)) if curve else None
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
        load_allowed_ids(tmp_path / "nope")
    public, secret = generate_keypair(tmp_path / "k", "p")
    assert public.name == "p.key" and secret.name == "p.key_secret"
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="plain file name"):
        generate_keypair(tmp_path / "k", "../p")
    with pytest.raises(ValueError, match="exists; remove it first"):
        generate_keypair(tmp_path / "k", "p")


def test_plaintext_warning_is_said_once(caplog, monkeypatch):
    monkeypatch.setattr(security, "_warned_pid", None)
    log = logging.getLogger("test.plain")
    with caplog.at_level(logging.WARNING):
        assert warn_plaintext_once(log) is True
        assert warn_plaintext_once(log) is False
    assert sum("IN THE CLEAR" in r.message for r in caplog.records) == 1


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_keys_are_born_private_even_with_umask_0(tmp_path, monkeypatch):
    """With umask 0 and every chmod disabled, a secret can only be 0600 if it was created so."""
    chmods: list[object] = []
    monkeypatch.setattr(os, "chmod", lambda *a, **k: chmods.append(a))
    monkeypatch.setattr(os, "fchmod", lambda *a, **k: chmods.append(a))
    old = os.umask(0)
    try:
        assert main(["keys", str(tmp_path / "keys"), "peer-0", "peer-1", "--allow"]) == 0
    finally:
        os.umask(old)
    assert chmods == []
    assert _mode(tmp_path / "keys") == 0o700
    for i in (0, 1):
        assert _mode(tmp_path / "keys" / f"peer-{i}.key_secret") == 0o600
        assert _mode(tmp_path / "keys" / f"peer-{i}.key") == 0o644
    pair = load_keypair(tmp_path / "keys", "peer-1")
    assert load_public_key(tmp_path / "keys" / "allowed" / "peer-1.key") == pair.public
    assert len(pair.public) == len(pair.secret) == 40


def test_keys_refuse_a_folder_open_to_others_and_non_peer_allow_names(tmp_path, capsys):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert main(["keys", str(shared), "peer-0"]) != 0
    assert "chmod 700" in capsys.readouterr().err and not list(shared.iterdir())
    assert main(["keys", str(tmp_path / "k"), "alice", "--allow"]) != 0
    assert "peer-<id>" in capsys.readouterr().err and not (tmp_path / "k").exists()


def test_allow_list_binds_each_key_to_one_peer_id(tmp_path):
    keys = tmp_path / "keys"
    assert main(["keys", str(keys), "peer-0", "peer-12", "--allow"]) == 0
    allow = keys / "allowed"
    pub = {i: load_public_key(allow / f"peer-{i}.key") for i in (0, 12)}
    (allow / "seed-0.key").write_bytes((allow / "peer-12.key").read_bytes())  # a server key only
    assert load_allowed_ids(allow) == {pub[0]: 0, pub[12]: 12}
    (allow / "peer-3.key").write_bytes((allow / "peer-0.key").read_bytes())
    with pytest.raises(ValueError, match="both peer-0.key and peer-3.key"):
        load_allowed_ids(allow)
    (allow / "peer-3.key").unlink()
    for bad in ("friend.key", "peer-01.key", "peer--1.key", "peer-1x.key"):
        (allow / bad).write_bytes((allow / "peer-0.key").read_bytes())
        with pytest.raises(ValueError, match="must be peer-<id>.key"):
            load_allowed_ids(allow)
        (allow / bad).unlink()
    assert [peer_id_of_user(u) for u in ("7", b"12", "", None, "-1", "x7", "1" * 11)] == [
        7, 12, None, None, None, None, None]


class _Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[int | None, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, sender, frames) -> None:
        with self.lock:
            self.items.append((sender, bytes(frames[0].buffer)))

    def senders_of(self, payload: bytes) -> set:
        with self.lock:
            return {s for s, p in self.items if p == payload}


def _knock(dealer: zmq.Socket, payload: bytes, inbox: _Inbox, want: int | None,
           timeout_s: float = 5.0) -> set:
    """Send ``payload`` until it arrives (or the time is up); the senders it arrived as."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not inbox.senders_of(payload):
        try:
            dealer.send(payload, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        time.sleep(0.05)
    return inbox.senders_of(payload)


def test_transport_sender_is_the_key_id_and_a_copied_routing_id_takes_no_link(
        tmp_path, zmq_context):
    keys = tmp_path / "keys"
    assert main(["keys", str(keys), "peer-0", "peer-1", "peer-2", "--allow"]) == 0
    curve = CurveSetup(keys, 0, zmq_context)
    inbox = _Inbox()
    transport = Transport(0, "tcp://127.0.0.1:0", {}, TransportConfig(), inbox,
                          context=zmq_context, curve=curve).start()
    server = load_public_key(keys / "allowed" / "peer-0.key")

    def dealer(name: str | None, ident: bytes) -> zmq.Socket:
        sock = zmq_context.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = ident
        if name:
            configure_curve_client(sock, load_keypair(keys, name), server)
        sock.connect(transport.address)
        return sock

    try:
        honest = dealer("peer-1", routing_id(1, b"abc"))
        assert _knock(honest, b"h1", inbox, 1) == {1}
        same_id = dealer("peer-2", routing_id(1, b"abc"))  # peer 2's key, peer 1's exact id
        bare_id = dealer("peer-2", b"gml:1")
        plain = dealer(None, routing_id(1, b"abc"))  # no CURVE: refused at the handshake
        assert _knock(bare_id, b"r1", inbox, 2) == {2}, "a routing id must not name the sender"
        assert _knock(same_id, b"r2", inbox, None, 1.5) == set()  # duplicate: ignored by libzmq
        assert _knock(plain, b"p1", inbox, None, 1.0) == set()
        assert _knock(honest, b"h2", inbox, 1) == {1}, "the honest link was taken over"
        assert all(s in (1, 2) for s, _ in inbox.items)
        assert transport.stats.errors.get("unauthenticated", 0) == 0
    finally:
        transport.close()
        curve.stop()
