"""Feature-split linear models: peers exchange partial products over real transports."""

from __future__ import annotations

import threading

import pytest
import torch

from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.featuresplit.peer import FeatureSplitPeer, PartialTimeout
from gossipml.featuresplit.run import run_feature_split
from gossipml.launch.local import feature_split_run
from gossipml.launch.results import events_path
from gossipml.comm.config import TransportConfig


def _cfg(**tables) -> ExperimentConfig:
    base = {"run": {"n_peers": 3, "deadline_s": 60}, "peer": {"rounds": 10},
            "task": {"model": "logreg", "weight_decay": 0.01, "lr": 0.5, "batch_size": 32},
            "pacing": {"timeout_s": 10.0}}
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
    # Prepare: two peers that shake hands; then only peer 0 sends a round
    addrs = {0: "inproc://fsplit-t-0", 1: "inproc://fsplit-t-1"}
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    peers = [FeatureSplitPeer(i, addrs, x[:, 2 * i:2 * i + 2], y, 3, model="logreg",
                              num_classes=3, lam=0.0, seed=0, timeout_s=0.3,
                              transport=TransportConfig(), context=zmq_context) for i in (0, 1)]
    for p in peers:
        p.transport.start()
    try:
        other = threading.Thread(target=peers[1].handshake, args=(5.0,))
        other.start()
        peers[0].handshake(5.0)
        other.join(5.0)
        z = peers[0].partial(peers[0].x, peers[0].weight, peers[0].bias)
        # Execute / Assert: the error names the silent peer
        with pytest.raises(PartialTimeout, match=r"peer\(s\) \[1\]"):
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


def test_non_linear_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="linear model"):
        run_feature_split(_cfg(task={"model": "mlp"}), tmp_path)


def test_lr_schedule_is_refused_not_ignored(tmp_path):
    with pytest.raises(ValueError, match="lr_schedule"):
        run_feature_split(_cfg(task={"lr_schedule": "cosine"}), tmp_path)
