"""Feature-split linear models: peers exchange partial products over real transports."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gossipml.config import ConfigError, ExperimentConfig
from gossipml.events import read_events
from gossipml.featuresplit.peer import FeatureSplitPeer, PartialTimeout
from gossipml.featuresplit.process import make_peer, run_peer_process
from gossipml.featuresplit.problem import load_problem
from gossipml.featuresplit.run import run_feature_split
from gossipml.launch.local import feature_split_run
from gossipml.launch.results import events_path
from gossipml.comm.config import TransportConfig


def _cfg(**tables) -> ExperimentConfig:
    base = {"run": {"n_peers": 3, "deadline_s": 60, "mode": "feature_split"},
            "peer": {"rounds": 10},
            "task": {"model": "logreg", "weight_decay": 0.01, "lr": 0.5, "batch_size": 32,
                     "momentum": 0.0},
            "pacing": {"timeout_s": 10.0, "mode": "sync"}, "topology": {"kind": "full"}}
    for key, sub in tables.items():
        base[key] = {**base.get(key, {}), **sub}
    return ExperimentConfig().replace(**base)


def test_logreg_on_digits_matches_single_machine_solver(tmp_path):
    # Prepare: 3 peers, each a third of the 64 pixel columns
    cfg = _cfg()
    # Execute
    result = feature_split_run(cfg, tmp_path)
    s = result.summary
    # Assert: the combined model reaches the single-machine optimum of the same objective
    assert result.ok, s["errors"]
    assert s["relative_gap"] < 1e-3
    assert s["final_loss"] >= s["reference_loss"] - 1e-9 * abs(s["reference_loss"])
    assert s["mean_accuracy"] > 0.9
    assert [b for b in s["feature_blocks"]] == [[0, 21], [21, 42], [42, 64]]
    for i in range(3):  # every peer wrote rounds and a final event, and sent partials
        events = read_events(events_path(tmp_path, i))
        assert any(e["event"] == "round" for e in events)
        final = [e for e in events if e["event"] == "final"]
        assert len(final) == 1 and final[0]["bytes_sent"] > 0 and final[0]["rejected"] == 0
        assert final[0]["loss"] == pytest.approx(s["final_loss"], rel=1e-9)
    assert (tmp_path / "summary.json").exists()


def test_least_squares_on_synthetic_regression(tmp_path):
    cfg = _cfg(run={"n_peers": 4}, task={"model": "lstsq", "weight_decay": 0.001, "lr": 0.05},
               data={"dataset": "synthetic_linear", "synthetic_features": 12,
                     "synthetic_train_size": 600, "synthetic_test_size": 100})
    extras = run_feature_split(cfg, tmp_path)
    assert not extras["failed_peers"], extras["errors"]
    assert extras["relative_gap"] < 1e-3
    assert extras["accuracy"] is None  # regression: no accuracy


def test_missing_partial_raises_after_timeout(zmq_context):
    # Prepare: two peers built from a config with [pacing] timeout_s = 0.3 shake hands; then only
    # peer 0 sends a round
    cfg = _cfg(run={"n_peers": 2}, pacing={"timeout_s": 0.3})
    problem = load_problem(cfg, 2)
    addrs = {0: "inproc://fsplit-t-0", 1: "inproc://fsplit-t-1"}
    peers = [make_peer(cfg, problem, i, addrs, context=zmq_context) for i in (0, 1)]
    for p in peers:
        p.transport.start()
    try:
        other = threading.Thread(target=peers[1].handshake, args=(5.0,))
        other.start()
        peers[0].handshake(5.0)
        other.join(5.0)
        z = peers[0].partial(peers[0].x, peers[0].weight, peers[0].bias)
        # Execute / Assert: the error names the silent peer, after the configured timeout
        with pytest.raises(PartialTimeout, match=r"peer\(s\) \[1\] after 0.3 s"):
            peers[0].exchange(0, z, {})
        # and a round both peers take part in gives both the same, exact sum
        z1 = peers[1].partial(peers[1].x, peers[1].weight + 1.0, None)
        got: dict = {}
        other = threading.Thread(
            target=lambda: got.update(r1=peers[1].exchange(1, z1, {"w_sq": 1.0})))
        other.start()
        total, infos = peers[0].exchange(1, z, {"w_sq": 0.0})
        other.join(5.0)
        assert torch.equal(total, z + z1) and torch.equal(got["r1"][0], total)
        assert infos == [{"w_sq": 0.0}, {"w_sq": 1.0}]  # partial info follows its schema
    finally:
        for p in peers:
            p.close()


def test_non_linear_model_is_refused():
    with pytest.raises(ConfigError, match="linear model"):
        _cfg(task={"model": "mlp"})


def test_lr_schedule_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="lr_schedule = 'cosine'.*accelerated full-batch"):
        _cfg(task={"lr_schedule": "cosine"})


def test_curve_is_refused_by_the_threads_runner(tmp_path):
    with pytest.raises(ConfigError, match="curve_keys_dir.*gossipml peer"):
        run_feature_split(_cfg(transport={"curve_keys_dir": str(tmp_path)}), tmp_path)


def test_startup_timeout_bounds_the_wait_for_absent_peers(tmp_path):
    # peer 1 never starts: peer 0 gives up after [peer] startup_timeout_s, naming it
    cfg = _cfg(run={"n_peers": 2}, peer={"startup_timeout_s": 0.5})
    t0 = time.monotonic()
    with pytest.raises(PartialTimeout, match=r"peers \[1\] not ready after 0.5 s"):
        run_peer_process(cfg, 0, {0: "inproc://fsplit-alone-0", 1: "inproc://fsplit-alone-1"},
                         events_path=tmp_path / "events" / "peer-0.jsonl")
    assert time.monotonic() - t0 < 5.0
