"""``[run]`` keys and the ``[peer]`` keys of the whole loop, on tiny real runs: two peers (or
three) as threads of this process (``run_in_process``), logistic regression on digits, two or
three rounds. One run per setting, several keys compared at once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gossipml.cli import main
from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.launch.local import run_in_process
from gossipml.launch.results import events_path


def _tables(**changes: dict[str, Any]) -> dict[str, Any]:
    tables: dict[str, Any] = {
        "run": {"n_peers": 2, "mode": "threads", "deadline_s": 60, "seed": 0},
        "task": {"model": "logreg", "lr": 0.1, "batch_size": 16, "device": "cpu"},
        "pacing": {"mode": "sync", "timeout_s": 5.0},
        "peer": {"rounds": 2, "eval_every_rounds": 1}}
    for table, keys in changes.items():
        tables[table] = {**tables.get(table, {}), **keys}
    return tables


def _run(out: Path, **changes: dict[str, Any]) -> dict[str, Any]:
    """Run; the summary, the round events of each peer, the checkpoints written."""
    before = torch.get_num_threads()
    try:
        result = run_in_process(ExperimentConfig.from_dict(_tables(**changes)), out / "run")
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    rounds = {int(p.stem.split("-")[1]): [e for e in read_events(p) if e["event"] == "round"]
              for p in sorted((out / "run" / "events").glob("peer-*.jsonl"))}
    ckpts = sorted(p.name for p in out.glob("ckpt/peer-0/*.pt"))
    return {"summary": result.summary, "rounds": rounds, "ckpts": ckpts, "threads": threads}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("base")
    return _run(out, peer={"checkpoint_dir": str(out / "ckpt"), "checkpoint_every_rounds": 1})


@pytest.fixture(scope="module")
def changed(tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("changed")
    return _run(out, run={"n_peers": 3, "torch_threads": 2},
                peer={"rounds": 3, "eval_every_rounds": 2, "checkpoint_dir": str(out / "ckpt"),
                      "checkpoint_every_rounds": 2})


def test_n_peers_is_how_many_peers_run(base, changed):
    assert sorted(base["rounds"]) == [0, 1] and sorted(changed["rounds"]) == [0, 1, 2]
    assert base["summary"]["failed_peers"] == changed["summary"]["failed_peers"] == []


def test_rounds_is_how_many_rounds_each_peer_runs(base, changed):
    assert [e["round"] for e in base["rounds"][0]] == [0, 1]
    assert [e["round"] for e in changed["rounds"][0]] == [0, 1, 2]


def test_eval_every_rounds_is_when_accuracy_is_measured(base, changed):
    def evaluated(run: dict[str, Any]) -> list[int]:
        return [e["round"] for e in run["rounds"][0] if "accuracy" in e]
    assert evaluated(base) == [0, 1] and evaluated(changed) == [1, 2]


def test_checkpoint_every_rounds_is_how_often_a_checkpoint_is_written(base, changed):
    assert base["ckpts"] == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    assert changed["ckpts"] == ["ckpt-00000002.pt"]


def test_checkpoint_dir_is_where_checkpoints_go(tmp_path, base):
    without = _run(tmp_path)
    assert base["ckpts"] and not list(tmp_path.rglob("*.pt")) and not without["ckpts"]


def test_torch_threads_is_the_runs_torch_threads(base, changed):
    assert base["threads"] == 1 and changed["threads"] == 2


def test_seed_changes_the_run(tmp_path, base):
    other = _run(tmp_path, run={"seed": 1})
    assert [e["loss"] for e in other["rounds"][0]] != [e["loss"] for e in base["rounds"][0]]


def test_deadline_s_stops_a_run_that_overruns(tmp_path):
    slow = {"step_time_s": 0.1}  # 30 rounds of 0.1 s steps: 3 s, past a 1 s deadline
    run = _run(tmp_path, run={"deadline_s": 1.0}, peer={"rounds": 30}, emulation=slow)
    assert run["summary"]["deadline_hit"] and run["summary"]["failed_peers"] == [0, 1]
    finals = [events_path(tmp_path / "run", i) for i in range(2)]
    stop = time.monotonic() + 30  # the peer threads finish on their own: wait for them
    while time.monotonic() < stop and not all(
            any(e["event"] == "final" for e in read_events(p)) for p in finals):
        time.sleep(0.2)


def test_mode_threads_runs_every_peer_in_this_process(tmp_path, base, capsys):
    assert base["summary"]["mode"] == "threads"
    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps(ExperimentConfig.from_dict(_tables()).to_dict()))
    # a one-peer process refuses it (mode = "processes" is what `gossipml peer` runs)
    assert main(["peer", str(exp), "--peers", "unused.toml", "--id", "0"]) != 0
    assert 'mode = "threads" runs every peer inside one process' in capsys.readouterr().err


def _comm_threads_seen(tmp_path: Path, comm_threads: int) -> tuple[set[str], dict[str, Any]]:
    """The names of gossipml's communication threads alive while a 4-peer threads run trains."""
    import threading

    seen: set[str] = set()

    def look(rows: list[dict[str, Any]], t_s: float) -> None:
        seen.update(t.name for t in threading.enumerate()
                    if t.name.startswith(("gossipml-comm-", "gossipml-hub-")))

    cfg = ExperimentConfig.from_dict(_tables(run={"n_peers": 4, "comm_threads": comm_threads},
                                             peer={"rounds": 15, "eval_every_rounds": 15}))
    result = run_in_process(cfg, tmp_path / f"run-{comm_threads}", on_progress=look,
                            progress_interval_s=0.0)
    return seen, result.summary


def test_comm_threads_is_how_many_communication_threads_the_peers_share(tmp_path):
    # Execute: the default (one shared thread), two, and 0 (a thread per peer, the old way)
    one, s1 = _comm_threads_seen(tmp_path, 1)
    two, s2 = _comm_threads_seen(tmp_path, 2)
    own, s0 = _comm_threads_seen(tmp_path, 0)
    # Assert: exactly those threads served the peers, and each run trained the same
    assert one == {"gossipml-hub-0"}
    assert two == {"gossipml-hub-0", "gossipml-hub-1"}
    assert own == {f"gossipml-comm-{i}" for i in range(4)}
    assert s1["failed_peers"] == s2["failed_peers"] == s0["failed_peers"] == []
    assert s1["mean_accuracy"] == s2["mean_accuracy"] == s0["mean_accuracy"]


def test_run_keys_of_another_mode_are_refused():
    for run, words in [({"mode": "processes", "comm_threads": 4}, "comm_threads sets how many"),
                       ({"mode": "threads", "start_method": "spawn"}, "start_method picks"),
                       ({"mode": "threads", "comm_threads": -1}, "must be >= 0")]:
        with pytest.raises(ValueError, match=words):
            ExperimentConfig.from_dict({"run": run})
