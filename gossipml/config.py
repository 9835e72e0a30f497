"""Experiment configuration: one frozen dataclass per part, composed and loaded from TOML.

Each part's dataclass lives beside the part (``CodecConfig`` in :mod:`gossipml.codecs`, ...) and
validates itself in ``__post_init__``. This module adds ``RunConfig`` and :class:`ExperimentConfig`, which composes them and reads
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
from gossipml.codecs import CodecConfig, parse_spec
from gossipml.data import DataConfig
from gossipml.policies.emulation import LinkEmulation
from gossipml.policies.pacing import PacingConfig
from gossipml.comm.config import TransportConfig
from gossipml.errors import ConfigError
from gossipml.featuresplit.config import check_feature_split
from gossipml.peer.config import PeerConfig
from gossipml.policies.membership import MembershipConfig
from gossipml.policies.topology import TopologyConfig
from gossipml.tasks import TaskConfig

__all__ = [
    "ConfigError",
    "PeerConfig",
    "TransportConfig",
    "RunConfig",
    "RUN_MODES",
    "START_METHODS",
    "ExperimentConfig",
    "load_experiment",
    "default_experiment_path",
    "check_references",
]


#: processes: one process per peer (tcp loopback); threads: peers sharing one process (inproc://);
#: feature_split: a linear model split by feature columns, partial products exchanged per step.
RUN_MODES = ("processes", "threads", "feature_split")
START_METHODS = ("fork", "spawn")  # processes mode: fork a pre-imported runner, or exec each


@dataclass(frozen=True)
class RunConfig:
    """What ``gossipml run`` does on this machine."""

    n_peers: int = 8
    deadline_s: float = 300.0  # the whole run is stopped after this, peers killed
    seed: int = 0
    torch_threads: int = 1
    mode: str = "processes"  # see RUN_MODES
    start_method: str = "fork"  # processes mode: see START_METHODS and launch/zygote.py
    comm_threads: int = 1  # threads mode: communication threads its peers share; 0: one per peer

    def __post_init__(self) -> None:
        if self.n_peers < 1:
            raise ConfigError(f"n_peers must be >= 1, got {self.n_peers}")
        if self.deadline_s <= 0:
            raise ConfigError("deadline_s must be > 0")
        if self.mode not in RUN_MODES:
            raise ConfigError(f"mode must be one of {list(RUN_MODES)}, got {self.mode!r}")
        if self.start_method not in START_METHODS:
            raise ConfigError(f"start_method must be one of {list(START_METHODS)} (fork: peers "
                              f"forked from the pre-imported runner; spawn: one fresh interpreter "
                              f"per peer), got {self.start_method!r}")
        if self.start_method != "fork" and self.mode != "processes":
            raise ConfigError(f"start_method picks how processes mode starts its peers; mode "
                              f"{self.mode!r} starts none (remove start_method or use mode = "
                              f"\"processes\")")
        if self.comm_threads < 0:
            raise ConfigError(f"comm_threads must be >= 0 (0: one thread per peer), got "
                              f"{self.comm_threads}")
        if self.comm_threads != 1 and self.mode != "threads":
            raise ConfigError(f"comm_threads sets how many communication threads the peers of one "
                              f"process share, in mode = \"threads\" only; mode {self.mode!r} runs "
                              f"one peer (and one communication thread) per process: remove it")


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
    "emulation": LinkEmulation,
    "membership": MembershipConfig,
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
    emulation: LinkEmulation = field(default_factory=LinkEmulation)
    membership: MembershipConfig = field(default_factory=MembershipConfig)

    def __post_init__(self) -> None:
        try:  # which mixing weights win: gossipml.aggregation.weights.mixing_scheme
            self.aggregation.for_topology(self.topology.weights)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.peer.refresh_every_rounds and parse_spec(self.codec.spec)["stages"][0][0] == \
                "threshold":
            raise ConfigError("[peer] refresh_every_rounds does not apply to the 'threshold' "
                              "codec: its receivers' copies already stay within the threshold, "
                              "and a dense refresh would break that bound; set "
                              "refresh_every_rounds = 0")
        if self.peer.refresh_every_rounds and self.codec.content != "delta":
            raise ConfigError("[peer] refresh_every_rounds refreshes CHOCO deltas: it needs "
                              '[codec] content = "delta" (or a spec ending in "+delta")')
        if self.pacing.stale_correction and self.codec.content == "delta":
            raise ConfigError("[pacing] stale_correction needs whole models ([codec] content = "
                              '"params"): CHOCO merges public estimates, not the models of a round')
        if self.pacing.stale_correction and self.aggregation.rule == "admm":
            raise ConfigError("[pacing] stale_correction does not apply to [aggregation] rule = "
                              '"admm" (ADMM keeps its own per-neighbour duals and versions)')
        check_feature_split(self)  # honour or refuse every key (featuresplit/config.py)
        if self.aggregation.rule == "admm":
            _check_admm(self)

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


def _check_admm(cfg: ExperimentConfig) -> None:
    """Refuse parts that break ADMM's math (:func:`gossipml.aggregation.admm_setup_problems`)."""
    from gossipml.aggregation.admm import admm_setup_problems
    from gossipml.policies.topology import build_topology

    topology = build_topology(cfg.topology, cfg.run.n_peers)
    n = topology.n_peers
    problems = admm_setup_problems(
        asynchronous=cfg.aggregation.asynchronous, pacing_mode=cfg.pacing.mode,
        codec_spec=cfg.codec.spec, content=cfg.codec.content, topology_kind=cfg.topology.kind,
        topology_static=topology.is_static,
        topology_undirected=all(set(topology.in_neighbors(i)) == set(topology.out_neighbors(i))
                                for i in range(n)),
        consensus_step=cfg.peer.consensus_step, membership=cfg.membership.enabled,
        push_every_steps=cfg.pacing.push_every_steps, interval_steps=cfg.pacing.interval_steps,
        stream=cfg.data.stream, max_staleness=cfg.pacing.max_staleness,
        pull_every_steps=cfg.pacing.pull_every_steps)
    if problems:
        raise ConfigError('[aggregation] rule = "admm": ' + "; ".join(problems))


