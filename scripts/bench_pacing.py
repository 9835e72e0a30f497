"""Pacing benchmark: sync, async, SSP(1, 2, 4) and backup (k = d - 1) with one peer 3x slower,
plus the overlap ratio (wall time per round with communication vs. the same steps without).

    python scripts/bench_pacing.py [--quick] [--json] [--threads] [--out DIR]

Every mode runs the same experiment (Fashion-MNIST, mlp 256 wide, 20 steps a round, ring of ``n_peers``, equal rounds, peer 3
slowed 3x through ``[emulation] compute_slowdown``) with ``gossipml.runner.run_local`` (one process
per peer over tcp loopback; ``--threads``: ``run_in_process``). Per mode: ``wall_s`` (the whole run,
start-up included), ``train_s`` (the slowest peer's time from its ``start`` event to its ``final``
event), ``mean_peer_train_s`` (the same, averaged over peers), ``mean_accuracy`` and
``median_round_s`` (median over peers of each peer's median round time).

Overlap: ``n_overlap`` peers, async, an exchange every H local steps of an mlp on Fashion-MNIST
(about 100k parameters, 400 KB a message) against the same peers and steps on a topology with no
edges (communication off, same CPU contention); ``overlap_ratio`` = median round time with / without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.results import events_path
from gossipml.runner import run_in_process, run_local

__all__ = ["pacing_config", "overlap_config", "run_mode", "main"]

SLOW_PEER = 3
MODES: dict[str, dict[str, Any]] = {
    "sync": {"mode": "sync"},
    "async": {"mode": "async"},
    "ssp1": {"mode": "ssp", "max_staleness": 1},
    "ssp2": {"mode": "ssp", "max_staleness": 2},
    "ssp4": {"mode": "ssp", "max_staleness": 4},
    "backup": {"mode": "backup"},  # backup_k unset: d - 1
}


def pacing_config(pacing: dict[str, Any], n_peers: int, rounds: int, threads: bool) -> ExperimentConfig:
    """The benchmark experiment for one pacing table."""
    return ExperimentConfig.from_dict({
        "name": f"bench-pacing-{pacing['mode']}",
        "run": {"n_peers": n_peers, "mode": "threads" if threads else "processes",
                "deadline_s": 600},
        "data": {"dataset": "fmnist", "partition": "iid"},
        "task": {"model": "mlp", "hidden": 256, "optimizer": "sgd", "lr": 0.05,
                 "momentum": 0.9, "batch_size": 64, "eval_max_samples": 2000},
        "topology": {"kind": "ring", "weights": "metropolis"},
        "pacing": {"timeout_s": 30.0, "interval_steps": 20, **pacing},
        "peer": {"rounds": rounds, "eval_every_rounds": rounds},
        "emulation": {"compute_slowdown": {str(SLOW_PEER): 3.0}},
    })


def overlap_config(n_peers: int, rounds: int, steps: int, edges_path: Path | None,
                   threads: bool) -> ExperimentConfig:
    """Async, an exchange every ``steps`` steps; ``edges_path``: an empty edge list (no comm)."""
    topology = ({"kind": "edges", "path": str(edges_path)} if edges_path is not None
                else {"kind": "ring", "weights": "metropolis"})
    return ExperimentConfig.from_dict({
        "name": "bench-overlap",
        "run": {"n_peers": n_peers, "mode": "threads" if threads else "processes",
                "deadline_s": 600},
        "data": {"dataset": "fmnist", "partition": "iid"},
        "task": {"model": "mlp", "hidden": 128, "optimizer": "sgd", "lr": 0.05,
                 "batch_size": 32, "eval_max_samples": 1000},
        "topology": topology,
        "pacing": {"mode": "async", "interval_steps": steps},
        "peer": {"rounds": rounds, "eval_every_rounds": rounds},
    })


def _train_times(out: Path, n: int) -> list[float]:
    times = []
    for i in range(n):
        ev = read_events(events_path(out, i))
        start = next((e["t_s"] for e in ev if e["event"] == "start"), None)
        end = next((e["t_s"] for e in ev if e["event"] == "final"), None)
        if start is not None and end is not None:
            times.append(end - start)
    return times


def run_mode(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    """Run one experiment; the figures the benchmark reports."""
    runner = run_in_process if cfg.run.mode == "threads" else run_local
    s = runner(cfg, out).summary
    train = _train_times(out, cfg.run.n_peers)
    return {"wall_s": s["wall_s"], "train_s": round(max(train), 3) if train else None,
            "mean_peer_train_s": round(statistics.fmean(train), 3) if train else None,
            "mean_accuracy": s["mean_accuracy"], "median_round_s": s["median_round_s"],
            "failed_peers": s["failed_peers"], "out_dir": str(out)}


def _targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sync, ssp2, backup = rows["sync"], rows["ssp2"], rows["backup"]
    speedup = sync["train_s"] / ssp2["train_s"]
    acc_drop_pts = 100 * (sync["mean_accuracy"] - ssp2["mean_accuracy"])
    cut = 1 - backup["median_round_s"] / sync["median_round_s"]
    return {"ssp2_speedup_vs_sync": round(speedup, 3),
            "ssp2_accuracy_drop_points": round(acc_drop_pts, 3),
            "ssp2_target_met": speedup >= 1.5 and acc_drop_pts <= 0.3,
            "backup_median_round_cut": round(cut, 3), "backup_target_met": cut >= 0.2}


def main(argv: list[str] | None = None) -> int:
    """Run every mode and the overlap pair; print a table or JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (under 10 min here)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--threads", action="store_true", help="peers as threads, not processes")
    ap.add_argument("--n-peers", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="keep run folders here")
    args = ap.parse_args(argv)
    if args.n_peers < 5:
        ap.error("--n-peers must be >= 5 (peer 3 is the slow one)")
    rounds, ov_rounds, ov_steps = (20, 15, 10) if args.quick else (60, 40, 10)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-pacing-"))
    rows: dict[str, dict[str, Any]] = {}
    for name, pacing in MODES.items():
        cfg = pacing_config(pacing, args.n_peers, rounds, args.threads)
        rows[name] = {"mode": name, **run_mode(cfg, root / name)}
        print(f"# {name}: {rows[name]}", file=sys.stderr)
    edges = root / "no_edges.txt"
    edges.parent.mkdir(parents=True, exist_ok=True)
    edges.write_text("# no edges: every peer alone, communication off\n")
    n_ov = 4
    on = run_mode(overlap_config(n_ov, ov_rounds, ov_steps, None, args.threads), root / "ov_on")
    off = run_mode(overlap_config(n_ov, ov_rounds, ov_steps, edges, args.threads),
                   root / "ov_off")
    overlap = {"overlap_ratio": round(on["median_round_s"] / off["median_round_s"], 3),
               "round_s_comm_on": on["median_round_s"], "round_s_comm_off": off["median_round_s"],
               "interval_steps": ov_steps, "n_peers": n_ov, "target_met": None}
    overlap["target_met"] = overlap["overlap_ratio"] <= 1.1
    report = {"n_peers": args.n_peers, "rounds": rounds, "slow_peer": SLOW_PEER,
              "slowdown": 3.0, "run_mode": "threads" if args.threads else "processes",
              "modes": list(rows.values()), "targets": _targets(rows), "overlap": overlap}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'mode':8} {'wall_s':>8} {'train_s':>8} {'peer_s':>8} {'acc':>7} {'round_s':>8}")
        for r in rows.values():
            print(f"{r['mode']:8} {r['wall_s']:8.2f} {r['train_s']:8.2f} "
                  f"{r['mean_peer_train_s']:8.2f} {r['mean_accuracy']:7.4f} "
                  f"{r['median_round_s']:8.4f}")
        print("targets:", report["targets"])
        print("overlap:", overlap)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
