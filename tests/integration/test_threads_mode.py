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


def test_two_hundred_peers_share_one_communication_thread(tmp_path):
    """Issue #17: many peers of one process over one communication thread (the default
    ``[run] comm_threads = 1``) on a random 4-regular graph; every peer runs every round."""
    import threading

    cfg = ExperimentConfig().replace(
        run={"n_peers": 200, "mode": "threads", "deadline_s": 240},
        data={"dataset": "synthetic_gmm", "synthetic_features": 20, "synthetic_classes": 5,
              "synthetic_train_size": 20000, "synthetic_test_size": 1000},
        task={"model": "logreg", "optimizer": "sgd", "lr": 0.2, "batch_size": 16,
              "eval_max_samples": 300},
        topology={"kind": "random_regular", "k": 4, "weights": "metropolis"},
        pacing={"mode": "sync", "timeout_s": 60.0, "dead_after_s": 120.0, "interval_steps": 2},
        peer={"rounds": 8, "eval_every_rounds": 8})
    seen: set[str] = set()

    def look(rows, t_s) -> None:
        seen.update(t.name for t in threading.enumerate() if t.name.startswith("gossipml-"))

    # Execute
    result = run_in_process(cfg, tmp_path, on_progress=look, progress_interval_s=0.0)
    s = result.summary
    # Assert: one communication thread; every peer ran every round and merged its 3-4
    # neighbours each round (none waited out a timeout); they learned (chance is 0.2)
    assert result.ok and s["failed_peers"] == [] and not s["errors"], s
    assert seen == {"gossipml-hub-0"}
    for i in range(200):
        rounds = [e for e in read_events(events_path(tmp_path, i)) if e["event"] == "round"]
        assert len(rounds) == 8 and all(e["pace"] == "all_arrived" for e in rounds), i
        assert all(len(e["merged"]) >= 3 for e in rounds) and rounds[-1]["rejected"] == 0
    assert s["mean_accuracy"] > 0.5, s["mean_accuracy"]


def _onepeer_run(tmp_path, **pacing):
    cfg = ExperimentConfig().replace(
        run={"n_peers": 32, "mode": "threads", "deadline_s": 120},
        data={"dataset": "digits"},
        task={"model": "logreg", "lr": 0.2, "batch_size": 16},
        topology={"kind": "exponential_onepeer"},
        pacing={"mode": "sync", "timeout_s": 3.0, "interval_steps": 1, **pacing},
        peer={"rounds": 30, "eval_every_rounds": 30})
    result = run_in_process(cfg, tmp_path)
    events = [e for i in range(32) for e in read_events(events_path(tmp_path, i))]
    return result, events


def test_sync_on_a_time_varying_graph_believes_in_neighbours_that_run_ahead(tmp_path):
    """Under sync on exponential_onepeer a peer's in-neighbour of a round does not wait for it
    and can be several rounds ahead: its model must be kept for that round, not refused as out
    of the window (which made the round wait out timeout_s)."""
    # Execute: the default window (wide: the graph is not mutual), then the old one (2 rounds)
    result, events = _onepeer_run(tmp_path / "wide")
    _, narrow = _onepeer_run(tmp_path / "narrow", max_round_ahead=2, timeout_s=1.0)
    # Assert: nothing refused and no round timed out; the narrow window shows why it matters
    assert result.ok, result.summary
    assert not [e for e in events if e["event"] == "rejected"]
    assert all(e["pace"] == "all_arrived" for e in events if e["event"] == "round")
    assert any(e["event"] == "rejected" and e["reason"] == "round_out_of_window" for e in narrow)
