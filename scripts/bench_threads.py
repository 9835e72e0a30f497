"""Many peers in one process: one shared communication thread vs one thread per peer.

    python scripts/bench_threads.py [--smoke] [--json] [--peers 64,256] [--rounds N]

Each run is ``python -m gossipml run <experiment>`` in a subprocess, exactly as a user starts it,
with ``examples/threads_64.toml`` (logistic regression on digits, ring, Metropolis weights, sync
pacing; the experiment issue #17 timed) resized to N peers and R rounds, and ``[run]
comm_threads`` = 0 (a communication thread per peer: the previous way, the baseline) or 1 (one
hub thread and one ZeroMQ context shared by every peer of the process). The two alternate per
size. Per run: ``wall_s`` (launch to exit), ``cpu_s`` (user + system time of the run),
``max_rss_mib`` (the process's peak resident set), ``threads`` (the most threads the process
had at once); these three are read from ``/proc`` every 50 ms (the last reading before exit), ``median_round_s`` and ``mean_accuracy`` from
``summary.json``; per size, the ratios hub / per-peer.

``--smoke`` runs 8 peers for 4 rounds, once per setting (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "examples" / "threads_64.toml"
SETTINGS = {"per_peer": 0, "hub": 1}  # name -> [run] comm_threads
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"peers": [8], "rounds": 4},
    "full": {"peers": [64, 256], "rounds": 60},
}
POLL_S = 0.05


def sample(pid: int) -> dict[str, float]:
    """Threads now, peak RSS so far (``VmHWM``) and CPU seconds so far of process ``pid``
    (empty once it is gone)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    out["max_rss_mib"] = int(line.split()[1]) / 1024
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return {}
    return out


def run_once(setting: str, n: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """One ``gossipml run`` of the resized experiment with ``comm_threads`` of ``setting``."""
    table = tomllib.loads(BASE.read_text())
    table["run"] = {**table["run"], "n_peers": n, "comm_threads": SETTINGS[setting],
                    "deadline_s": 1800}
    table["peer"] = {**table["peer"], "rounds": rounds, "eval_every_rounds": rounds}
    exp = tmp / f"{setting}-{n}.json"
    exp.write_text(json.dumps(table))
    out = tmp / f"{setting}-{n}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "gossipml", "run", str(exp), "--quiet",
                             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    threads, last = 0, {"max_rss_mib": 0.0, "cpu_s": 0.0}
    while proc.poll() is None:
        now = sample(proc.pid)
        threads = max(threads, int(now.get("threads", 0)))
        last.update({k: v for k, v in now.items() if k != "threads"})
        time.sleep(POLL_S)
    wall = time.monotonic() - t0
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"gossipml run ({setting}, {n} peers) failed with "
                           f"{proc.returncode}: {stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"setting": setting, "comm_threads": SETTINGS[setting], "n_peers": n,
            "rounds": rounds, "wall_s": round(wall, 2), "cpu_s": round(last["cpu_s"], 2),
            "max_rss_mib": round(last["max_rss_mib"], 1), "threads": threads,
            "median_round_s": summary["median_round_s"],
            "mean_accuracy": summary["mean_accuracy"],
            "failed_peers": summary["failed_peers"]}


def run_bench(peers: list[int], rounds: int) -> dict[str, Any]:
    """Every size (smallest first), both settings; ratios hub / per-peer."""
    runs, sizes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        for n in sorted(peers):
            pair = {s: run_once(s, n, rounds, Path(tmp)) for s in ("per_peer", "hub")}
            runs.extend(pair.values())
            base, hub = pair["per_peer"], pair["hub"]
            sizes.append({"n_peers": n,
                          "wall_ratio": round(hub["wall_s"] / base["wall_s"], 3),
                          "cpu_ratio": round(hub["cpu_s"] / max(base["cpu_s"], 1e-9), 3),
                          "threads_per_peer": round(base["threads"] / n, 2),
                          "threads_hub": hub["threads"],
                          "accuracy_delta": round(hub["mean_accuracy"] - base["mean_accuracy"],
                                                  4)})
    return {"rounds": rounds, "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2), "runs": runs, "sizes": sizes}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table or JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="8 peers, 4 rounds, once per setting")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--peers", help="comma-separated peer counts (default 64,256)")
    ap.add_argument("--rounds", type=int, help="rounds per run (default 60)")
    args = ap.parse_args(argv)
    plan = dict(PRESETS["smoke" if args.smoke else "full"])
    if args.peers:
        plan["peers"] = [int(p) for p in args.peers.split(",")]
    if args.rounds is not None:
        plan["rounds"] = args.rounds
    report = run_bench(plan["peers"], plan["rounds"])
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'peers':>5} {'setting':>8} {'wall s':>7} {'cpu s':>7} {'RSS MiB':>8} "
          f"{'threads':>7} {'round s':>8} {'acc':>6}")
    for r in report["runs"]:
        print(f"{r['n_peers']:>5} {r['setting']:>8} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} "
              f"{r['max_rss_mib']:>8.0f} {r['threads']:>7} {r['median_round_s']:>8.3f} "
              f"{r['mean_accuracy']:>6.3f}")
    for s in report["sizes"]:
        print(f"{s['n_peers']} peers: hub/per-peer wall {s['wall_ratio']:.2f}x, "
              f"CPU {s['cpu_ratio']:.2f}x, threads {s['threads_hub']} vs "
              f"{s['threads_per_peer']:.1f} per peer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
