"""CURVE encryption and authentication with ZeroMQ's own ZAP authenticator.

Keys are ZeroMQ certificate files (``zmq.auth.create_certificates``): ``NAME.key`` holds the
public key, ``NAME.key_secret`` both keys. A peer's inbound ROUTER is a CURVE *server* with the
peer's key pair; its outbound DEALERs are CURVE *clients* with the same key pair and the server
key of the neighbour they connect to. A peer accepts only the public keys found as ``*.key`` files
in its allow-list folder.

Choice of authenticator: :class:`CountingAuthenticator`, a ``zmq.auth.thread.ThreadAuthenticator``
subclass. ZAP requests come from libzmq's I/O threads on ``inproc://zeromq.zap.01`` of the peer's
context, so the handler has its own thread and its own ZAP socket, and never touches the
transport's sockets; it is started once per context before the ROUTER binds. It overrides the
CURVE check to count every accepted and refused handshake (the refused count is real: it is the
number of ZAP requests answered with 400). Each refused connection attempt is one ZAP request, so
a stranger that keeps reconnecting keeps adding to the count.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

__all__ = ["KeyPair", "generate_keypair", "load_keypair", "load_public_key", "load_allowed_keys",
           "configure_curve_server", "configure_curve_client", "CountingAuthenticator",
           "start_authenticator", "warn_plaintext_once", "CurveSetup", "curve_for",
           "ALLOWED_DIR", "peer_key_name"]

#: Sub-folder of the keys folder that holds the allow-list (``*.key`` public keys).
ALLOWED_DIR = "allowed"

_warned_pid: int | None = None
log = logging.getLogger("gossipml.comm.security")
_warn_lock = threading.Lock()


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both keys Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


def generate_keypair(key_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` (public) and ``name.key_secret`` (public + secret, mode 0600) in ``key_dir``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"key name {name!r} must be a plain file name such as 'peer-3'")
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(key_dir), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def load_keypair(key_dir: str | Path, name: str) -> KeyPair:
    """Read ``key_dir/name.key_secret``; raise ValueError saying how to make one when it is missing."""
    path = Path(key_dir) / f"{name}.key_secret"
    if not path.is_file():
        raise ValueError(f"no secret key {path}; make one with `gossipml keys {key_dir} {name}`")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read key pair {path}: {exc}") from exc
    if not secret:
        raise ValueError(f"{path} holds no secret key; pass the .key_secret file of this peer")
    return KeyPair(public, secret)


def load_public_key(path: str | Path) -> bytes:
    """The Z85 public key of a ``.key`` (or ``.key_secret``) file."""
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read public key {path}: {exc}") from exc
    return public


def load_allowed_keys(allow_dir: str | Path) -> set[bytes]:
    """Every Z85 public key of the ``*.key`` files in ``allow_dir`` (the allow-list)."""
    allow_dir = Path(allow_dir)
    if not allow_dir.is_dir():
        raise ValueError(f"allow-list folder {allow_dir} does not exist; put the peers' .key files there")
    return {load_public_key(p) for p in sorted(allow_dir.glob("*.key"))}


def configure_curve_server(socket: zmq.Socket, keys: KeyPair) -> None:
    """Make ``socket`` (the inbound ROUTER) a CURVE server; call before ``bind``."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def configure_curve_client(socket: zmq.Socket, keys: KeyPair, server_public_key: bytes) -> None:
    """Make ``socket`` (a DEALER) a CURVE client of ``server_public_key``; call before ``connect``."""
    if len(server_public_key) != 40:
        raise ValueError(f"server public key must be 40 Z85 bytes, got {len(server_public_key)}")
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = server_public_key


class CountingAuthenticator(ThreadAuthenticator):
    """A ZAP handler thread that accepts only allow-listed CURVE keys and counts its decisions."""

    def __init__(self, context: zmq.Context, allowed_keys: set[bytes],
                 log: logging.Logger | None = None) -> None:
        super().__init__(context=context, log=log or logging.getLogger("gossipml.comm.security"))
        self._count_lock = threading.Lock()
        self.accepted = 0
        self.refused = 0
        self.refused_keys: set[bytes] = set()
        self.set_allowed_keys(allowed_keys)

    def set_allowed_keys(self, allowed_keys: set[bytes]) -> None:
        """Replace the allow-list (Z85 public keys); takes effect for the next handshake."""
        self.certs["*"] = {bytes(k): True for k in allowed_keys}

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        with self._count_lock:
            if allowed:
                self.accepted += 1
            else:
                self.refused += 1
                self.refused_keys.add(z85.encode(client_key))
        if not allowed:
            self.log.warning("refused a CURVE client not in the allow-list: %s",
                             z85.encode(client_key).decode())
        return allowed, reason


