"""Aggregation benchmark: averaging vs ensemble-then-distill under label skew, and plain averaging
vs robust rules with one Byzantine peer.

    python scripts/bench_aggregation.py [--smoke | --quick] [--json] [--only distill|byzantine]
        [--public N] [--seeds N] [--out DIR]

Every run is a real gossipml run (``gossipml.launch.local.run_in_process``: all peers as threads
of one process over ``inproc://``, the same Peer, wire format and aggregators as ``gossipml run``).

Distill scenario (``distill-alpha0.1``, ``distill-alpha0.5``): Fashion-MNIST, 16 peers, Dirichlet
label skew, mlp, synchronous gossip on a ring with k = 4 neighbours, few exchanges with many local
steps between them. ``mean`` (Metropolis-weighted averaging), ``distill`` (ensemble-then-distill
of the own and the neighbours' models, relabelling the peer's local data) and ``distill+public``
(the same, also distilling on ``--public`` unlabeled training images: ``[aggregation]
public_samples``) see the same data, rounds, local steps and seeds; only ``[aggregation]`` differs.

Byzantine scenario (``byzantine-none``, ``-scale100``, ``-nan``, ``-noise``): 8 peers, Fashion-MNIST
iid, mlp, full topology (each peer hears all 7 others, so a median/trimmed mean over 8 models can
outvote one attacker; on a ring a peer has only 2 neighbours), peer 3 the attacker. Rules ``mean``,
``median``, ``trimmed_mean`` (trim 0.2), ``clipped`` (adaptive radius). ``honest_mean_accuracy``
averages the final accuracy of the honest peers only.

Each row: ``scenario, rule, mean_accuracy, honest_mean_accuracy, min_honest_accuracy, wall_s,
rejected, seed`` (messages rejected by honest peers, all reasons); ``targets`` compares them.
``--seeds N`` runs the distill rows with run seeds 0..N-1 (initial models, batch order; the data
split keeps its ``[data] seed``); the distill gain in ``targets`` is then the mean over seeds,
with the per-seed gains beside it. One seed's gain at alpha 0.1 is noisy (it moves by points
across seeds, and across torch builds or CPUs for one seed): judge the >= 5 point target on
several seeds.
``--smoke`` runs every row in seconds (digits, 4 peers, 2 rounds: a test that the benchmark
works, not a measurement). Measured figures: ``docs/results/bench_aggregation.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from gossipml.launch import local as runner
from gossipml.config import ExperimentConfig

__all__ = ["PRESETS", "distill_config", "byzantine_config", "run_row", "main", "ATTACKER"]

ATTACKER = 3
ATTACKS: dict[str, str] = {"none": "", "scale100": "scale:100", "nan": "nan", "noise": "noise:1.0"}
ROBUST_RULES = ("median", "trimmed_mean", "clipped")

#: Sizes per preset. ``smoke`` runs every row of the full preset, tiny (digits: no system
#: dataset needed); ``quick`` and ``full`` are the measured presets.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"dataset": "digits", "alphas": (0.1, 0.5), "d_peers": 4, "d_rounds": 2,
              "d_steps": 5, "distill_steps": 5, "public": 64, "b_peers": 4, "b_rounds": 2,
              "b_steps": 3, "b_timeout_s": 0.5, "eval_max_samples": 200,
              # start-up handshakes and teardown at 0.1 s, not 1 s: most of a tiny run's time
              "heartbeat_s": 0.1, "transport": {"linger_s": 0.1}},
    "quick": {"dataset": "fmnist", "alphas": (0.1,), "d_peers": 16, "d_rounds": 2,
              "d_steps": 300, "distill_steps": 300, "public": 2000, "b_peers": 8,
              "b_rounds": 8, "b_steps": 20, "b_timeout_s": 3.0, "eval_max_samples": 2000},
    "full": {"dataset": "fmnist", "alphas": (0.1, 0.5), "d_peers": 16, "d_rounds": 3,
             "d_steps": 300, "distill_steps": 300, "public": 2000, "b_peers": 8,
             "b_rounds": 20, "b_steps": 30, "b_timeout_s": 3.0, "eval_max_samples": 2000},
}


def _task(eval_max_samples: int) -> dict[str, Any]:
    return {"model": "mlp", "hidden": 128, "optimizer": "sgd", "lr": 0.05,
            "momentum": 0.9, "batch_size": 32, "eval_max_samples": eval_max_samples}


def distill_config(rule: str, alpha: float, *, rounds: int, interval_steps: int,
                   n_peers: int = 16, seed: int = 0, distill: dict[str, Any] | None = None,
                   topology: dict[str, Any] | None = None, dataset: str = "fmnist",
                   eval_max_samples: int = 2000,
                   transport: dict[str, Any] | None = None,
                   heartbeat_s: float = 1.0) -> ExperimentConfig:
    """Dirichlet(alpha) label skew, ring k=4; ``rule`` "mean" or "distill" (``distill`` overrides
    its keys, e.g. ``{"public_samples": 2000}`` for an unlabeled public set)."""
    aggregation: dict[str, Any] = {"rule": rule}
    if rule == "distill":
        aggregation.update({"temperature": 2.0, "distill_steps": 300, "distill_lr": 1e-3,
                            "distill_batch_size": 64, "relabel_fraction": 1.0,
                            "distill_init": "average", **(distill or {})})
    return ExperimentConfig.from_dict({
        "name": f"bench-agg-{rule}-a{alpha}",
        "run": {"n_peers": n_peers, "mode": "threads", "deadline_s": 1800, "seed": seed},
        "data": {"dataset": dataset, "partition": "dirichlet", "alpha": alpha},
        "task": _task(eval_max_samples),
        "topology": topology or {"kind": "ring", "k": 4, "weights": "metropolis"},
        "pacing": {"mode": "sync", "timeout_s": 120.0, "interval_steps": interval_steps,
                   "heartbeat_interval_s": heartbeat_s},
        "transport": dict(transport or {}),
        "aggregation": aggregation,
        "peer": {"rounds": rounds, "eval_every_rounds": rounds},
    })


def byzantine_config(rule: str, attack: str, *, rounds: int, interval_steps: int,
                     n_peers: int = 8, seed: int = 0, timeout_s: float = 3.0,
                     dataset: str = "fmnist", eval_max_samples: int = 2000,
                     transport: dict[str, Any] | None = None,
                     heartbeat_s: float = 1.0) -> ExperimentConfig:
    """iid data, full topology, peer ``ATTACKER`` sends ``attack`` ("" for none)."""
    peer: dict[str, Any] = {"rounds": rounds, "eval_every_rounds": rounds}
    if attack:
        peer.update({"attack": attack, "attackers": [ATTACKER]})
    return ExperimentConfig.from_dict({
        "name": f"bench-agg-{rule}-{attack or 'none'}",
        "run": {"n_peers": n_peers, "mode": "threads", "deadline_s": 1800, "seed": seed},
        "data": {"dataset": dataset, "partition": "iid"},
        "task": _task(eval_max_samples),
        "topology": {"kind": "full", "weights": "uniform"},
        # a short timeout: a NaN attacker's models are all rejected, and sync pacing waits the
        # whole timeout_s for it every round (rounds here take well under a second)
        "pacing": {"mode": "sync", "timeout_s": timeout_s, "interval_steps": interval_steps,
                   "heartbeat_interval_s": heartbeat_s},
        "aggregation": {"rule": rule, "trim_fraction": 0.2},
        "transport": dict(transport or {}),
        "peer": peer,
    })


def run_row(scenario: str, cfg: ExperimentConfig, out: Path, *,
            label: str | None = None) -> dict[str, Any]:
    """Run one experiment in threads mode; its row."""
    s = runner.run_in_process(cfg, out).summary
    attackers = set(cfg.peer.attackers)
    honest = [p for p in s["peers"] if p["id"] not in attackers]
    accs = [p["final_accuracy"] for p in honest if p["final_accuracy"] is not None]
    return {
        "scenario": scenario, "rule": label or cfg.aggregation.rule,
        "mean_accuracy": _r(s["mean_accuracy"]),
        "honest_mean_accuracy": _r(statistics.fmean(accs)) if accs else None,
        "min_honest_accuracy": _r(min(accs)) if accs else None,
        "wall_s": round(s["wall_s"], 1),
        "rejected": sum(int(p.get("rejected") or 0) for p in honest),
        "failed_peers": s["failed_peers"], "seed": cfg.run.seed, "out_dir": str(out),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _distill_gains(rows: list[dict[str, Any]], alpha: str) -> list[float]:
    """Points distill gains over mean at ``alpha``, one per seed that has both rows."""
    acc = {(r["rule"], r.get("seed", 0)): r["mean_accuracy"] for r in rows
           if r["scenario"] == f"distill-alpha{alpha}"}
    seeds = sorted({seed for _, seed in acc})
    return [round(100 * (acc[("distill", s)] - acc[("mean", s)]), 2) for s in seeds
            if ("distill", s) in acc and ("mean", s) in acc]


def _targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["scenario"], r["rule"]): r for r in rows if r.get("seed", 0) == 0}
    out: dict[str, Any] = {}
    for alpha in ("0.1", "0.5"):
        gains = _distill_gains(rows, alpha)
        if gains:
            out[f"distill_gain_points_alpha{alpha}"] = round(statistics.fmean(gains), 2)
        if len(gains) > 1:
            out[f"distill_gain_points_alpha{alpha}_by_seed"] = gains
    if "distill_gain_points_alpha0.1" in out:
        out["distill_target_met"] = out["distill_gain_points_alpha0.1"] >= 5.0
    base = by.get(("byzantine-none", "mean"))
    if base:
        costs = {rule: round(100 * (base["honest_mean_accuracy"]
                                    - by[("byzantine-none", rule)]["honest_mean_accuracy"]), 2)
                 for rule in ROBUST_RULES if ("byzantine-none", rule) in by}
        out["robust_cost_points_no_attack"] = costs
        out["robust_cost_target_met"] = all(c <= 1.0 for c in costs.values())
        honest = {key: r["honest_mean_accuracy"] for key, r in by.items()}
        drops = {f"{rule}/{a}": round(100 * (honest[("byzantine-none", rule)]
                                             - honest[(f"byzantine-{a}", rule)]), 2)
                 for rule in ROBUST_RULES for a in ATTACKS if a != "none"
                 and (f"byzantine-{a}", rule) in by and ("byzantine-none", rule) in by}
        out["robust_drop_points_under_attack"] = drops
        out["robust_attack_target_met"] = all(d <= 2.0 for d in drops.values())
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios; print a table (or JSON: the list of rows, then targets on stderr)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer rounds (under 10 min here)")
    size.add_argument("--smoke", action="store_true",
                      help="every row, tiny (seconds; checks the benchmark runs)")
    ap.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    ap.add_argument("--only", choices=("distill", "byzantine"), default=None)
    ap.add_argument("--public", type=int, default=None,
                    help="unlabeled training images in the distill+public rows "
                         "(default 2000; 64 with --smoke)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="run the distill rows with seeds 0..N-1; targets use the mean gain")
    ap.add_argument("--out", type=Path, default=None, help="keep run folders here")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    p = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-aggregation-"))
    public = args.public if args.public is not None else p["public"]
    data = {"dataset": p["dataset"], "eval_max_samples": p["eval_max_samples"],
            "transport": p.get("transport"), "heartbeat_s": p.get("heartbeat_s", 1.0)}
    rows: list[dict[str, Any]] = []

    def add(scenario: str, cfg: ExperimentConfig, label: str | None = None) -> None:
        name = label or cfg.aggregation.rule
        name += f"-seed{cfg.run.seed}" if cfg.run.seed else ""
        rows.append(run_row(scenario, cfg, root / f"{scenario}-{name}", label=label))
        print(f"# {json.dumps(rows[-1])}", file=sys.stderr, flush=True)

    if args.only in (None, "distill"):
        steps = {"distill_steps": p["distill_steps"]}
        for alpha in p["alphas"]:
            for seed in range(args.seeds):
                for rule, label, extra in (("mean", None, {}), ("distill", None, steps),
                                           ("distill", "distill+public",
                                            {**steps, "public_samples": public})):
                    add(f"distill-alpha{alpha}", distill_config(
                        rule, alpha, rounds=p["d_rounds"], interval_steps=p["d_steps"],
                        n_peers=p["d_peers"], seed=seed, distill=extra, **data), label)
    if args.only in (None, "byzantine"):
        for attack in ATTACKS:
            for rule in ("mean", *ROBUST_RULES):
                add(f"byzantine-{attack}", byzantine_config(
                    rule, ATTACKS[attack], rounds=p["b_rounds"], interval_steps=p["b_steps"],
                    n_peers=p["b_peers"], timeout_s=p["b_timeout_s"], **data))
    targets = _targets(rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        print(json.dumps({"targets": targets}, indent=2), file=sys.stderr)
        return 0
    print(f"{'scenario':22} {'rule':14} {'seed':>4} {'mean_acc':>8} {'honest':>8} "
          f"{'min_hon':>8} {'wall_s':>7} {'rejected':>8}")
    for r in rows:
        print(f"{r['scenario']:22} {r['rule']:14} {r['seed']:4d} {r['mean_accuracy']:8.4f} "
              f"{r['honest_mean_accuracy']:8.4f} {r['min_honest_accuracy']:8.4f} "
              f"{r['wall_s']:7.1f} {r['rejected']:8d}")
    print(json.dumps(targets, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
