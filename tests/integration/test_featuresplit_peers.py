"""Feature split across real processes: one ``gossipml peer`` per block over tcp loopback, laid
out by a peer file or by GOSSIPML_PEERS/GOSSIPML_RANK; and keys it cannot honour refused by both
``gossipml run`` and ``gossipml peer``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gossipml.cli import main
from gossipml.config import load_experiment
from gossipml.events import read_events
from gossipml.featuresplit.problem import load_problem
from gossipml.featuresplit.run import reference_solution
from gossipml.launch.local import child_env
from gossipml.launch.peersfile import PeerEntry, write_peers

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "linear_feature_split.toml"


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "gossipml", "peer", *argv], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def test_four_peer_processes_reach_the_single_machine_optimum(tmp_path, loopback_peers):
    # Prepare: the shipped example (digits, logreg, 4 blocks of 16 pixel columns) with lam = 0.01
    # (better conditioned: ~700 full-batch rounds instead of ~1700), as a run folder's config.json;
    # peers 0-2 read a peer file, peer 3 the launcher environment (GOSSIPML_PEERS + GOSSIPML_RANK)
    cfg = load_experiment(EXAMPLE).replace(task={"weight_decay": 0.01})
    experiment = _write(tmp_path / "config.json", json.dumps(cfg.to_dict()))
    addresses = loopback_peers(4)
    write_peers(tmp_path / "peers.toml", [PeerEntry(i, a) for i, a in addresses.items()])
    env = child_env(1)
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "GOSSIPML_WORLD_SIZE"):
        env.pop(key, None)
    events = {i: tmp_path / "events" / f"peer-{i}.jsonl" for i in range(4)}
    procs = [_start(["--peers", str(tmp_path / "peers.toml"), "--id", str(i), "--events",
                     str(events[i]), str(experiment)], tmp_path / f"peer-{i}.log", env)
             for i in range(3)]
    procs.append(_start(["--events", str(events[3]), str(experiment)], tmp_path / "peer-3.log",
                        {**env, "GOSSIPML_PEERS": ",".join(addresses.values()),
                         "GOSSIPML_RANK": "3"}))
    try:
        # Execute
        codes = [p.wait(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    logs = {i: (tmp_path / f"peer-{i}.log").read_text()[-2000:] for i in range(4)}
    assert codes == [0, 0, 0, 0], logs
    # Assert: every peer logged rounds and one final event with the same global objective,
    # within 1e-3 relative of the single-machine minimiser of that objective
    problem = load_problem(cfg, 4)
    _, _, ref_loss = reference_solution(problem.x, problem.y, problem.outputs, cfg.task.model,
                                        problem.num_classes, problem.lam)
    finals = []
    for i in range(4):
        evs = read_events(events[i])
        assert [e["event"] for e in evs][0] == "start"
        assert sum(e["event"] == "round" for e in evs) > 10
        (final,) = [e for e in evs if e["event"] == "final"]
        assert final["bytes_sent"] > 0 and final["rejected"] == 0
        finals.append(final)
    assert all(f["loss"] == pytest.approx(finals[0]["loss"], rel=1e-12) for f in finals)
    assert (finals[0]["loss"] - ref_loss) / abs(ref_loss) < 1e-3
    assert finals[0]["loss"] >= ref_loss - 1e-9 * abs(ref_loss)
    assert finals[0]["accuracy"] > 0.9


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD = EXAMPLE.read_text() + '\n[codec]\nspec = "q8"\n'


def test_a_key_it_cannot_honour_is_refused_by_run_and_by_peer(tmp_path, capsys, loopback_peers):
    bad = _write(tmp_path / "bad.toml", BAD)
    write_peers(tmp_path / "peers.toml", [PeerEntry(i, a) for i, a in loopback_peers(4).items()])
    assert main(["run", str(bad), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    run_err = capsys.readouterr().err
    assert main(["peer", str(bad), "--peers", str(tmp_path / "peers.toml"), "--id", "0",
                 "--events", str(tmp_path / "e.jsonl")]) == 2
    peer_err = capsys.readouterr().err
    for err in (run_err, peer_err):
        assert "[codec] spec = 'q8'" in err and "compression is not supported" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "e.jsonl").exists()


def test_threads_mode_is_refused_by_peer(tmp_path, capsys, loopback_peers):
    threads = _write(tmp_path / "threads.toml", '[run]\nmode = "threads"\nn_peers = 2\n')
    write_peers(tmp_path / "peers.toml", [PeerEntry(i, a) for i, a in loopback_peers(2).items()])
    assert main(["peer", str(threads), "--peers", str(tmp_path / "peers.toml"), "--id", "0",
                 "--events", str(tmp_path / "e.jsonl")]) == 2
    assert "use gossipml run" in capsys.readouterr().err.replace("start it with", "use")
