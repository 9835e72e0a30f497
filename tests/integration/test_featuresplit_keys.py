"""Feature split honours the keys check_feature_split lets through: changing each one changes the
run (short runs: the SGD rounds and one full-batch round, so the SGD keys show in the loss)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.featuresplit.run import run_feature_split
from gossipml.launch.results import events_path

BASE = {"run": {"n_peers": 3, "deadline_s": 60, "mode": "feature_split"},
        "data": {"dataset": "synthetic_linear", "synthetic_features": 12,
                 "synthetic_train_size": 300, "synthetic_test_size": 50},
        "task": {"model": "lstsq", "lr": 0.05, "momentum": 0.0, "batch_size": 16,
                 "weight_decay": 0.01},
        "peer": {"rounds": 20, "eval_every_rounds": 5},
        "pacing": {"mode": "sync", "timeout_s": 5.0}, "topology": {"kind": "full"}}


def _run(out: Path, **tables: dict[str, Any]) -> dict[str, Any]:
    merged = {k: {**v, **tables.get(k, {})} for k, v in BASE.items()}
    extras = run_feature_split(ExperimentConfig.from_dict(merged), out, max_full_rounds=1)
    assert not extras["failed_peers"], extras["errors"]
    rounds = [e for e in read_events(events_path(out, 0)) if e["event"] == "round"]
    return {**extras, "round_events": len(rounds), "rounds": extras["per_peer"][0]["rounds"]}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("base"))


@pytest.mark.parametrize("tables, field", [
    ({"run": {"seed": 1}}, "final_loss"),                 # the SGD batches
    ({"task": {"lr": 0.02}}, "final_loss"),
    ({"task": {"momentum": 0.5}}, "final_loss"),
    ({"task": {"batch_size": 40}}, "final_loss"),
    ({"task": {"weight_decay": 0.1}}, "reference_loss"),  # lam of the objective
    ({"data": {"seed": 2}}, "reference_loss"),            # synthetic data are drawn from it
    ({"data": {"synthetic_noise": 1.0}}, "reference_loss"),
    ({"data": {"synthetic_features": 9}}, "feature_blocks"),
    ({"run": {"n_peers": 4}}, "feature_blocks"),
    ({"peer": {"rounds": 30}}, "rounds"),
    ({"peer": {"eval_every_rounds": 2}}, "round_events"),
])
def test_an_honoured_key_changes_the_run(tmp_path, baseline, tables, field):
    changed = _run(tmp_path, **tables)
    assert changed[field] != baseline[field], (tables, field, changed[field])


def test_torch_threads_is_applied(tmp_path):
    before = torch.get_num_threads()
    try:
        _run(tmp_path, run={"torch_threads": 2})
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_transport_keys_reach_the_sockets(tmp_path):
    # a receive limit below one partial product (200 x 1 float64 = 1600 bytes): peers drop each
    # other's messages, and the run fails instead of ignoring the limit
    merged = {**BASE, "transport": {"max_message_bytes": 1024},
              "task": {**BASE["task"], "batch_size": 200},
              "peer": {**BASE["peer"], "startup_timeout_s": 1.0},
              "pacing": {**BASE["pacing"], "timeout_s": 1.0}}
    extras = run_feature_split(ExperimentConfig.from_dict(merged), tmp_path, max_full_rounds=1)
    assert extras["failed_peers"] == [0, 1, 2]
    assert "PartialTimeout" in extras["errors"]["0"]