def _build_part(key: str, part_cls: type, sub: Mapping[str, Any]) -> Any:
    allowed = {f.name for f in fields(part_cls)}
    bad = set(sub) - allowed
    if bad:
        raise ConfigError(f"unknown key(s) {sorted(bad)} in [{key}]; allowed: {sorted(allowed)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in sub.items()}
    try:
        return part_cls(**kwargs)
    except (TypeError, ValueError) as exc:  # ConfigError included
        # One "[table]" prefix per message, added here: a part's messages name the key, not the
        # table (PeerConfig and TransportConfig still carry their own, so none is added twice).
        message = str(exc)
        prefix = f"[{key}]"
        raise ConfigError(message if message.startswith(prefix) else f"{prefix} {message}") \
            from None


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
        cfg = ExperimentConfig.from_dict(_with_import_path(table, path.resolve().parent,
                                                          own=path.suffix != ".json"))
        check_references(cfg)
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _with_import_path(table: dict[str, Any], folder: Path, own: bool) -> dict[str, Any]:
    """``[task] import_path`` made absolute against the experiment's folder, which is added when
    the file names its own code (``module:callable``), so child processes and hosts find it."""
    from gossipml.data import is_reference

    task, data = table.get("task", {}), table.get("data", {})
    if not isinstance(task, dict) or not isinstance(data, dict):
        return table  # from_dict says what is wrong
    refs = [task.get(k) for k in ("model", "loss", "metric")] + [data.get("dataset")]
    paths = task.get("import_path", [])
    if not any(is_reference(r) for r in refs) or not isinstance(paths, list):
        return table
    absolute = [str(folder / p) for p in paths if isinstance(p, str)]
    if own and str(folder) not in absolute:
        absolute.append(str(folder))
    return {**table, "task": {**task, "import_path": absolute}}


def check_references(cfg: ExperimentConfig) -> None:
    """Import every ``module:callable`` the experiment names, so a bad one fails at load with the
    key and what was not found (not later, inside a peer process)."""
    from gossipml.data import PluginError, is_reference, resolve_reference

    refs = {"[task] model": cfg.task.model, "[task] loss": cfg.task.loss,
            "[task] metric": cfg.task.metric, "[data] dataset": cfg.data.dataset}
    for key, ref in refs.items():
        if is_reference(ref):
            try:
                resolve_reference(ref, key, cfg.task.import_path)
            except PluginError as exc:
                raise ConfigError(str(exc)) from None
