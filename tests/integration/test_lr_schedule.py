"""The local learning-rate schedule: the pure factor per step, config errors, and real runs where
the rate each round logs follows the schedule over the run's whole length, also across a resume."""

from __future__ import annotations

import math

import pytest

from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.launch.results import events_path
from gossipml.launch.local import run_in_process
from gossipml.tasks import TaskConfig, build_task
from gossipml.tasks.optim import lr_factor


def test_factor_per_schedule() -> None:
    cos = TaskConfig(lr_schedule="cosine", lr_min_factor=0.1)
    assert lr_factor(cos, 0, 101) == pytest.approx(1.0)
    assert lr_factor(cos, 50, 101) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)),
                                                    abs=0.01)
    assert lr_factor(cos, 101, 101) == pytest.approx(0.1)
    assert lr_factor(cos, 10_000, 101) == pytest.approx(0.1)  # stays at its end past the run
    lin = TaskConfig(lr_schedule="linear")
    assert [round(lr_factor(lin, s, 4), 3) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    step = TaskConfig(lr_schedule="step", lr_milestones=[0.5, 0.75], lr_gamma=0.1)
    assert [lr_factor(step, s, 8) for s in (0, 3, 4, 5, 6, 7)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    warm = TaskConfig(lr_schedule="linear", warmup_steps=4, lr_decay_steps=10)
    assert [lr_factor(warm, s, 0) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])
    assert lr_factor(warm, 9, 0) == pytest.approx(0.5)  # decay counted after the warm-up
    const = TaskConfig()
    assert {lr_factor(const, s, 10) for s in range(20)} == {1.0}


@pytest.mark.parametrize("kwargs, match", [
    ({"lr_schedule": "exp"}, "lr_schedule"),
    ({"lr_min_factor": 1.5}, "lr_min_factor"),
    ({"lr_min_factor": "x"}, "lr_min_factor must be a number"),
    ({"lr_gamma": 0.0}, "lr_gamma"),
    ({"lr_gamma": True}, "lr_gamma must be a number"),
    ({"lr_milestones": ["a"]}, "lr_milestones"),
    ({"lr_milestones": [0.75, 0.5]}, "lr_milestones"),
    ({"lr_milestones": [1.0]}, "lr_milestones"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"lr_decay_steps": 2.5}, "lr_decay_steps"),
])
def test_schedule_config_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        TaskConfig(**kwargs)


def test_schedule_without_a_length_is_a_clear_error() -> None:
    from gossipml.data import DataConfig

    task = build_task(TaskConfig(lr_schedule="cosine"), DataConfig(dataset="digits"), 0, 2, 0)
    with pytest.raises(ValueError, match="lr_decay_steps"):
        task.train_step()
    task.set_horizon(10)
    for _ in range(5):
        task.train_step()
    # the optimizer took step 4 of 10 at the scheduled rate, below the configured 0.1
    assert task.optimizer.param_groups[0]["lr"] == pytest.approx(
        0.1 * lr_factor(task.cfg, 4, 10)) and task.optimizer.param_groups[0]["lr"] < 0.08


def test_run_logs_a_cosine_rate_over_the_whole_run(tmp_path) -> None:
    # Prepare: 3 peers, 10 rounds of 3 steps, cosine from 0.1 to 0.01
    cfg = ExperimentConfig.from_dict({
        "run": {"n_peers": 3, "mode": "threads", "deadline_s": 120},
        "data": {"dataset": "digits"},
        "task": {"model": "mlp", "lr": 0.1, "lr_schedule": "cosine", "lr_min_factor": 0.1},
        "pacing": {"interval_steps": 3},
        "peer": {"rounds": 10, "eval_every_rounds": 10}})
    # Execute
    assert run_in_process(cfg, tmp_path).ok
    # Assert: each round logs the rate of its last step (step 3r + 2 of 30), and training worked
    for i in range(3):
        events = read_events(events_path(tmp_path, i))
        lrs = [e["lr"] for e in events if e["event"] == "round"]
        want = [0.1 * lr_factor(cfg.task, 3 * r + 2, 30) for r in range(10)]
        assert lrs == pytest.approx(want) and lrs[-1] < 0.012 < 0.09 < lrs[0]
        assert next(e for e in events if e["event"] == "final")["accuracy"] > 0.5


def test_resumed_run_goes_on_with_the_schedule(tmp_path, pair_config, run_pair) -> None:
    # Prepare: the resume test's peer pair, with a linear schedule over its 9 rounds of 2 steps
    ckpt, events = tmp_path / "ckpt", tmp_path / "events"

    def config(rounds: int) -> ExperimentConfig:
        raw = pair_config(ckpt, rounds).to_dict()
        raw["task"].update(lr_schedule="linear", lr_min_factor=0.0)
        return ExperimentConfig.from_dict(raw)

    # Execute: stop after 5 rounds (checkpoint after 4), restart for all 9
    run_pair(config(5), events)
    run_pair(config(9), events)
    # Assert: the resumed rounds take the rate of their place in a 9-round (18-step) run
    log = read_events(events / "peer-0.jsonl")
    resumed = next(k for k, e in enumerate(log) if e["event"] == "resumed")
    after = [e for e in log[resumed:] if e["event"] == "round"]
    assert [e["round"] for e in after] == [4, 5, 6, 7, 8]
    assert [e["lr"] for e in after] == pytest.approx(
        [0.05 * (1 - (2 * r + 1) / 18) for r in range(4, 9)])