def start_authenticator(context: zmq.Context, allowed_keys: set[bytes]) -> CountingAuthenticator:
    """Start the ZAP handler of ``context``; stop it with ``.stop()`` before the context ends."""
    if not allowed_keys:
        raise ValueError("the allow-list is empty: every peer would be refused; "
                         "copy the peers' .key files into the allow-list folder")
    auth = CountingAuthenticator(context, allowed_keys)
    auth.start()
    return auth


def warn_plaintext_once(logger: logging.Logger) -> bool:
    """Warn, once per process, that the peer runs without CURVE; True when this call warned."""
    global _warned_pid
    with _warn_lock:
        if _warned_pid == os.getpid():
            return False
        _warned_pid = os.getpid()
    logger.warning("!!! gossipml runs IN THE CLEAR: no CURVE keys configured, so anyone who can "
                   "reach this port can read and inject models. Make keys with `gossipml keys` "
                   "and set an allow-list to encrypt and authenticate. !!!")
    return True


def peer_key_name(peer_id: int) -> str:
    """The key file stem of a peer: ``peer-<id>`` (seeds with unknown ids: ``seed-<index>``)."""
    return f"peer-{peer_id}" if peer_id >= 0 else f"seed-{-peer_id - 1}"


class CurveSetup:
    """CURVE for one peer: its key pair, its allow-list and the ZAP handler of its context.

    Layout of ``keys_dir``: ``peer-<id>.key_secret`` (this peer's pair), ``allowed/*.key`` (the
    allow-list), ``allowed/peer-<j>.key`` (neighbour j's server key). A seed dealer (negative
    id ``-k-1``, id not known yet) uses ``allowed/seed-<k>.key``. The authenticator starts here,
    so build this before the peer's ROUTER binds; call :meth:`stop` before the context ends.
    """

    def __init__(self, keys_dir: str | Path, peer_id: int, context: zmq.Context) -> None:
        self.keys_dir = Path(keys_dir)
        self.peer_id = peer_id
        self.keys = load_keypair(self.keys_dir, peer_key_name(peer_id))
        self.allow_dir = self.keys_dir / ALLOWED_DIR
        self._server_keys: dict[int, bytes] = {}
        self.auth = start_authenticator(context, load_allowed_keys(self.allow_dir))

    @property
    def refused(self) -> int:
        """CURVE handshakes refused so far (clients not in the allow-list)."""
        return self.auth.refused

    @property
    def accepted(self) -> int:
        """CURVE handshakes accepted so far."""
        return self.auth.accepted

    def server_key(self, peer_id: int) -> bytes:
        """Neighbour ``peer_id``'s public key, read once from ``allowed/<name>.key``."""
        if peer_id not in self._server_keys:
            path = self.allow_dir / f"{peer_key_name(peer_id)}.key"
            if not path.is_file():
                raise ValueError(f"peer {self.peer_id}: no public key {path} for neighbour "
                                 f"{peer_id}; copy its .key file there (`gossipml keys DIR "
                                 f"{peer_key_name(peer_id)} --allow`)")
            self._server_keys[peer_id] = load_public_key(path)
        return self._server_keys[peer_id]

    def setup_server(self, socket: zmq.Socket) -> None:
        """Make the inbound ROUTER a CURVE server (the transport calls this before ``bind``)."""
        configure_curve_server(socket, self.keys)

    def setup_client(self, socket: zmq.Socket, peer_id: int) -> None:
        """Make a DEALER to ``peer_id`` a CURVE client (before ``connect``)."""
        configure_curve_client(socket, self.keys, self.server_key(peer_id))

    def stop(self) -> None:
        """Stop the ZAP handler thread (before the context is terminated)."""
        if self.auth.is_alive():
            self.auth.stop()


def curve_for(config: object, peer_id: int, context: zmq.Context) -> CurveSetup | None:
    """The :class:`CurveSetup` of ``config.transport.curve_keys_dir``; None (after a loud
    warning, once per process) when no keys folder is configured."""
    keys_dir = getattr(getattr(config, "transport", config), "curve_keys_dir", None)
    if not keys_dir:
        warn_plaintext_once(log)
        return None
    return CurveSetup(keys_dir, peer_id, context)
