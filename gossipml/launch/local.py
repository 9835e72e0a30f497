"""``gossipml run``: start every peer of an experiment on this machine and report.

One process per peer over tcp loopback (free ports found by binding port 0), each running
:func:`run_peer`: forked from this runner once it has imported torch and loaded the dataset
(``[run] start_method = "fork"``, the default: see :mod:`gossipml.launch.zygote`), or a fresh
``gossipml peer`` interpreter per peer (``"spawn"``, the previous way). The runner watches their
event streams for live progress, wakes as soon as a child exits, enforces an overall deadline
(every child is killed past it), and writes the run folder: resolved config, peer file, per-peer
events and logs, ``summary.json`` and ``accuracy.png``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from gossipml.comm.addresses import free_ports
from gossipml.config import ExperimentConfig
from gossipml.events import EventTail
from gossipml.launch.peersfile import PeerEntry, write_peers
from gossipml.launch.results import (all_started, events_path, failure_reasons, plot_accuracy,
                                     progress_rows, summarize, write_summary)

__all__ = ["RunResult", "free_ports", "run_local", "run_in_process", "feature_split_run",
           "child_env", "task_aggregation_context", "failure_reasons", "run_peer"]


@dataclass
class RunResult:
    """What a finished local run left: its folder, summary, and each child's exit code."""

    out_dir: Path
    summary: dict[str, Any]
    returncodes: dict[int, int | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every peer finished."""
        return not self.summary["failed_peers"]



def child_env(torch_threads: int) -> dict[str, str]:
    """Environment for a peer process: one (or the configured) thread per BLAS/OpenMP pool."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(torch_threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start_children(cfg: ExperimentConfig, out: Path, n: int,
                    peers: Mapping[int, str]) -> dict[int, Any]:
    """One process per peer, by ``[run] start_method``: each a :class:`subprocess.Popen` or a
    :class:`~gossipml.launch.zygote.ForkedPeer` (both have pid, poll, wait, kill)."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    if cfg.run.start_method == "fork":
        from gossipml.launch.zygote import fork_peer, preload

        dataset = preload(cfg)
        return {i: fork_peer(cfg, i, _peer_main(cfg, i, peers, out, dataset),
                             log_path=out / "logs" / f"peer-{i}.log") for i in range(n)}
    procs: dict[int, Any] = {}
    for i in range(n):
        cmd = [sys.executable, "-m", "gossipml", "peer", "--peers", str(out / "peers.toml"),
               "--id", str(i), "--events", str(events_path(out, i)), str(out / "config.json")]
        with open(out / "logs" / f"peer-{i}.log", "wb") as logf:
            procs[i] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=child_env(cfg.run.torch_threads),
                                        start_new_session=True)
    return procs


def _peer_main(cfg: ExperimentConfig, i: int, peers: Mapping[int, str], out: Path,
               dataset: Any) -> Callable[[], int]:
    return lambda: run_peer(cfg, i, peers, events=str(events_path(out, i)), dataset=dataset)


def _wait_for_exit(procs: dict[int, Any], timeout_s: float) -> None:
    """Sleep until a child ends or ``timeout_s`` passes (a child's end wakes it at once)."""
    fds = []
    try:
        for p in procs.values():
            if p.poll() is None:
                try:
                    fds.append(os.pidfd_open(p.pid))
                except OSError:  # ended between poll and open
                    return
        if fds:
            select.select(fds, [], [], timeout_s)
    finally:
        for fd in fds:
            os.close(fd)


def _kill_all(procs: dict[int, Any]) -> None:
    for p in procs.values():
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
    for p in procs.values():
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def run_local(cfg: ExperimentConfig, out: Path, *,
              on_progress: Callable[[list[dict[str, Any]], float], None] | None = None,
              progress_interval_s: float = 1.0,
              kill_after_s: dict[int, float] | None = None) -> RunResult:
    """Run every peer as a process on this machine; never outlives ``cfg.run.deadline_s``.

    ``kill_after_s`` SIGKILLs chosen peers that many seconds after every peer has started its
    loop (a failure drill).
    """
    n = cfg.run.n_peers
    out.mkdir(parents=True, exist_ok=True)
    ports = free_ports(n)
    peers = {i: f"tcp://127.0.0.1:{p}" for i, p in enumerate(ports)}
    write_peers(out / "peers.toml", [PeerEntry(i, a) for i, a in peers.items()])
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    t0 = time.monotonic()
    procs = _start_children(cfg, out, n, peers)
    killed: set[int] = set()
    last_progress = 0.0
    started_s: float | None = None
    extra: dict[str, Any] | None = None
    tails = [EventTail(events_path(out, i)) for i in range(n)]
    try:
        while any(p.poll() is None for p in procs.values()):
            elapsed = time.monotonic() - t0
            if elapsed > cfg.run.deadline_s:
                break
            if started_s is None and all_started(tails):
                started_s = elapsed
            if started_s is not None and extra is None:  # while peers train, not after
                extra = _extra(cfg, out)
                _warm_plotting()
            for pid, after in (kill_after_s or {}).items():
                if (started_s is not None and elapsed - started_s >= after and pid not in killed
                        and procs[pid].poll() is None):
                    os.killpg(procs[pid].pid, signal.SIGKILL)
                    killed.add(pid)
            if on_progress is not None and elapsed - last_progress >= progress_interval_s:
                last_progress = elapsed
                on_progress(progress_rows(tails), elapsed)
            _wait_for_exit(procs, 0.1)
    finally:
        _kill_all(procs)
    wall_s = time.monotonic() - t0
    codes = {i: p.returncode for i, p in procs.items()}
    failed = [i for i, c in codes.items() if c != 0]
    extra = {**(extra or _extra(cfg, out)), "deadline_hit": wall_s > cfg.run.deadline_s,
             "start_method": cfg.run.start_method, "errors": failure_reasons(out, failed, codes)}
    summary = summarize(out, n, wall_s=wall_s, failed=failed, extra=extra)
    write_summary(out, summary)
    plot_accuracy(out, n, title=f"{cfg.name}: {n} peers, {cfg.topology.kind}")
    return RunResult(out, summary, codes)


def run_peer(cfg: ExperimentConfig, peer_id: int, peers: Mapping[int, str], *, events: str,
             bind: str | None = None, device: str | None = None, dataset: Any = None) -> int:
    """Build peer ``peer_id``'s task and run it to the end (what ``gossipml peer`` does for
    ``[run] mode = "processes"``); ``dataset`` is the already loaded dataset, if any."""
    import dataclasses

    import torch
    import zmq

    from gossipml.comm.security import curve_for
    from gossipml.launch.local import task_aggregation_context
    from gossipml.peer import Peer
    from gossipml.tasks import build_task

    torch.set_num_threads(cfg.run.torch_threads)
    task_cfg = cfg.task if device is None else dataclasses.replace(cfg.task, device=device)
    torch.manual_seed(cfg.run.seed + peer_id)
    task = build_task(task_cfg, cfg.data, peer_id, len(peers), cfg.run.seed, dataset=dataset)
    context = zmq.Context()
    curve = curve_for(cfg, peer_id, context)  # the ZAP handler runs before the ROUTER binds
    try:
        with Peer(task.model, cfg, id=peer_id, peers=peers, bind=bind,
                  num_samples=task.num_samples, events_path=events, context=context, curve=curve,
                  aggregation_context=task_aggregation_context(
                      task, cfg, dataset, n_peers=len(peers))) as peer:
            peer.run(task)
    finally:
        if curve is not None:
            curve.stop()
        context.term()
    return 0


def task_aggregation_context(task: Any, cfg: ExperimentConfig | None = None,
                             dataset: Any = None, *, n_peers: int | None = None) -> dict[str, Any]:
    """What aggregation rules may need from a task: its local inputs (ensemble-then-distill
    relabels them), a factory of fresh models of the same architecture, with
    ``[aggregation] public_samples = N`` an unlabeled public set (N training inputs of the
    dataset drawn with a fixed seed, the same for every peer; their labels are never used), and
    for ``rule = "admm"`` the prox of the task's local loss (:mod:`gossipml.tasks.prox`), scaled
    so the ``n_peers`` (default ``[run] n_peers``) local objectives sum to the centralized one."""
    import copy

    ctx: dict[str, Any] = {"model_factory": lambda: copy.deepcopy(task.model)}
    if getattr(task, "x", None) is not None:
        ctx["data"] = task.x
    n_public = cfg.aggregation.public_samples if cfg is not None else 0
    if n_public and cfg is not None and not cfg.data.stream:
        import numpy as np
        import torch

        from gossipml.data import dataset_for

        data = dataset_for(cfg.data, dataset)
        pick = np.random.default_rng([cfg.run.seed, 7]).permutation(len(data.x_train))
        ctx["public_data"] = torch.as_tensor(data.x_train[np.sort(pick[:n_public])]).to(
            getattr(task, "device", "cpu"))
    if cfg is not None and cfg.aggregation.rule == "admm":
        ctx["prox"] = _admm_prox(task, cfg, n_peers or cfg.run.n_peers)
    return ctx


def _admm_prox(task: Any, cfg: ExperimentConfig, n_peers: int) -> Any:
    """The task's local prox; ``[task] weight_decay`` is its l2, the shards' union its data."""
    from gossipml.data import partition_indices
    from gossipml.tasks.prox import build_local_prox

    if cfg.data.stream:
        raise ValueError("ADMM's prox needs a fixed local dataset; [data] stream has none")
    total = sum(len(p) for p in partition_indices(task.dataset.y_train, n_peers, cfg.data))
    agg = cfg.aggregation
    return build_local_prox(task, n_peers=n_peers, total_samples=total,
                            l2=cfg.task.weight_decay, steps=agg.prox_steps, lr=agg.prox_lr,
                            batch_size=agg.prox_batch_size, seed=cfg.run.seed)


def run_in_process(cfg: ExperimentConfig, out: Path, *,
                   on_progress: Callable[[list[dict[str, Any]], float], None] | None = None,
                   progress_interval_s: float = 1.0) -> RunResult:
    """Run every peer as a thread of this process over ``inproc://`` (the computation-parallel
    mode, and the cheap way to run many small peers): same Peer, same wire format, one zmq
    context, ``[run] comm_threads`` communication threads (hubs) shared by all (0: one per
    peer) and one copy of the dataset."""
    import functools
    import threading

    import torch

    from gossipml.comm.hub import CommHub
    from gossipml.comm.transport import Transport
    from gossipml.data import dataset_for
    from gossipml.peer import Peer
    from gossipml.tasks import build_task

    n = cfg.run.n_peers
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    addresses = {i: f"inproc://gossipml-{tag}-{i}" for i in range(n)}
    write_peers(out / "peers.toml", [PeerEntry(i, a) for i, a in addresses.items()])
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    torch.set_num_threads(cfg.run.torch_threads)
    dataset = dataset_for(cfg.data, import_path=cfg.task.import_path)
    ctx = shared_context(n, cfg)
    hubs = [CommHub(ctx, poll_interval_s=cfg.transport.poll_interval_s, name=f"gossipml-hub-{k}")
            .start() for k in range(cfg.run.comm_threads)]
    errors: dict[int, BaseException] = {}
    t0 = time.monotonic()
    peers = []
    for i in range(n):  # build every peer, then start them (bind and connect)
        torch.manual_seed(cfg.run.seed + i)
        task = build_task(cfg.task, cfg.data, i, n, cfg.run.seed, dataset=dataset)
        factory = functools.partial(Transport, hub=hubs[i % len(hubs)]) if hubs else Transport
        peers.append((Peer(task.model, cfg, id=i, peers=addresses, num_samples=task.num_samples,
                           events_path=str(events_path(out, i)), context=ctx,
                           aggregation_context=task_aggregation_context(task, cfg, dataset),
                           transport_factory=factory),
                      task))
    for peer, _ in peers:
        peer.start()

    def main(i: int) -> None:
        peer, task = peers[i]
        try:
            peer.run(task)
        except BaseException as exc:  # reported as a failed peer
            errors[i] = exc
        finally:
            peer.close()

    threads = [threading.Thread(target=main, args=(i,), daemon=True, name=f"peer-{i}")
               for i in range(n)]
    for t in threads:
        t.start()
    last = 0.0
    tails = [EventTail(events_path(out, i)) for i in range(n)]
    while any(t.is_alive() for t in threads) and time.monotonic() - t0 < cfg.run.deadline_s:
        time.sleep(0.2)
        if on_progress is not None and time.monotonic() - last >= progress_interval_s:
            last = time.monotonic()
            on_progress(progress_rows(tails), last - t0)
    wall_s = time.monotonic() - t0
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    for hub in hubs:  # a hung peer's transport ends with its hub: that peer stops with why
        hub.close()
    if not hung:
        ctx.term()
    summary = summarize(out, n, wall_s=wall_s, failed=sorted(set(errors) | set(hung)),
                        extra={**_extra(cfg, out, wall_s), "mode": "threads",
                               "errors": {str(k): repr(v) for k, v in errors.items()}})
    write_summary(out, summary)
    plot_accuracy(out, n, title=f"{cfg.name}: {n} peers in one process, {cfg.topology.kind}")
    return RunResult(out, summary, {i: (1 if i in errors or i in hung else 0) for i in range(n)})


def shared_context(n_peers: int, cfg: ExperimentConfig) -> Any:
    """One ZeroMQ context for ``n_peers`` peers of this process: a ROUTER and a DEALER per
    link each (see :func:`gossipml.comm.hub.sized_context`)."""
    from gossipml.comm.hub import sized_context
    from gossipml.policies.topology import build_topology

    topology = build_topology(cfg.topology, n_peers)
    degree = max((len(topology.links(i)) for i in range(n_peers)), default=0)
    return sized_context(n_peers * (degree + 1), what=f"{n_peers} peers of degree {degree}")


def feature_split_run(cfg: ExperimentConfig, out: Path) -> RunResult:
    """``gossipml run`` for ``[run] mode = "feature_split"``: the feature-split peers as threads
    of this process, then the run folder's ``config.json`` and ``summary.json`` (standard summary
    plus the extras of :func:`~gossipml.featuresplit.run.run_feature_split`)."""
    from gossipml.featuresplit.run import run_feature_split

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    t0 = time.monotonic()
    extras = run_feature_split(cfg, out)
    wall_s = time.monotonic() - t0
    summary = summarize(out, cfg.run.n_peers, wall_s=wall_s, failed=extras["failed_peers"],
                        extra={"experiment": cfg.name, "out_dir": str(out), **extras})
    write_summary(out, summary)
    failed = set(summary["failed_peers"])
    return RunResult(out, summary, {i: int(i in failed) for i in range(cfg.run.n_peers)})


def _warm_plotting() -> None:
    """Import matplotlib while the peers train, so the plot after the last round is quick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _extra(cfg: ExperimentConfig, out: Path, wall_s: float | None = None) -> dict[str, Any]:
    from gossipml.policies.topology import build_topology

    gap = None
    if not cfg.membership.enabled:
        gap = build_topology(cfg.topology, cfg.run.n_peers).spectral_gap()
    return {"experiment": cfg.name, "topology": cfg.topology.kind,
            "spectral_gap": None if gap is None else round(float(gap), 6),
            "deadline_hit": wall_s is not None and wall_s > cfg.run.deadline_s, "out_dir": str(out),
            "label_histograms": label_histograms_of(cfg)}


def label_histograms_of(cfg: ExperimentConfig) -> list[list[int]] | None:
    """Each peer's training-label histogram under the run's partition (the same seeded split
    every peer computes), or None for streams and regression data."""
    from gossipml.data import dataset_for, label_histograms, partition_indices

    if cfg.data.stream:
        return None
    data = dataset_for(cfg.data, import_path=cfg.task.import_path)
    if data.num_classes == 0:
        return None
    parts = partition_indices(data.y_train, cfg.run.n_peers, cfg.data)
    return label_histograms(data.y_train, parts, data.num_classes)
