"""Experiment configuration: one frozen dataclass per part, composed and loaded from TOML.

Each part's dataclass lives beside the part (``CodecConfig`` in :mod:`gossipml.codecs`, ...) and
validates itself in ``__post_init__``. This module adds the runtime parts (``PeerConfig``,
``TransportConfig``, ``RunConfig``) and :class:`ExperimentConfig`, which composes them and reads
the TOML tables ``[codec]``, ``[topology]``, ``[pacing]``, ``[aggregation]``, ``[data]``,
``[task]``, ``[peer]``, ``[transport]`` and ``[run]``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from gossipml.aggregation import AggregationConfig
from gossipml.codecs import CodecConfig
from gossipml.data import DataConfig
from gossipml.pacing import PacingConfig
from gossipml.tasks import TaskConfig
from gossipml.topology import TopologyConfig

__all__ = [
    "ConfigError",
    "PeerConfig",
    "TransportConfig",
    "RunConfig",
    "ExperimentConfig",
    "load_experiment",
    "default_experiment_path",
]


class ConfigError(ValueError):
    """An experiment file or table is malformed; the message says what to change."""


@dataclass(frozen=True)
class PeerConfig:
    """How one peer runs its loop: rounds, local steps between exchanges, evaluation, waits."""

    rounds: int = 30
    interval_steps: int = 10  # local optimizer steps between two exchanges (H)
    content: str = "params"  # "params" or "delta" (CHOCO-style change since the last exchange)
    eval_every_rounds: int = 5
    startup_timeout_s: float = 30.0  # wait this long for in-neighbours to say hello
    compute_slowdown: float = 1.0  # emulate a slow peer: sleep (factor - 1) x step time
    slow_peers: tuple[int, ...] = ()  # ids the slowdown applies to (empty: all peers)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"[peer] rounds must be >= 1, got {self.rounds}")
        if self.interval_steps < 1:
            raise ConfigError(f"[peer] interval_steps must be >= 1, got {self.interval_steps}")
        if self.content not in ("params", "delta"):
            raise ConfigError(f"[peer] content must be 'params' or 'delta', got {self.content!r}")
        if self.eval_every_rounds < 1:
            raise ConfigError("[peer] eval_every_rounds must be >= 1")
        if self.startup_timeout_s <= 0:
            raise ConfigError("[peer] startup_timeout_s must be > 0")
        if self.compute_slowdown < 1.0:
            raise ConfigError("[peer] compute_slowdown must be >= 1.0 (1.0 = full speed)")
        object.__setattr__(self, "slow_peers", tuple(int(p) for p in self.slow_peers))


@dataclass(frozen=True)
class TransportConfig:
    """Socket settings; every one is always applied (nothing blocks forever)."""

    max_message_bytes: int = 1 << 30
    send_hwm: int = 16
    recv_hwm: int = 64
    linger_s: float = 1.0
    send_timeout_s: float = 1.0
    poll_interval_s: float = 0.02
    heartbeat_interval_s: float = 1.0
    shm: bool = True  # same-host fast path: tensor bytes through shared memory
    shm_min_bytes: int = 1 << 20
    curve_keys_dir: str | None = None  # CURVE: this peer's keys and the allow-list live here

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1024:
            raise ConfigError("[transport] max_message_bytes must be >= 1024")
        for name in ("send_hwm", "recv_hwm"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[transport] {name} must be >= 1")
        for name in ("linger_s", "send_timeout_s", "poll_interval_s", "heartbeat_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[transport] {name} must be > 0")


@dataclass(frozen=True)
class RunConfig:
    """What ``gossipml run`` does on this machine."""

    n_peers: int = 8
    deadline_s: float = 300.0  # the whole run is stopped after this, peers killed
    seed: int = 0
    torch_threads: int = 1
    mode: str = "processes"  # "processes" or "threads" (peers sharing one process, inproc://)

    def __post_init__(self) -> None:
        if self.n_peers < 1:
            raise ConfigError(f"[run] n_peers must be >= 1, got {self.n_peers}")
        if self.deadline_s <= 0:
            raise ConfigError("[run] deadline_s must be > 0")
        if self.mode not in ("processes", "threads"):
            raise ConfigError(f"[run] mode must be 'processes' or 'threads', got {self.mode!r}")


_PARTS: dict[str, type] = {
    "codec": CodecConfig,
    "topology": TopologyConfig,
    "pacing": PacingConfig,
    "aggregation": AggregationConfig,
    "data": DataConfig,
    "task": TaskConfig,
    "peer": PeerConfig,
    "transport": TransportConfig,
    "run": RunConfig,
}


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: every part's config plus a name."""

    name: str = "default"
    codec: CodecConfig = field(default_factory=CodecConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    pacing: PacingConfig = field(default_factory=PacingConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    peer: PeerConfig = field(default_factory=PeerConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> "ExperimentConfig":
        """Build from nested tables; unknown tables or keys raise ConfigError naming them."""
        unknown = set(table) - set(_PARTS) - {"name"}
        if unknown:
            raise ConfigError(
                f"unknown table(s) {sorted(unknown)}; allowed: {sorted(_PARTS)} and 'name'"
            )
        parts: dict[str, Any] = {}
        for key, part_cls in _PARTS.items():
            sub = table.get(key, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"[{key}] must be a table, got {type(sub).__name__}")
            parts[key] = _build_part(key, part_cls, sub)
        return cls(name=str(table.get("name", "default")), **parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON- and TOML-able) of every resolved value."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **tables: Mapping[str, Any]) -> "ExperimentConfig":
        """Copy with some keys of some tables changed: ``cfg.replace(run={"n_peers": 4})``."""
        merged = self.to_dict()
        for key, sub in tables.items():
            merged.setdefault(key, {}).update(sub)
        return ExperimentConfig.from_dict(merged)


def _build_part(key: str, part_cls: type, sub: Mapping[str, Any]) -> Any:
    allowed = {f.name for f in fields(part_cls)}
    bad = set(sub) - allowed
    if bad:
        raise ConfigError(f"unknown key(s) {sorted(bad)} in [{key}]; allowed: {sorted(allowed)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in sub.items()}
    try:
        return part_cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{key}] {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_experiment_path() -> Path:
    """The shipped default experiment: 8 peers, ring, digits."""
    return Path(__file__).parent / "defaults" / "default.toml"


def load_experiment(path: str | Path | None = None) -> ExperimentConfig:
    """Read an experiment file (TOML, or the JSON that a run folder holds); None: the default."""
    path = Path(path) if path is not None else default_experiment_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read experiment file {path}: {exc.strerror}") from exc
    try:
        table = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from exc
    try:
        return ExperimentConfig.from_dict(table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
