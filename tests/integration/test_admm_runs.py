"""Issue #16: decentralized ADMM run by real peers is ADMM on the task's loss.

Four peers (threads over inproc ZeroMQ sockets, or processes over tcp) learn L2-regularized
logistic regression on digits with ``rule = "admm"``, each with the prox of its own shard's loss.
The centralized optimum of the same objective (mean cross-entropy over the whole training set plus
``l2/2 |W|^2``) comes from full-batch L-BFGS in float64; every peer's final model must reach its
loss within 1e-3 relative (each peer's, which implies the average's for this convex loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gossipml.config import ExperimentConfig
from gossipml.data import load_dataset
from gossipml.launch import local as runner
from gossipml.tasks import loss_function, reference_loss

L2 = 0.1
N_PEERS = 4


def _config(rho: float, *, rounds: int, asynchronous: bool = False, pacing: str = "sync",
            mode: str = "threads", **extra: dict[str, Any]) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "name": f"test-admm-rho{rho}-{'async' if asynchronous else 'sync'}",
        "run": {"n_peers": N_PEERS, "mode": mode, "deadline_s": 120},
        "data": {"dataset": "digits", "partition": "iid"},
        "task": {"model": "logreg", "weight_decay": L2},
        "topology": {"kind": "full"},
        "pacing": {"mode": pacing, "timeout_s": 5.0, "max_staleness": 1},
        "aggregation": {"rule": "admm", "rho": rho, "asynchronous": asynchronous},
        "peer": {"rounds": rounds, "eval_every_rounds": rounds},
        **extra,
    })


def _run_threads(cfg: ExperimentConfig, out: Path,
                 monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """Run in threads mode; each peer's final model (its task's), in id order."""
    tasks: list[Any] = []
    original = runner.task_aggregation_context

    def keep(task: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        tasks.append(task)
        return original(task, *args, **kwargs)

    monkeypatch.setattr(runner, "task_aggregation_context", keep)
    summary = runner.run_in_process(cfg, out).summary
    assert summary["failed_peers"] == [], summary.get("errors")
    return [{n: p.detach().clone() for n, p in t.model.state_dict().items()} for t in tasks]


def _gaps(models: list[dict[str, torch.Tensor]]) -> list[float]:
    """Each model's relative gap to the centralized optimum's loss (same objective, same l2)."""
    data = load_dataset("digits", None)
    best = reference_loss("logreg", data, l2=L2)
    x = torch.as_tensor(data.x_train).reshape(len(data.x_train), -1).double()
    y = torch.as_tensor(data.y_train)
    loss = loss_function("logreg", data.num_classes)
    gaps = []
    for m in models:
        w, b = m["1.weight"].double(), m["1.bias"].double()
        value = float(loss(x @ w.T + b, y) + 0.5 * L2 * w.pow(2).sum())
        gaps.append((value - best) / best)
    return gaps


@pytest.mark.parametrize("rho,rounds", [(0.1, 40), (1.0, 120)])
def test_sync_admm_threads_reaches_the_centralized_optimum(tmp_path, monkeypatch, rho, rounds):
    # Prepare / Execute: sync ADMM, 4 peers in threads (measured: 40 rounds 4.7e-4 at rho 0.1,
    # 120 rounds 5.4e-4 at rho 1; rho = 1 moves slower in the low-curvature directions)
    models = _run_threads(_config(rho, rounds=rounds), tmp_path, monkeypatch)
    # Assert: every peer within 1e-3 of the centralized optimum's loss, and none below it
    gaps = _gaps(models)
    assert max(gaps) < 1e-3, gaps
    assert min(gaps) > -1e-6, gaps


def test_async_admm_under_ssp_reaches_the_centralized_optimum(tmp_path, monkeypatch):
    # Prepare / Execute: asynchronous ADMM (duals from running sums), bounded staleness 1
    cfg = _config(0.1, rounds=60, asynchronous=True, pacing="ssp")
    models = _run_threads(cfg, tmp_path, monkeypatch)
    # Assert (measured over 3 runs: max gap 3.2e-4, 3.0e-4, 2.9e-4)
    gaps = _gaps(models)
    assert max(gaps) < 1e-3, gaps


@pytest.mark.parametrize("max_staleness", [1, 2])
def test_async_admm_at_rho_1_under_ssp_reaches_the_centralized_optimum(tmp_path, monkeypatch,
                                                                       max_staleness):
    """Under SSP some versions never reach a neighbour (a send skipped for want of a free
    snapshot buffer: 4-6 per run at staleness 1, 20-35 at 2; one overwritten in the mailbox).
    Accumulated per received version, those left the duals asymmetric and the gap at 6e-4 to
    4e-2 whatever the length; recomputed from the running sums each message carries, they cost
    nothing and the gap keeps falling (measured at staleness 1: 7e-4 at 120 rounds, 3.7e-4 at
    200, 2.2e-4 at 300)."""
    cfg = _config(1.0, rounds=200, asynchronous=True, pacing="ssp")
    cfg = cfg.replace(pacing={"max_staleness": max_staleness})
    models = _run_threads(cfg, tmp_path, monkeypatch)
    # Assert (measured over 3 runs, max gap: staleness 1: 3.8e-4, 3.8e-4, 3.7e-4;
    # staleness 2: 4.7e-4, 4.4e-4, 4.7e-4; staleness 4 diverges, so the config refuses it)
    gaps = _gaps(models)
    assert max(gaps) < 1e-3, gaps


@pytest.mark.slow
def test_sync_admm_processes_reaches_the_centralized_optimum(tmp_path):
    """``gossipml run``'s processes mode (each peer a ``gossipml peer`` over tcp) hands the prox
    too: the final models, read from each peer's last checkpoint, are at the optimum."""
    from gossipml.peer.checkpoint import CheckpointManager

    cfg = _config(0.1, rounds=40, mode="processes",
                  peer={"rounds": 40, "eval_every_rounds": 40,
                        "checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every_rounds": 40})
    result = runner.run_local(cfg, tmp_path / "run")
    assert result.ok, result.summary
    models = []
    for i in range(N_PEERS):
        found = CheckpointManager(tmp_path / "ckpt" / f"peer-{i}", 40).load_latest()
        assert found is not None and found[0] == 40
        models.append(found[1]["model"])
    gaps = _gaps(models)
    assert max(gaps) < 1e-3, gaps


