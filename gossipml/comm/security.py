"""CURVE encryption and authentication with ZeroMQ's own ZAP authenticator.

Keys are ZeroMQ certificate files (the format of ``zmq.auth.create_certificates``): ``NAME.key``
holds the public key, ``NAME.key_secret`` both keys; secrets are created mode 0600 (never wider,
not even for a moment) in a folder of mode 0700. A peer's inbound ROUTER is a CURVE *server* with
the peer's key pair; its outbound DEALERs are CURVE *clients* with the same key pair and the server
key of the neighbour they connect to.

Identity is bound to keys. The allow-list folder holds ``peer-<id>.key`` files: the key in
``peer-<id>.key`` may speak as peer ``<id>`` and as nobody else. The ZAP handler answers each
accepted handshake with the user id ``"<id>"``; libzmq attaches it to every message of that
connection (``zmq.Frame.get("User-Id")``), and :meth:`CurveSetup.authenticated_sender` reads it
back, so the transport hands the inbound side a sender that comes from the key, never from a field
the sender chose. ``seed-<k>.key`` files are server keys for seed addresses only: they let this
peer *connect* to a seed, and grant no identity (a seed speaks with its own ``peer-<id>.key``). Any
other ``*.key`` name in the allow-list, or one key under two ids, is refused at load.

Choice of authenticator: :class:`CountingAuthenticator`, a ``zmq.auth.thread.ThreadAuthenticator``
subclass. ZAP requests come from libzmq's I/O threads on ``inproc://zeromq.zap.01`` of the peer's
context, so the handler has its own thread and its own ZAP socket, and never touches the
transport's sockets; it is started once per context before the ROUTER binds. It overrides the
CURVE check to count every accepted and refused handshake (the refused count is real: it is the
number of ZAP requests answered with 400). Each refused connection attempt is one ZAP request, so
a stranger that keeps reconnecting keeps adding to the count.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

__all__ = ["KeyPair", "generate_keypair", "load_keypair", "load_public_key", "load_allowed_keys",
           "load_allowed_ids", "configure_curve_server", "configure_curve_client",
           "CountingAuthenticator", "start_authenticator", "warn_plaintext_once", "CurveSetup",
           "curve_for", "ALLOWED_DIR", "peer_key_name", "peer_id_of_user", "is_allow_list_name"]

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


_PEER_KEY = re.compile(r"peer-(0|[1-9][0-9]{0,9})\.key")
_SEED_KEY = re.compile(r"seed-(0|[1-9][0-9]{0,9})\.key")
_BANNER = ("#   ****  Generated on {now} by gossipml  ****\n"
           "#   ZeroMQ CURVE {kind} Certificate\n"
           "#   {advice}\n\n")


def _private_folder(key_dir: Path) -> None:
    """Make ``key_dir`` mode 0700, or check that an existing one is ours and not open to others."""
    if not key_dir.exists():
        key_dir.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(key_dir, 0o700)  # the umask can only narrow 0700
        return
    st = os.lstat(key_dir)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"keys folder {key_dir} is not a folder; choose another path")
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise ValueError(f"keys folder {key_dir} (mode {stat.S_IMODE(st.st_mode):o}, owner "
                         f"{st.st_uid}) is open to other users; `chmod 700 {key_dir}` (as its "
                         "owner) or choose a new folder")


def _write_certificate(path: Path, public: bytes, secret: bytes | None) -> None:
    """Write a certificate file, created (O_EXCL) at its final mode: 0600 secret, 0644 public."""
    kind, advice = (("**Secret**", "DO NOT PROVIDE THIS FILE TO OTHER USERS nor widen its mode.")
                    if secret else ("Public", "Copy this file into other peers' allowed/ folder."))
    text = _BANNER.format(now=datetime.datetime.now(), kind=kind, advice=advice)
    text += f'metadata\ncurve\n    public-key = "{public.decode()}"\n'
    if secret:
        text += f'    secret-key = "{secret.decode()}"\n'
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600 if secret else 0o644)
    except FileExistsError:
        raise ValueError(f"{path} exists; remove it first (or pick another key name)") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


def generate_keypair(key_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` (public) and ``name.key_secret`` (both keys, mode 0600 from its creation)
    in ``key_dir`` (made mode 0700; an existing folder open to others is refused)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"key name {name!r} must be a plain file name such as 'peer-3'")
    key_dir = Path(key_dir)
    _private_folder(key_dir)
    public_path, secret_path = key_dir / f"{name}.key", key_dir / f"{name}.key_secret"
    for path in (secret_path, public_path):
        if os.path.lexists(path):
            raise ValueError(f"{path} exists; remove it first (or pick another key name)")
    public, secret = zmq.curve_keypair()
    _write_certificate(secret_path, public, secret)
    _write_certificate(public_path, public, None)
    return public_path, secret_path


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


def is_allow_list_name(file_name: str) -> bool:
    """True for the file names an allow-list may hold: ``peer-<id>.key``, ``seed-<k>.key``."""
    return bool(_PEER_KEY.fullmatch(file_name) or _SEED_KEY.fullmatch(file_name))


def load_allowed_ids(allow_dir: str | Path) -> dict[bytes, int]:
    """The allow-list: Z85 public key -> the peer id it may speak as, from ``peer-<id>.key``.

    ``seed-<k>.key`` files (server keys of seed addresses) grant nothing and are skipped; any
    other ``*.key`` name, or one key under two ids, raises ValueError saying what to rename."""
    allow_dir = Path(allow_dir)
    if not allow_dir.is_dir():
        raise ValueError(f"allow-list folder {allow_dir} does not exist; put the peers' .key files there")
    ids: dict[bytes, int] = {}
    for path in sorted(allow_dir.glob("*.key")):
        match = _PEER_KEY.fullmatch(path.name)
        if match is None:
            if _SEED_KEY.fullmatch(path.name):
                continue
            raise ValueError(f"allow-list file {path}: the name must be peer-<id>.key (the key may "
                             "then speak only as peer <id>) or seed-<k>.key (a seed's server "
                             "key); rename it after the peer whose key it is")
        key, peer_id = load_public_key(path), int(match.group(1))
        if ids.setdefault(key, peer_id) != peer_id:
            raise ValueError(f"allow-list {allow_dir}: one key is both peer-{ids[key]}.key and "
                             f"{path.name}; a key speaks for one peer: keep only its own file")
    return ids


def load_allowed_keys(allow_dir: str | Path) -> set[bytes]:
    """Every Z85 public key of the allow-list (see :func:`load_allowed_ids` for their ids)."""
    return set(load_allowed_ids(allow_dir))


def peer_id_of_user(user_id: str | bytes | None) -> int | None:
    """The peer id of a ZAP user id (``"<id>"``, as :class:`CountingAuthenticator` answers);
    None for anything else."""
    if isinstance(user_id, bytes):
        user_id = user_id.decode("ascii", "replace")
    if not user_id or len(user_id) > 10 or not (user_id.isascii() and user_id.isdigit()):
        return None
    return int(user_id)


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
    """A ZAP handler thread that accepts only allow-listed CURVE keys, names each accepted
    connection after the peer id its key is bound to, and counts its decisions."""

    def __init__(self, context: zmq.Context, allowed: Mapping[bytes, int],
                 log: logging.Logger | None = None) -> None:
        super().__init__(context=context, log=log or logging.getLogger("gossipml.comm.security"))
        self._count_lock = threading.Lock()
        self.accepted = 0
        self.refused = 0
        self.refused_keys: set[bytes] = set()
        self._ids: dict[bytes, int] = {}
        self.set_allowed_keys(allowed)

    def set_allowed_keys(self, allowed: Mapping[bytes, int]) -> None:
        """Replace the allow-list (Z85 public key -> peer id) for the next handshakes."""
        if not isinstance(allowed, Mapping):
            raise TypeError("the allow-list maps each Z85 public key to its peer id; build it with "
                            "load_allowed_ids(folder)")
        self._ids = {bytes(k): int(v) for k, v in allowed.items()}  # swapped whole: no torn reads
        self.certs["*"] = {k: True for k in self._ids}

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The ZAP user id of an accepted key: its peer id in decimal ("" if it left the list)."""
        peer_id = self._ids.get(z85.encode(client_public_key))
        return "" if peer_id is None else str(peer_id)

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


