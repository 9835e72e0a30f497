"""bench_pacing's arithmetic: the zero-overhead schedule bound, the per-seed means, which seeds
and scenarios run, and issue #4's targets on the rows. Pure: no runs, no clocks."""

from __future__ import annotations

import statistics
from typing import Any

from gossipml.config import ExperimentConfig
from gossipml.policies.topology import build_topology

__all__ = ["ideal_train_s", "AVERAGED", "mean_row", "seeds_for", "scenarios", "targets"]


def ideal_train_s(cfg: ExperimentConfig, staleness: int | None) -> float:
    """The run's length with zero overhead: every round lasts its emulated steps exactly, a
    model is known the moment its round ends, and a peer waits for its in-neighbours as the
    pacing says (``staleness`` None: sync; else SSP(s), a neighbour's round c - s model needed to
    end round c). The last round is synchronous (``final_sync``). A lower bound on the measured
    ``train_s``; the ratio of two of them is the speedup the schedule allows."""
    n, rounds, em = cfg.run.n_peers, cfg.peer.rounds, cfg.emulation
    topology = build_topology(cfg.topology, n)
    step_s = em.step_time_s * cfg.pacing.interval_steps
    start = [0.0] * n
    ends: list[list[float]] = []
    for r in range(rounds):
        ends.append([start[i] + step_s * em.step_factor(i, r, n) for i in range(n)])
        need = r if staleness is None or r == rounds - 1 else r - staleness
        start = [max([ends[r][i]] + ([ends[need][j] for j in topology.in_neighbors(i, r)]
                                     if need >= 0 else [])) for i in range(n)]
    return max(start)


#: Figures averaged over seeds when ``--seeds`` names more than one.
AVERAGED = ("wall_s", "train_s", "mean_peer_train_s", "mean_accuracy", "median_round_s")


def mean_row(mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's row: the mean of each figure over its runs (one per seed), and the runs."""
    row: dict[str, Any] = {"mode": mode}
    for key in AVERAGED:
        values = [r[key] for r in runs if r[key] is not None]
        row[key] = round(statistics.fmean(values), 5) if len(values) == len(runs) else None
    row["failed_peers"] = sorted({p for r in runs for p in r["failed_peers"]})
    if len(runs) > 1:
        row["per_seed"] = runs
    else:
        row["out_dir"] = runs[0]["out_dir"]
    return row


def seeds_for(mode: str, straggler: str, seeds: list[int] | None,
              target_seeds: list[int]) -> list[int]:
    """The seeds a mode runs: ``seeds`` (``--seeds``) for every mode when given; else the sync and
    ssp2 rows of a moving or cycling straggler run ``target_seeds`` (one seed's accuracy moves
    by +-0.3 points from run to run, as much as the SSP(2) target allows) and every other row
    runs the first of them."""
    if seeds is not None:
        return seeds
    if mode in ("sync", "ssp2") and straggler in ("moving", "cycle"):
        return target_seeds
    return target_seeds[:1]


def scenarios(topologies: list[str], stragglers: list[str]) -> list[tuple[str, str]]:
    """(topology, straggler) pairs to run: every straggler kind on every topology, except the
    fixed one on the first topology only (no pacing beats the slow peer's own compute there)."""
    return [(t, k) for i, t in enumerate(topologies) for k in stragglers
            if k != "fixed" or i == 0]


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue #4's targets on the rows (means over seeds); with ``per_seed`` runs, the SSP(2)
    speedup and accuracy drop of each seed too (sync and ssp2 of a seed share its data split,
    initial model and stragglers)."""
    sync, ssp2 = rows["sync"], rows["ssp2"]
    speedup = sync["train_s"] / ssp2["train_s"]
    acc_drop_pts = 100 * (sync["mean_accuracy"] - ssp2["mean_accuracy"])
    out: dict[str, Any] = {"ssp2_speedup_vs_sync": round(speedup, 3),
                           "ssp2_accuracy_drop_points": round(acc_drop_pts, 3),
                           "ssp2_target_met": speedup >= 1.5 and acc_drop_pts <= 0.3}
    if "per_seed" in sync and "per_seed" in ssp2:
        out["ssp2_per_seed"] = [
            {"seed": a["seed"], "speedup": round(a["train_s"] / b["train_s"], 3),
             "accuracy_drop_points": round(100 * (a["mean_accuracy"] - b["mean_accuracy"]), 3)}
            for a, b in zip(sync["per_seed"], ssp2["per_seed"])]
    if "backup" in rows:
        cut = 1 - rows["backup"]["median_round_s"] / sync["median_round_s"]
        out.update(backup_median_round_cut=round(cut, 3), backup_target_met=cut >= 0.2)
    return out
