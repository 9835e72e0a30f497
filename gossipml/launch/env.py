"""Who am I in this job: rank, world size and seeds from what standard launchers put in the environment.

Precedence (the first that matches wins; an inner launcher beats the allocation it runs in):

1. ``gossipml``: ``GOSSIPML_RANK`` and ``GOSSIPML_WORLD_SIZE`` set by hand.
2. ``torchrun``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` (seed:
   ``MASTER_ADDR``). Beats Slurm because ``srun torchrun ...`` sets both and torchrun's ranks
   are the per-process ones.
3. ``openmpi``: ``OMPI_COMM_WORLD_RANK``, ``OMPI_COMM_WORLD_SIZE``, ``OMPI_COMM_WORLD_LOCAL_RANK``,
   ``OMPI_COMM_WORLD_LOCAL_SIZE``.
4. ``pmi`` (MPICH, Intel MPI, ``srun --mpi=pmi2``): ``PMI_RANK``, ``PMI_SIZE`` (``MPI_LOCALRANKID``,
   ``MPI_LOCALNRANKS``).
5. ``slurm``: ``SLURM_PROCID``, ``SLURM_NTASKS`` (or ``SLURM_NPROCS``), ``SLURM_LOCALID``; nodes
   from ``SLURM_STEP_NODELIST`` / ``SLURM_JOB_NODELIST`` / ``SLURM_NODELIST`` (seed: first node).
6. ``kubernetes`` StatefulSet: ``GOSSIPML_WORLD_SIZE`` plus a pod hostname ``<set>-<ordinal>``
   (``HOSTNAME``), inside a pod (``KUBERNETES_SERVICE_HOST``) or with ``GOSSIPML_SERVICE`` set;
   seed: ``tcp://<set>-0.<GOSSIPML_SERVICE>:<port>`` (the headless Service's DNS name).

``GOSSIPML_SEEDS`` (comma-separated endpoints) replaces the derived seeds in every case and
``GOSSIPML_PORT`` (default 5555) is the base port; local rank ``r`` binds ``base_port + r``.
``local_size`` (how many ranks share this host) is kept when the launcher says it: a job whose
ranks all run on one host needs no list of addresses (see ``gossipml.launch.static``).
"""

from __future__ import annotations

import dataclasses
import platform
import re
from dataclasses import dataclass
from typing import Mapping

__all__ = ["LaunchInfo", "detect_launch_env", "expand_slurm_nodelist", "DEFAULT_PORT"]

DEFAULT_PORT = 5555
_ORDINAL = re.compile(r"^(?P<set>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>\d+)$")


@dataclass(frozen=True)
class LaunchInfo:
    """What the launcher told this process; ``source`` names the launcher that was read."""

    rank: int
    world_size: int
    local_rank: int
    hostname: str
    source: str
    seeds: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    base_port: int = DEFAULT_PORT
    local_size: int | None = None

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"{self.source}: rank {self.rank} is not in 0..world_size-1 "
                             f"(world_size {self.world_size}); check the launcher's variables")
        if self.local_rank < 0:
            raise ValueError(f"{self.source}: local rank {self.local_rank} must be >= 0")
        if self.local_size is not None and not self.local_rank < self.local_size <= self.world_size:
            raise ValueError(f"{self.source}: local size {self.local_size} must be above the local "
                             f"rank {self.local_rank} and at most the world size {self.world_size}")

    def is_one_host(self) -> bool:
        """True when the launcher says every rank of the job runs on this host."""
        return self.local_size == self.world_size

    def address(self) -> str:
        """The endpoint this peer binds and announces: ``tcp://<hostname>:<base_port + local_rank>``."""
        return f"tcp://{self.hostname}:{self.base_port + self.local_rank}"


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Slurm node list {text!r}: ']' without '['")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ValueError(f"Slurm node list {text!r}: '[' without ']'")
    parts.append("".join(cur))
    return [p for p in parts if p]


def _expand_range(spec: str, whole: str) -> list[str]:
    out = []
    for item in spec.split(","):
        lo, sep, hi = item.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"Slurm node list {whole!r}: bad range {item!r} (expected 01-03 or 7)")
        if not sep:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise ValueError(f"Slurm node list {whole!r}: range {item!r} goes backwards")
        out += [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
    return out


def _expand_one(name: str, whole: str) -> list[str]:
    start = name.find("[")
    if start < 0:
        return [name]
    end = name.index("]", start)
    head, tail = name[:start], name[end + 1:]
    return [head + mid + rest for mid in _expand_range(name[start + 1:end], whole)
            for rest in _expand_one(tail, whole)]


def expand_slurm_nodelist(nodelist: str) -> list[str]:
    """Expand Slurm's compact host list: ``"node[01-03,07],gpu5"`` -> node01, node02, node03, node07, gpu5."""
    return [host for part in _split_top_level(nodelist.strip()) for host in _expand_one(part, nodelist)]


def _int(env: Mapping[str, str], name: str, source: str) -> int:
    value = env.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{source}: {name}={value!r} is not an integer") from None


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[n] for n in names if env.get(n)), None)


