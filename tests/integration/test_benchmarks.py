"""Every ``scripts/bench_*.py`` runs its ``--smoke`` preset end to end (issue #16).

Each script runs in a subprocess, as a user runs it, and its ``--json`` report must hold every
row the full preset has (every mode, codec, rule, scenario) with finite figures. The scripts are
found by glob: a new benchmark fails here until it has a ``--smoke`` preset and an entry in
``CHECKS`` saying which rows it reports.
"""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "scripts").glob("bench_*.py"))
TIMEOUT_S = 300  # a smoke run takes seconds; this only bounds a hung one on a loaded machine


def _constant(script: str, name: str) -> Any:
    """A module-level literal of a benchmark script, read without importing it."""
    tree = ast.parse((ROOT / "scripts" / script).read_text())
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{script} has no literal {name}")


def _finite(value: Any, where: str) -> float:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), \
        f"{where} = {value!r}, expected a number"
    assert math.isfinite(value), f"{where} = {value!r} is not finite"
    return float(value)


def _all_floats_finite(value: Any, where: str = "report") -> None:
    """No NaN or infinity anywhere in the report (json reads them back as floats)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _all_floats_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _all_floats_finite(v, f"{where}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where} = {value!r} is not finite"


def _accuracy(row: dict[str, Any], key: str, where: str) -> None:
    assert 0.0 <= _finite(row[key], f"{where}.{key}") <= 1.0


def check_wire(report: dict[str, Any]) -> None:
    for key in ("memcpy_gbps", "zmq_gbps", "gloo_gbps", "gossipml_gbps", "gossipml_shm_gbps",
                "vs_zmq", "best_vs_gloo"):
        assert _finite(report[key], key) > 0


def check_codecs(rows: list[dict[str, Any]]) -> None:
    specs = _constant("bench_codecs.py", "SPECS")
    tensors = sorted({r["tensor"] for r in rows})
    assert len(tensors) == 2 and "model" in tensors, tensors
    assert sorted((r["tensor"], r["codec"]) for r in rows) == sorted(
        (t, s) for t in tensors for s in specs)
    for r in rows:
        where = f"{r['tensor']}/{r['codec']}"
        for key in ("encode_gbps", "decode_gbps", "memcpy_gbps", "wire_ratio"):
            assert _finite(r[key], f"{where}.{key}") > 0
        _finite(r["rel_error"], f"{where}.rel_error")
        if r["codec"] == "identity":
            assert r["rel_error"] == 0 and r["wire_ratio"] == pytest.approx(1, rel=0.01)
        else:  # every other codec sends fewer bytes than the dense tensor
            assert r["wire_ratio"] > 1.5, where


def check_convergence(rows: list[dict[str, Any]]) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_convergence
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert [r["config"] for r in rows] == list(bench_convergence.CONFIGS)
    for r in rows:
        where = r["config"]
        assert r["failed_peers"] == [], where
        _accuracy(r, "mean_accuracy", where)
        assert r["bytes_sent"] > 0, where
        _finite(r["accuracy_drop_points"], f"{where}.accuracy_drop_points")
        reduction = _finite(r["byte_reduction_x"], f"{where}.byte_reduction_x")
        assert reduction == 1.0 if where == "dense" else reduction > 1.5, (where, reduction)


def check_aggregation(rows: list[dict[str, Any]]) -> None:
    attacks = _constant("bench_aggregation.py", "ATTACKS")
    robust = _constant("bench_aggregation.py", "ROBUST_RULES")
    want = [(f"distill-alpha{a}", rule) for a in (0.1, 0.5)
            for rule in ("mean", "distill", "distill+public")]
    want += [(f"byzantine-{a}", rule) for a in attacks for rule in ("mean", *robust)]
    assert [(r["scenario"], r["rule"]) for r in rows] == want
    for r in rows:
        where = f"{r['scenario']}/{r['rule']}"
        assert r["failed_peers"] == [], where
        for key in ("mean_accuracy", "honest_mean_accuracy", "min_honest_accuracy"):
            _accuracy(r, key, where)
        _finite(r["wall_s"], f"{where}.wall_s")
        if r["scenario"] == "byzantine-nan":  # every honest neighbour drops the NaN models
            assert r["rejected"] > 0, where


def check_pacing(report: dict[str, Any]) -> None:
    modes = list(_constant("bench_pacing.py", "DEFAULT_MODES"))
    assert sorted(report["scenarios"]) == ["fixed/full", "moving/full", "moving/ring"]
    for name, scenario in report["scenarios"].items():
        assert [r["mode"] for r in scenario["modes"]] == modes, name
        for r in scenario["modes"]:
            where = f"{name}/{r['mode']}"
            assert r["failed_peers"] == [], where
            for key in ("wall_s", "train_s", "mean_peer_train_s", "median_round_s"):
                assert _finite(r[key], f"{where}.{key}") > 0
            _accuracy(r, "mean_accuracy", where)
        t = scenario["targets"]
        for key in ("ssp2_speedup_vs_sync", "ssp2_accuracy_drop_points", "ssp2_ideal_speedup",
                    "backup_median_round_cut"):
            _finite(t[key], f"{name}.targets.{key}")
        if name.startswith("moving/"):  # the target rows run two seeds in the smoke preset
            assert [s["seed"] for s in t["ssp2_per_seed"]] == [0, 1], name
    assert _finite(report["overlap"]["overlap_ratio"], "overlap_ratio") > 0


def check_startup(report: dict[str, Any]) -> None:
    methods = _constant("bench_startup.py", "METHODS")
    sizes = _constant("bench_startup.py", "PRESETS")["smoke"]["peers"]
    assert sorted((r["n_peers"], r["method"]) for r in report["runs"]) == sorted(
        (n, m) for n in sizes for m in methods)
    for r in report["runs"]:
        where = f"{r['method']}/{r['n_peers']}"
        for key in ("round0_s", "wall_s", "pss_mib_per_peer", "runner_pss_mib"):
            assert _finite(r[key], f"{where}.{key}") > 0
        assert 0 <= _finite(r["last_round_to_exit_s"], f"{where}.last_round_to_exit_s") \
            <= r["wall_s"] and r["round0_s"] <= r["wall_s"]
        _accuracy(r, "mean_accuracy", where)
    assert [s["n_peers"] for s in report["sizes"]] == sizes
    for s in report["sizes"]:
        assert _finite(s["round0_speedup"], "round0_speedup") > 0
        assert _finite(s["pss_ratio"], "pss_ratio") > 0


def check_threads(report: dict[str, Any]) -> None:
    settings = _constant("bench_threads.py", "SETTINGS")
    sizes = _constant("bench_threads.py", "PRESETS")["smoke"]["peers"]
    assert sorted((r["n_peers"], r["setting"]) for r in report["runs"]) == sorted(
        (n, s) for n in sizes for s in settings)
    for r in report["runs"]:
        where = f"{r['setting']}/{r['n_peers']}"
        for key in ("wall_s", "cpu_s", "max_rss_mib", "threads", "median_round_s"):
            assert _finite(r[key], f"{where}.{key}") > 0
        assert r["failed_peers"] == [], where
        _accuracy(r, "mean_accuracy", where)
    threads = {(r["n_peers"], r["setting"]): r["threads"] for r in report["runs"]}
    for s in report["sizes"]:
        n = s["n_peers"]  # the hub replaces n per-peer communication threads by one
        assert threads[(n, "hub")] <= threads[(n, "per_peer")] - (n - 1), threads
        for key in ("wall_ratio", "cpu_ratio"):
            assert _finite(s[key], key) > 0


CHECKS: dict[str, Callable[[Any], None]] = {
    "bench_wire": check_wire, "bench_codecs": check_codecs,
    "bench_convergence": check_convergence, "bench_aggregation": check_aggregation,
    "bench_pacing": check_pacing, "bench_startup": check_startup,
    "bench_threads": check_threads,
}


def test_the_glob_finds_every_benchmark():
    assert {p.stem for p in SCRIPTS} >= set(CHECKS), "a checked benchmark script is missing"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_smoke_preset_runs_and_reports_every_row(script: Path):
    assert script.stem in CHECKS, (
        f"{script.name} has no entry in CHECKS: add a function that checks the rows its "
        "--smoke --json report must hold")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    print(f"{script.name} --smoke: {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, (
        f"{script.name} --smoke --json exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{script.name} --json printed no JSON ({exc}):\n"
                             f"{proc.stdout[-2000:]}") from exc
    _all_floats_finite(report)
    CHECKS[script.stem](report)
