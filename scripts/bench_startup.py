"""Start-up and shutdown benchmark of ``gossipml run``: fork (pre-imported runner) vs spawn.

    python scripts/bench_startup.py [--smoke] [--json] [--peers 8,32] [--rounds N] [--reps K]

Each run is ``python -m gossipml run --peers N --rounds R --start-method M --quiet`` in a
subprocess, exactly as a user starts it (the shipped default experiment: digits, mlp, ring, sync
pacing), with ``M`` = ``spawn`` (the previous way: one fresh interpreter per peer, the baseline)
or ``fork`` (peers forked from the runner after it imported torch and loaded the dataset). The two methods alternate within each
repetition (the order flips every repetition) so both see the same load on a shared machine.

While a run goes, this script tails every peer's event file every 20 ms and reads the PSS of
every peer process (``/proc/<pid>/smaps_rollup``, the proportional set size: shared pages
divided among the processes sharing them) every 0.25 s. Per run it reports:

- ``round0_s``: from launch to the moment every peer has logged its round 0;
- ``last_round_to_exit_s``: from the last peer's last round event to the exit of ``gossipml run``
  (the peers' shutdown, the summary and the plot);
- ``wall_s``: launch to exit; ``pss_mib_per_peer``: the mean over peers of each peer's largest
  PSS; ``runner_pss_mib``: the runner's largest PSS; ``mean_accuracy`` from ``summary.json``.

``--smoke`` runs 2 peers for 3 rounds, once per method (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("spawn", "fork")
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"peers": [2], "rounds": 3, "reps": 1},
    "full": {"peers": [8, 32], "rounds": 30, "reps": 1},
}
POLL_S = 0.02
PSS_EVERY_S = 0.05  # short-lived peers (the smoke preset) must be sampled at least once


def pss_mib(pid: int) -> float | None:
    """The proportional set size of process ``pid`` in MiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (the peers of a ``gossipml run``)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


class Watcher:
    """Incremental reader of a run folder's event files: first round-0 and last round times."""

    def __init__(self, out: Path, n: int) -> None:
        self.paths = [out / "events" / f"peer-{i}.jsonl" for i in range(n)]
        self.offsets = [0] * n
        self.round0_at: list[float | None] = [None] * n
        self.last_round_at: float | None = None

    def poll(self, now: float) -> None:
        """Read new complete lines; stamp them with ``now`` (seconds since launch)."""
        for i, path in enumerate(self.paths):
            try:
                with open(path, "rb") as fh:
                    fh.seek(self.offsets[i])
                    data = fh.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            self.offsets[i] += end
            for line in data[:end].splitlines():
                event = json.loads(line)
                if event.get("event") != "round":
                    continue
                if self.round0_at[i] is None:
                    self.round0_at[i] = now
                self.last_round_at = now


def run_once(method: str, n: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """One ``gossipml run`` with ``start_method = method``: its timings, PSS and accuracy."""
    out = tmp / f"{method}-{n}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    watcher = Watcher(out, n)
    pss: dict[int, float] = {}
    runner_pss = 0.0
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "gossipml", "run", "--peers", str(n),
                             "--rounds", str(rounds), "--start-method", method, "--quiet",
                             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    next_pss = 0.0
    while proc.poll() is None:
        now = time.monotonic() - t0
        watcher.poll(now)
        if now >= next_pss:
            next_pss = now + PSS_EVERY_S
            runner_pss = max(runner_pss, pss_mib(proc.pid) or 0.0)
            for pid in children(proc.pid):
                pss[pid] = max(pss.get(pid, 0.0), pss_mib(pid) or 0.0)
        time.sleep(POLL_S)
    exit_s = time.monotonic() - t0
    watcher.poll(exit_s)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0 or None in watcher.round0_at:
        raise RuntimeError(f"gossipml run ({method}, {n} peers) failed with {proc.returncode}: "
                           f"{stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    peers_pss = sorted(pss.values(), reverse=True)[:n]
    return {"method": method, "n_peers": n, "rounds": rounds,
            "round0_s": round(max(watcher.round0_at), 3),
            "last_round_to_exit_s": round(exit_s - (watcher.last_round_at or exit_s), 3),
            "wall_s": round(exit_s, 3),
            "pss_mib_per_peer": round(statistics.fmean(peers_pss), 1) if peers_pss else 0.0,
            "runner_pss_mib": round(runner_pss, 1),
            "mean_accuracy": summary["mean_accuracy"]}


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("round0_s", "last_round_to_exit_s", "wall_s", "pss_mib_per_peer", "runner_pss_mib",
            "mean_accuracy")
    return {k: round(statistics.median(r[k] for r in rows), 4) for k in keys}


def run_bench(peers: list[int], rounds: int, reps: int) -> dict[str, Any]:
    """Every size, ``reps`` times each method, alternating; medians and fork/spawn ratios."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        for n in peers:
            for rep in range(reps):
                for method in (METHODS if rep % 2 == 0 else METHODS[::-1]):
                    runs.append({**run_once(method, n, rounds, Path(tmp)), "rep": rep})
    sizes = []
    for n in peers:
        med = {m: _median_row([r for r in runs if r["n_peers"] == n and r["method"] == m])
               for m in METHODS}
        spawn, fork = med["spawn"], med["fork"]
        sizes.append({"n_peers": n, **med,
                      "round0_speedup": round(spawn["round0_s"] / fork["round0_s"], 3),
                      "pss_ratio": round(fork["pss_mib_per_peer"] / spawn["pss_mib_per_peer"], 3)})
    return {"rounds": rounds, "reps": reps, "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "runs": runs, "sizes": sizes}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table or JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="2 peers, 3 rounds, once per method")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--peers", help="comma-separated peer counts (default 8,32)")
    ap.add_argument("--rounds", type=int, help="rounds per run (default 30)")
    ap.add_argument("--reps", type=int, help="repetitions per method and size (default 1)")
    args = ap.parse_args(argv)
    plan = dict(PRESETS["smoke" if args.smoke else "full"])
    if args.peers:
        plan["peers"] = [int(p) for p in args.peers.split(",")]
    for key in ("rounds", "reps"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    report = run_bench(plan["peers"], plan["rounds"], plan["reps"])
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'peers':>5} {'method':>6} {'round0 s':>9} {'last->exit s':>12} {'wall s':>7} "
          f"{'PSS/peer MiB':>12} {'runner MiB':>10} {'acc':>6}")
    for r in report["runs"]:
        print(f"{r['n_peers']:>5} {r['method']:>6} {r['round0_s']:>9.2f} "
              f"{r['last_round_to_exit_s']:>12.2f} {r['wall_s']:>7.2f} "
              f"{r['pss_mib_per_peer']:>12.1f} {r['runner_pss_mib']:>10.1f} "
              f"{r['mean_accuracy']:>6.3f}")
    for s in report["sizes"]:
        print(f"{s['n_peers']} peers: fork reaches round 0 {s['round0_speedup']:.2f}x sooner; "
              f"PSS per peer fork/spawn = {s['pss_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
