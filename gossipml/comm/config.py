"""The ``[transport]`` table: socket settings, every one always applied (nothing blocks forever)."""

from __future__ import annotations

from dataclasses import dataclass

from gossipml.errors import ConfigError

__all__ = ["TransportConfig"]


@dataclass(frozen=True)
class TransportConfig:
    """Socket settings; every one is always applied (nothing blocks forever)."""

    max_message_bytes: int = 1 << 30
    send_hwm: int = 16
    recv_hwm: int = 64
    linger_s: float = 1.0
    send_timeout_s: float = 1.0
    poll_interval_s: float = 0.02
    shm: bool = True  # same-host fast path: tensor bytes through shared memory
    shm_min_bytes: int = 1 << 20
    curve_keys_dir: str | None = None  # CURVE: this peer's keys and the allow-list live here

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1024:
            raise ConfigError("[transport] max_message_bytes must be >= 1024")
        for name in ("send_hwm", "recv_hwm"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[transport] {name} must be >= 1")
        for name in ("linger_s", "send_timeout_s", "poll_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[transport] {name} must be > 0")
