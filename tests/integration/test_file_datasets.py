"""Data from disk through ``gossipml run``: peers train on a CSV table the test writes."""

from __future__ import annotations

import numpy as np

from gossipml.config import ExperimentConfig
from gossipml.launch.local import run_in_process


def test_peers_train_on_a_csv_table(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)  # separable: a linear model reaches ~100 %
    lines = ["f0,f1,f2,f3,label"] + [",".join(f"{v:.5f}" for v in row) + f",{c}"
                                     for row, c in zip(x, y)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    cfg = ExperimentConfig.from_dict({
        "run": {"n_peers": 3, "mode": "threads"},
        "data": {"dataset": "gossipml.data.files:csv_table", "partition": "dirichlet",
                 "alpha": 0.5, "dataset_args": {"path": str(tmp_path / "table.csv"),
                                                "label": "label"}},
        "task": {"model": "logreg", "lr": 0.2}, "topology": {"kind": "full"},
        "pacing": {"mode": "sync", "interval_steps": 5}, "peer": {"rounds": 15}})
    result = run_in_process(cfg, tmp_path / "run")
    assert result.ok and result.summary["mean_accuracy"] > 0.9, result.summary["mean_accuracy"]
