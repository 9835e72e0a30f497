"""Runtime settings that belong to no pure part: the peer loop, the transport and the run.

Kept apart from :mod:`gossipml.config` so the transport can import its settings without pulling
in every part; :mod:`gossipml.config` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "PeerConfig", "TransportConfig", "RunConfig", "RUN_MODES"]

#: processes: one process per peer (tcp loopback); threads: peers sharing one process (inproc://);
#: feature_split: a linear model split by feature columns, partial products exchanged per step.
RUN_MODES = ("processes", "threads", "feature_split")


class ConfigError(ValueError):
    """An experiment file or table is malformed; the message says what to change."""


@dataclass(frozen=True)
class PeerConfig:
    """How one peer runs its loop: rounds, local steps between exchanges, evaluation, waits."""

    rounds: int = 30
    eval_every_rounds: int = 5
    startup_timeout_s: float = 30.0  # wait this long for in-neighbours to say hello
    consensus_step: float = 1.0  # gamma: x <- x + gamma * (aggregate - x)
    keyframe_every_rounds: int = 10  # content = "delta": resend the reference every N rounds
    keyframe_codec: str = "identity"  # how keyframes travel ("q8": 4x fewer bytes, reference
    # becomes the decoded keyframe on both sides)
    refresh_every_rounds: int = 0  # content = "delta": every N rounds (not keyframes) send the
    refresh_codec: str = "q4"  # CHOCO delta through this dense codec instead (0: never)
    attack: str = ""  # Byzantine behaviour of the `attackers`: "scale:100", "nan", "noise:1"
    attackers: tuple[int, ...] = ()
    checkpoint_dir: str | None = None  # per-peer subfolders peer-<id>/; resume from the newest
    checkpoint_every_rounds: int = 0  # 0: never

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"[peer] rounds must be >= 1, got {self.rounds}")
        if self.eval_every_rounds < 1:
            raise ConfigError("[peer] eval_every_rounds must be >= 1")
        if self.startup_timeout_s <= 0:
            raise ConfigError("[peer] startup_timeout_s must be > 0")
        if not 0 < self.consensus_step <= 1:
            raise ConfigError("[peer] consensus_step must be in (0, 1]")
        if self.keyframe_every_rounds < 1:
            raise ConfigError("[peer] keyframe_every_rounds must be >= 1")
        from gossipml.codecs import build_codec

        for key in ("keyframe_codec", "refresh_codec"):
            try:
                build_codec(getattr(self, key))
            except ValueError as exc:
                raise ConfigError(f"[peer] {key}: {exc}") from None
        if isinstance(self.refresh_every_rounds, bool) or not isinstance(
                self.refresh_every_rounds, int) or self.refresh_every_rounds < 0:
            raise ConfigError("[peer] refresh_every_rounds must be an integer >= 0 (0 = never), "
                              f"got {self.refresh_every_rounds!r}")
        if self.checkpoint_every_rounds < 0:
            raise ConfigError("[peer] checkpoint_every_rounds must be >= 0 (0 = never)")
        if self.checkpoint_every_rounds and not self.checkpoint_dir:
            raise ConfigError("[peer] checkpoint_every_rounds needs checkpoint_dir")
        from gossipml.attacks import check_attack

        try:
            check_attack(self.attack)
        except ValueError as exc:
            raise ConfigError(f"[peer] {exc}") from None
        if self.attackers and not self.attack:
            raise ConfigError("[peer] attackers are listed but no attack is set")
        object.__setattr__(self, "attackers", tuple(int(a) for a in self.attackers))


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


@dataclass(frozen=True)
class RunConfig:
    """What ``gossipml run`` does on this machine."""

    n_peers: int = 8
    deadline_s: float = 300.0  # the whole run is stopped after this, peers killed
    seed: int = 0
    torch_threads: int = 1
    mode: str = "processes"  # see RUN_MODES

    def __post_init__(self) -> None:
        if self.n_peers < 1:
            raise ConfigError(f"[run] n_peers must be >= 1, got {self.n_peers}")
        if self.deadline_s <= 0:
            raise ConfigError("[run] deadline_s must be > 0")
        if self.mode not in RUN_MODES:
            raise ConfigError(f"[run] mode must be one of {list(RUN_MODES)}, got {self.mode!r}")