def _launchers(env: Mapping[str, str], hostname: str, port: int) -> LaunchInfo | None:
    def info(source: str, rank: str, size: str, local: str | None, local_size: str | None = None,
             **kw) -> LaunchInfo:
        local_rank = _int(env, local, source) if local and env.get(local) else 0
        n_local = _int(env, local_size, source) if local_size and env.get(local_size) else None
        return LaunchInfo(_int(env, rank, source), _int(env, size, source), local_rank,
                          hostname, source, base_port=port, local_size=n_local, **kw)

    if "GOSSIPML_RANK" in env and "GOSSIPML_WORLD_SIZE" in env:
        return info("gossipml", "GOSSIPML_RANK", "GOSSIPML_WORLD_SIZE", "GOSSIPML_LOCAL_RANK")
    if "RANK" in env and "WORLD_SIZE" in env:
        seeds = (f"tcp://{env['MASTER_ADDR']}:{port}",) if env.get("MASTER_ADDR") else ()
        return info("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", seeds=seeds)
    if "OMPI_COMM_WORLD_RANK" in env and "OMPI_COMM_WORLD_SIZE" in env:
        return info("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                    "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE")
    if "PMI_RANK" in env and "PMI_SIZE" in env:
        return info("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")
    if "SLURM_PROCID" in env and ("SLURM_NTASKS" in env or "SLURM_NPROCS" in env):
        size = "SLURM_NTASKS" if "SLURM_NTASKS" in env else "SLURM_NPROCS"
        nodelist = _first(env, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
        nodes = tuple(expand_slurm_nodelist(nodelist)) if nodelist else ()
        seeds = (f"tcp://{nodes[0]}:{port}",) if nodes else ()
        return info("slurm", "SLURM_PROCID", size, "SLURM_LOCALID", seeds=seeds, nodes=nodes)
    return _kubernetes(env, hostname, port)


def _kubernetes(env: Mapping[str, str], hostname: str, port: int) -> LaunchInfo | None:
    in_pod = "KUBERNETES_SERVICE_HOST" in env or "GOSSIPML_SERVICE" in env
    match = _ORDINAL.match(hostname)
    if not (in_pod and "GOSSIPML_WORLD_SIZE" in env):
        return None
    if match is None:
        raise ValueError(f"kubernetes: hostname {hostname!r} is not a StatefulSet pod name "
                         "<set>-<ordinal>; run gossipml in a StatefulSet or set GOSSIPML_RANK")
    service = env.get("GOSSIPML_SERVICE")
    seed = f"{match['set']}-0.{service}" if service else f"{match['set']}-0"
    return LaunchInfo(int(match["ordinal"]), _int(env, "GOSSIPML_WORLD_SIZE", "kubernetes"), 0,
                      f"{hostname}.{service}" if service else hostname, "kubernetes",
                      seeds=(f"tcp://{seed}:{port}",), base_port=port)


def detect_launch_env(environ: Mapping[str, str], hostname: str | None = None) -> LaunchInfo | None:
    """Read rank, world size, local rank and seeds from ``environ``; None when no launcher is seen.

    ``hostname`` defaults to ``SLURMD_NODENAME``, then ``HOSTNAME``, then this machine's name.
    """
    host = hostname or _first(environ, "SLURMD_NODENAME", "HOSTNAME") or platform.node()
    port = _int(environ, "GOSSIPML_PORT", "GOSSIPML_PORT") if environ.get("GOSSIPML_PORT") else DEFAULT_PORT
    found = _launchers(environ, host, port)
    if found is None or not environ.get("GOSSIPML_SEEDS"):
        return found
    seeds = tuple(s.strip() for s in environ["GOSSIPML_SEEDS"].split(",") if s.strip())
    bad = [s for s in seeds if "://" not in s]
    if bad:
        raise ValueError(f"GOSSIPML_SEEDS: {bad} are not endpoints such as tcp://host:5555")
    return dataclasses.replace(found, seeds=seeds)
