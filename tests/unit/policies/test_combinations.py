"""Pace and schedule combinations that cannot work are refused at load time, saying why."""

from __future__ import annotations

import pytest

from gossipml.config import ConfigError, ExperimentConfig
from gossipml.policies.combinations import schedule_problem
from gossipml.policies.pacing import PacingConfig


@pytest.mark.parametrize("kwargs, match", [
    # a pull reply is labelled with the replier's unfinished round: it would pass the round wait
    ({"mode": "sync", "pull_every_steps": 3}, "pull reply carries the replier's unfinished"),
    ({"mode": "backup", "pull_every_steps": 1}, "mode = 'backup'"),
    ({"mode": "async", "final_sync": True, "pull_every_steps": 2}, "drop final_sync"),
    # rounds with no push: every neighbour waits out timeout_s
    ({"mode": "sync", "interval_steps": 2, "push_every_steps": 4}, "wait out timeout_s"),
    ({"mode": "backup", "interval_steps": 1, "push_every_steps": 2}, r"\(2\) > interval_steps"),
    # pushes between round ends carry an unfinished round
    ({"mode": "sync", "interval_steps": 4, "push_every_steps": 2}, "unfinished round"),
    ({"mode": "sync", "interval_steps": 4, "push_every_steps": 3}, r"\(3\) < interval_steps"),
    ({"mode": "async", "final_sync": True, "interval_steps": 4, "push_every_steps": 2},
     "final_sync = true"),
    # backup options elsewhere would do nothing
    ({"mode": "async", "backup_catch_up": True}, 'apply to mode = "backup" only'),
    ({"mode": "sync", "backup_k": 2}, "would do nothing"),
])
def test_combinations_that_cannot_work_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PacingConfig(**kwargs)


def test_the_messages_say_what_to_use_instead():
    with pytest.raises(ValueError) as sync_pull:
        PacingConfig(mode="sync", pull_every_steps=3)
    assert "Leave pull_every_steps out" in str(sync_pull.value)
    assert 'use mode = "async" or "ssp"' in str(sync_pull.value)
    with pytest.raises(ConfigError, match=r"^\[pacing\] push_every_steps \(8\) > interval"):
        ExperimentConfig.from_dict({"pacing": {"mode": "sync", "push_every_steps": 8}})


@pytest.mark.parametrize("kwargs", [
    {"mode": "sync"},
    {"mode": "sync", "interval_steps": 5, "push_every_steps": 5},
    {"mode": "backup", "backup_k": 1, "backup_catch_up": True, "interval_steps": 2},
    {"mode": "async", "interval_steps": 4, "push_every_steps": 2, "pull_every_steps": 3},
    {"mode": "async", "interval_steps": 2, "push_every_steps": 7},  # async never waits
    {"mode": "ssp", "interval_steps": 1, "push_every_steps": 3, "pull_every_steps": 2},
    {"mode": "async", "final_sync": True, "interval_steps": 3},
])
def test_combinations_that_work_are_accepted(kwargs):
    assert schedule_problem(PacingConfig(**kwargs)) is None