def start_authenticator(context: zmq.Context,
                        allowed: Mapping[bytes, int]) -> CountingAuthenticator:
    """Start the ZAP handler of ``context``; stop it with ``.stop()`` before the context ends."""
    if not allowed:
        raise ValueError("the allow-list is empty: every peer would be refused; "
                         "copy the peers' peer-<id>.key files into the allow-list folder")
    auth = CountingAuthenticator(context, allowed)
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

    Layout of ``keys_dir``: ``peer-<id>.key_secret`` (this peer's pair), ``allowed/peer-<j>.key``
    (the allow-list: peer j's key, which may speak only as j; also j's server key). A seed dealer
    (negative id ``-k-1``, id not known yet) uses ``allowed/seed-<k>.key``, which grants nothing.
    The authenticator starts here, so build this before the peer's ROUTER binds; call
    :meth:`stop` before the context ends.
    """

    def __init__(self, keys_dir: str | Path, peer_id: int, context: zmq.Context) -> None:
        self.keys_dir = Path(keys_dir)
        self.peer_id = peer_id
        self.keys = load_keypair(self.keys_dir, peer_key_name(peer_id))
        self.allow_dir = self.keys_dir / ALLOWED_DIR
        self._server_keys: dict[int, bytes] = {}
        self.auth = start_authenticator(context, load_allowed_ids(self.allow_dir))

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

    @staticmethod
    def authenticated_sender(frame: zmq.Frame) -> int | None:
        """The peer id bound to the key that sent ``frame`` (a frame its ROUTER received); None
        when the connection carries no such id (then nothing it sends may be believed)."""
        try:
            return peer_id_of_user(frame.get("User-Id"))
        except zmq.ZMQError:  # no metadata: not a CURVE connection
            return None

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
