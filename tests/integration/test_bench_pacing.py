"""bench_pacing's arithmetic: the zero-overhead schedule bound and the per-seed means."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(_SCRIPTS) not in sys.path:  # bench_pacing imports its sibling pacingmath, as when run
    sys.path.insert(0, str(_SCRIPTS))
_spec = importlib.util.spec_from_file_location("bench_pacing", _SCRIPTS / "bench_pacing.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

ROUND_S = bench.STEP_TIME_S * bench.INTERVAL_STEPS  # one round at factor 1


def _cfg(mode: str, straggler: str, rounds: int = 20, n: int = 8, topology: str = "ring"):
    return bench.pacing_config(bench.MODES[mode], n, rounds, True, straggler, seed=0,
                               topology=topology)


def test_ideal_time_with_a_fixed_slow_peer_is_its_own_compute_in_every_mode():
    # with peer 3 always 3x slower and equal rounds, nobody can end before it: 20 rounds x 3
    for mode, s in (("sync", None), ("ssp2", 2)):
        assert bench.ideal_train_s(_cfg(mode, "fixed"), s) == pytest.approx(20 * 3 * ROUND_S)


def test_ideal_ssp_lies_between_own_compute_and_sync():
    # a moving straggler: sync waits for every neighbour's slow round, SSP(2) less, and neither
    # ends before the peer with the most slow rounds has done its own compute
    cfg = _cfg("ssp2", "moving", rounds=40)
    em = cfg.emulation
    own = max(sum(em.step_factor(i, r, 8) for r in range(40)) * ROUND_S for i in range(8))
    sync, ssp = bench.ideal_train_s(cfg, None), bench.ideal_train_s(cfg, 2)
    assert own <= ssp < sync
    assert bench.ideal_train_s(cfg, 40) == pytest.approx(own, rel=0.2)  # no bound: ~own compute


def test_ideal_sync_on_full_waits_for_every_straggler_and_on_a_ring_only_for_neighbours():
    # full topology: some peer is 3x slow every round and everyone waits for it, so sync takes
    # exactly 3 rounds' time per round; a ring waits only for slow neighbours, so it is faster;
    # SSP(2) on full overlaps the slow rounds of different peers
    full = _cfg("sync", "moving", rounds=30, topology="full")
    assert bench.ideal_train_s(full, None) == pytest.approx(30 * 3 * ROUND_S)
    ring = _cfg("sync", "moving", rounds=30, topology="ring")
    assert bench.ideal_train_s(ring, None) < 30 * 3 * ROUND_S
    assert bench.ideal_train_s(full, 2) < 0.7 * bench.ideal_train_s(full, None)


def test_mean_row_averages_seeds_and_targets_use_the_means():
    runs = {m: [{"seed": s, "wall_s": w, "train_s": t, "mean_peer_train_s": t,
                 "mean_accuracy": a, "median_round_s": 0.1, "failed_peers": [], "out_dir": "x"}
                for s, (w, t, a) in enumerate(vals)]
            for m, vals in {"sync": [(10, 8, 0.80), (12, 10, 0.82)],
                            "ssp2": [(6, 5, 0.80), (7, 7, 0.81)]}.items()}
    rows = {m: bench.mean_row(m, r) for m, r in runs.items()}
    assert rows["sync"]["train_s"] == 9 and rows["ssp2"]["mean_accuracy"] == pytest.approx(0.805)
    t = bench.targets(rows)
    assert t["ssp2_speedup_vs_sync"] == pytest.approx(1.5)
    assert t["ssp2_accuracy_drop_points"] == pytest.approx(0.5)
    assert not t["ssp2_target_met"] and "backup_target_met" not in t
    assert [p["speedup"] for p in t["ssp2_per_seed"]] == [1.6, pytest.approx(1.429, abs=1e-3)]


def test_only_the_target_rows_of_a_moving_straggler_run_every_target_seed():
    targets = [4, 5, 6]
    assert bench.seeds_for("sync", "moving", None, targets) == targets
    assert bench.seeds_for("ssp2", "cycle", None, targets) == targets
    assert bench.seeds_for("ssp2", "fixed", None, targets) == [4]
    assert bench.seeds_for("backup", "moving", None, targets) == [4]
    assert bench.seeds_for("async", "moving", [1, 2], targets) == [1, 2]  # --seeds: every row


def test_every_straggler_runs_on_every_topology_but_fixed_on_the_first_only():
    assert bench.scenarios(["full", "ring"], ["moving", "fixed"]) == [
        ("full", "moving"), ("full", "fixed"), ("ring", "moving")]
    assert bench.scenarios(["ring"], ["fixed", "cycle"]) == [("ring", "fixed"), ("ring", "cycle")]