def test_admm_peers_take_no_local_optimizer_steps(tmp_path, monkeypatch):
    """With the prox the local optimisation is the prox: the task's optimizer never steps, so
    every round's model is the ADMM iterate (interval_steps = 3 only counts steps)."""
    from gossipml.tasks.task import Task

    calls = []
    monkeypatch.setattr(Task, "train_step", lambda self: calls.append(1) or 0.0)
    cfg = _config(0.1, rounds=3, pacing="sync")
    cfg = cfg.replace(pacing={"interval_steps": 3})
    _run_threads(cfg, tmp_path, monkeypatch)
    assert calls == []


def test_admm_refuses_what_breaks_its_math():
    from gossipml.errors import ConfigError

    cases = {
        "identity": {"codec": {"spec": "q8"}},
        "content": {"codec": {"spec": "identity", "content": "delta"}},
        "changes the edges": {"topology": {"kind": "random", "k": 2}},
        "directed": {"topology": {"kind": "exponential"}},
        "synchronous ADMM": {"pacing": {"mode": "async"}},
        "consensus_step": {"peer": {"consensus_step": 0.5}},
    }
    base = _config(0.1, rounds=1)
    for needle, tables in cases.items():
        with pytest.raises(ConfigError, match=needle):
            base.replace(**tables)
    with pytest.raises(ConfigError, match="max_staleness <= 2"):
        _config(0.1, rounds=1, asynchronous=True, pacing="async")
    with pytest.raises(ConfigError, match="max_staleness <= 2"):
        base.replace(aggregation={"asynchronous": True}, pacing={"mode": "ssp", "max_staleness": 3})
    ssp = _config(0.1, rounds=1, asynchronous=True, pacing="ssp")  # bounded staleness: accepted
    ssp.replace(pacing={"max_staleness": 2})
    with pytest.raises(ConfigError, match="pull_every_steps unset"):  # a pull has no sums
        ssp.replace(pacing={"pull_every_steps": 2})
