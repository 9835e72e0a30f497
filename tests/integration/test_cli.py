"""``gossipml run`` end to end: real peer processes, real sockets, real training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gossipml.cli import main


def _run_cli(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gossipml", *args], capture_output=True,
                          text=True, timeout=timeout_s)


def test_default_run_trains_eight_peers_and_writes_results(tmp_path: Path):
    out = tmp_path / "run"
    proc = _run_cli(["run", "--out", str(out), "--quiet"], timeout_s=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_peers"] == []
    assert summary["mean_accuracy"] >= 0.90, summary["mean_accuracy"]
    assert len(summary["peers"]) == 8
    for p in summary["peers"]:
        assert {"id", "final_accuracy", "bytes_sent", "bytes_received", "rejected"} <= set(p)
        assert p["bytes_sent"] > 0 and p["bytes_received"] > 0 and p["rejected"] == 0
    assert summary["wall_s"] > 0 and summary["spectral_gap"] > 0
    hist = summary["label_histograms"]  # digits: 1437 training samples split 8 ways, 10 classes
    assert len(hist) == 8 and all(len(h) == 10 for h in hist) and sum(map(sum, hist)) == 1437
    assert (out / "accuracy.png").stat().st_size > 1000
    assert (out / "config.json").exists() and (out / "peers.toml").exists()
    assert len(list((out / "events").glob("peer-*.jsonl"))) == 8
    assert "mean accuracy" in proc.stdout


def test_killed_peer_is_named_and_the_others_finish(tmp_path: Path):
    exp = tmp_path / "exp.toml"
    exp.write_text("""
name = "kill-drill"
[run]
n_peers = 4
deadline_s = 150
[pacing]
mode = "sync"
timeout_s = 2.0
dead_after_s = 3.0
interval_steps = 5
[peer]
rounds = 150
eval_every_rounds = 50
[emulation]
step_time_s = 0.01
""")  # an emulated 10 ms step: 7.5 s of rounds, so the kill lands mid-run however fast the start
    out = tmp_path / "run"
    proc = _run_cli(["run", str(exp), "--out", str(out), "--kill", "2@1.0"], timeout_s=200)
    assert proc.returncode == 1, proc.stdout[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_peers"] == [2]
    assert not summary["deadline_hit"]
    finished = [p for p in summary["peers"] if p["id"] != 2]
    assert all(p["finished"] and p["rounds"] == 150 for p in finished)
    assert all(p["final_accuracy"] > 0.8 for p in finished)
    assert "failed peers: [2]" in proc.stdout
    # live progress (not --quiet): lines with the rounds done so far and the mean accuracy
    progress = [ln for ln in proc.stdout.splitlines() if "rounds " in ln and "/150" in ln]
    assert progress and any("mean acc 0." in ln for ln in progress), proc.stdout[-2000:]


def test_bad_experiment_file_is_refused_with_a_reason(tmp_path: Path, capsys):
    exp = tmp_path / "bad.toml"
    exp.write_text("[topology]\nkind = \"moebius\"\n")
    assert main(["run", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "moebius" in err and "topology" in err
    exp.write_text("[peer]\nroundz = 3\n")
    assert main(["run", str(exp)]) == 2
    assert "roundz" in capsys.readouterr().err
