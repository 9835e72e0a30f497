"""The ``[transport]`` table: socket settings, every one always applied (nothing blocks forever)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gossipml.errors import ConfigError

__all__ = ["TransportConfig", "DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_MAX_CONNECTIONS"]

#: The message size limit where no model is known (a transport built without a peer).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
#: Inbound connections accepted where the peer does not size it from its neighbours.
DEFAULT_MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class TransportConfig:
    """Socket settings; every one is always applied (nothing blocks forever).

    ``max_message_bytes`` and ``max_connections`` left unset are sized by the peer from its model
    and its neighbours (:meth:`sized`); the bytes held in received, not yet handled messages are
    at most :attr:`receive_bound_bytes` (``comm/budget.py``)."""

    max_message_bytes: int | None = None  # None: 2 x the model's largest encoding + header slack
    send_hwm: int = 16
    recv_hwm: int = 8  # messages queued per inbound connection
    max_connections: int | None = None  # None: 2 per neighbour + 8 (a swarm peer: 64)
    linger_s: float = 1.0
    send_timeout_s: float = 1.0
    poll_interval_s: float = 0.02
    shm: bool = True  # same-host fast path: tensor bytes through shared memory
    shm_min_bytes: int = 1 << 20
    curve_keys_dir: str | None = None  # CURVE: this peer's keys and the allow-list live here

    def __post_init__(self) -> None:
        if self.max_message_bytes is not None and (
                isinstance(self.max_message_bytes, bool)
                or not isinstance(self.max_message_bytes, int) or self.max_message_bytes < 1024):
            raise ConfigError("[transport] max_message_bytes must be an integer >= 1024 (or "
                              f"unset to follow the model), got {self.max_message_bytes!r}")
        if self.max_connections is not None and (
                isinstance(self.max_connections, bool)
                or not isinstance(self.max_connections, int) or self.max_connections < 1):
            raise ConfigError("[transport] max_connections must be an integer >= 1 (or unset "
                              f"for 2 per neighbour + 8), got {self.max_connections!r}")
        for name in ("send_hwm", "recv_hwm"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[transport] {name} must be >= 1")
        for name in ("linger_s", "send_timeout_s", "poll_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[transport] {name} must be > 0")

    @property
    def message_limit_bytes(self) -> int:
        """``max_message_bytes``, or 1 GiB while it is unset (no model known)."""
        return self.max_message_bytes if self.max_message_bytes is not None \
            else DEFAULT_MAX_MESSAGE_BYTES

    @property
    def connection_limit(self) -> int:
        """``max_connections``, or 64 while it is unset."""
        return self.max_connections if self.max_connections is not None \
            else DEFAULT_MAX_CONNECTIONS

    @property
    def receive_bound_bytes(self) -> int:
        """Bytes received and not yet handled, at most: every accepted connection's queue full
        (``recv_hwm`` messages) plus one message being read, each at most the size limit."""
        return self.connection_limit * (self.recv_hwm + 1) * self.message_limit_bytes

    def sized(self, message_bytes: int, connections: int) -> "TransportConfig":
        """This config with the unset limits filled in (set ones always win)."""
        return dataclasses.replace(
            self,
            max_message_bytes=self.max_message_bytes if self.max_message_bytes is not None
            else max(1024, int(message_bytes)),
            max_connections=self.max_connections if self.max_connections is not None
            else max(1, int(connections)))
