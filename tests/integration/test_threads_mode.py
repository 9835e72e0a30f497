"""Peers sharing one process: N peers as threads over inproc://, same Peer and wire format."""

from __future__ import annotations

from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.launch.results import events_path
from gossipml.launch.local import run_in_process


def test_eight_logreg_peers_in_one_process_learn_digits(tmp_path):
    # Prepare: a small version of examples/threads_64.toml
    cfg = ExperimentConfig().replace(
        run={"n_peers": 8, "mode": "threads", "deadline_s": 60},
        data={"dataset": "digits", "partition": "iid"},
        task={"model": "logreg", "optimizer": "sgd", "lr": 0.2, "momentum": 0.9,
              "batch_size": 16},
        topology={"kind": "ring", "weights": "metropolis"},
        pacing={"mode": "sync", "timeout_s": 10.0, "interval_steps": 2},
        peer={"rounds": 20, "eval_every_rounds": 10})
    # Execute
    result = run_in_process(cfg, tmp_path)
    s = result.summary
    # Assert: every peer finished all rounds, talked over inproc, and learned
    assert result.ok and s["failed_peers"] == [] and not s["errors"], s
    assert s["mode"] == "threads"
    assert s["min_accuracy"] > 0.8
    for i in range(8):
        events = read_events(events_path(tmp_path, i))
        rounds = [e for e in events if e["event"] == "round"]
        assert len(rounds) == 20
        assert rounds[-1]["bytes_received"] > 0 and rounds[-1]["rejected"] == 0
        assert sum(len(e["merged"]) for e in rounds) > 0
    assert "inproc://" in (tmp_path / "peers.toml").read_text()
