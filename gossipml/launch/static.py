"""Every peer's address from the launcher's environment, for a static topology (no peer file).

Layouts, the first that applies wins:

1. ``GOSSIPML_PEERS``: comma-separated endpoints in id order (any launcher, or none: then
   ``GOSSIPML_RANK`` says which one this process is).
2. Slurm: the node list times the tasks per node (``SLURM_STEP_TASKS_PER_NODE`` /
   ``SLURM_TASKS_PER_NODE``, e.g. ``2(x3),1``), ranks placed node by node (srun's default block
   distribution); rank r on node n with local rank l listens on ``tcp://n:base_port + l``.
3. Kubernetes StatefulSet: ``tcp://<set>-<i>.<service>:<base_port>`` for i in 0..world-1.
4. One host: torchrun, Open MPI or MPICH say that every rank runs here (``LOCAL_WORLD_SIZE``,
   ``OMPI_COMM_WORLD_LOCAL_SIZE``, ``MPI_LOCALNRANKS`` equal to the world size); rank r listens
   on ``tcp://127.0.0.1:base_port + r`` (``GOSSIPML_PORT``, default 5555).

Across hosts torchrun and MPI do not say where the other ranks run: set ``GOSSIPML_PEERS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from gossipml.launch.env import LaunchInfo, detect_launch_env

__all__ = ["StaticLayout", "static_layout", "slurm_tasks_per_node"]

_COUNT = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")
_POD = re.compile(r"^(?P<set>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>\d+)$")


@dataclass(frozen=True)
class StaticLayout:
    """This process's peer id, every peer's address, what to bind, and where it was read from."""

    id: int
    peers: dict[int, str]
    bind: str | None
    source: str


def slurm_tasks_per_node(text: str) -> list[int]:
    """Expand Slurm's tasks-per-node list: ``"2(x3),1"`` -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in text.split(","):
        m = _COUNT.match(part.strip())
        if m is None:
            raise ValueError(f"SLURM_TASKS_PER_NODE={text!r}: cannot read {part!r} "
                             "(expected N or N(xM))")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def _from_list(environ: Mapping[str, str], info: LaunchInfo | None) -> StaticLayout:
    peers = [p.strip() for p in environ["GOSSIPML_PEERS"].split(",") if p.strip()]
    bad = [p for p in peers if "://" not in p]
    if not peers or bad:
        raise ValueError(f"GOSSIPML_PEERS: {bad or 'empty'}; write endpoints in id order such as "
                         "tcp://10.0.0.1:5555,tcp://10.0.0.2:5555")
    if info is None:
        if not environ.get("GOSSIPML_RANK", "").isdigit():
            raise ValueError("GOSSIPML_PEERS is set but no launcher rank was found: "
                             "set GOSSIPML_RANK to this peer's index in GOSSIPML_PEERS")
        rank, source = int(environ["GOSSIPML_RANK"]), "GOSSIPML_PEERS"
    else:
        if info.world_size != len(peers):
            raise ValueError(f"GOSSIPML_PEERS lists {len(peers)} peers but {info.source} says "
                             f"world size {info.world_size}; list one endpoint per rank")
        rank, source = info.rank, f"{info.source}+GOSSIPML_PEERS"
    if not 0 <= rank < len(peers):
        raise ValueError(f"rank {rank} is not an index of GOSSIPML_PEERS (0..{len(peers) - 1})")
    return StaticLayout(rank, dict(enumerate(peers)), None, source)


def _slurm(environ: Mapping[str, str], info: LaunchInfo) -> StaticLayout:
    per_node_text = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    if not info.nodes or not per_node_text:
        raise ValueError("slurm: need SLURM_JOB_NODELIST and SLURM_TASKS_PER_NODE to place peers "
                         "(run under srun), or set GOSSIPML_PEERS")
    counts = slurm_tasks_per_node(per_node_text)
    if len(counts) == 1 and len(info.nodes) > 1:
        counts *= len(info.nodes)
    if len(counts) != len(info.nodes) or sum(counts) != info.world_size:
        raise ValueError(f"slurm: {len(info.nodes)} nodes with tasks per node {per_node_text!r} "
                         f"do not make {info.world_size} tasks; set GOSSIPML_PEERS")
    peers = {}
    for node, count in zip(info.nodes, counts):
        for local in range(count):
            peers[len(peers)] = f"tcp://{node}:{info.base_port + local}"
    expected = f"tcp://{info.hostname}:{info.base_port + info.local_rank}"
    if peers[info.rank] != expected:
        raise ValueError(f"slurm: rank {info.rank} runs at {expected} but block distribution puts "
                         f"it at {peers[info.rank]}; use srun --distribution=block or set "
                         "GOSSIPML_PEERS")
    return StaticLayout(info.rank, peers, f"tcp://*:{info.base_port + info.local_rank}", "slurm")


def _kubernetes(info: LaunchInfo) -> StaticLayout:
    pod, _, service = info.hostname.partition(".")
    m = _POD.match(pod)
    if m is None:  # detect_launch_env already checked this; keep the error honest anyway
        raise ValueError(f"kubernetes: {pod!r} is not a StatefulSet pod name <set>-<ordinal>")
    suffix = f".{service}" if service else ""
    peers = {i: f"tcp://{m['set']}-{i}{suffix}:{info.base_port}" for i in range(info.world_size)}
    return StaticLayout(info.rank, peers, f"tcp://*:{info.base_port}", "kubernetes")


def _one_host(info: LaunchInfo) -> StaticLayout:
    if info.local_rank != info.rank:
        raise ValueError(f"{info.source}: every rank is on this host but rank {info.rank} has local "
                         f"rank {info.local_rank}; set GOSSIPML_PEERS to place the peers")
    peers = {r: f"tcp://127.0.0.1:{info.base_port + r}" for r in range(info.world_size)}
    return StaticLayout(info.rank, peers, None, f"{info.source} (one host)")


def static_layout(environ: Mapping[str, str], hostname: str | None = None) -> StaticLayout:
    """This peer's id and every peer's address from ``environ`` (see the module docstring)."""
    info = detect_launch_env(environ, hostname)
    if environ.get("GOSSIPML_PEERS"):
        return _from_list(environ, info)
    if info is None:
        raise ValueError("no peer file and no launcher environment: pass --peers FILE, run under "
                         "srun or a StatefulSet (GOSSIPML_WORLD_SIZE, GOSSIPML_SERVICE), "
                         "or set GOSSIPML_PEERS=tcp://host0:5555,... and GOSSIPML_RANK")
    if info.source == "slurm":
        return _slurm(environ, info)
    if info.source == "kubernetes":
        return _kubernetes(info)
    if info.is_one_host():
        return _one_host(info)
    raise ValueError(f"{info.source} gives rank {info.rank} of {info.world_size} but not where the "
                     "other peers run (they are not all on this host): set "
                     "GOSSIPML_PEERS=tcp://host0:5555,... (id order)")
