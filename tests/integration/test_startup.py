"""``gossipml run``'s start methods (issue #17): peers forked from the pre-imported runner, or
one fresh interpreter each; both run the same experiment to the same result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gossipml.config import ConfigError, ExperimentConfig
from gossipml.launch.local import run_local
from gossipml.launch.zygote import fork_peer


def _cfg(method: str) -> ExperimentConfig:
    # synchronous rounds: the run is deterministic, so both methods must land on one accuracy
    return ExperimentConfig().replace(run={"n_peers": 3, "start_method": method},
                                      pacing={"mode": "sync", "timeout_s": 20.0},
                                      peer={"rounds": 5})


def test_fork_and_spawn_run_the_same_experiment_to_the_same_accuracy(tmp_path: Path):
    results = {m: run_local(_cfg(m), tmp_path / m) for m in ("fork", "spawn")}
    for method, result in results.items():
        assert result.ok, (method, result.summary["failed_peers"])
        assert result.summary["start_method"] == method
        assert all(c == 0 for c in result.returncodes.values())
        assert (result.out_dir / "accuracy.png").stat().st_size > 0
    fork, spawn = (results[m].summary["mean_accuracy"] for m in ("fork", "spawn"))
    assert fork == pytest.approx(spawn, abs=0.02)


def test_a_forked_peer_reports_its_exit_code_and_its_traceback(tmp_path: Path):
    cfg = ExperimentConfig()

    def fails() -> int:
        raise RuntimeError("peer body failed on purpose")

    bad = fork_peer(cfg, 0, fails, log_path=tmp_path / "bad.log")
    good = fork_peer(cfg, 1, lambda: 3, log_path=tmp_path / "good.log")
    assert bad.wait(timeout=30) == 1 and good.wait(timeout=30) == 3
    assert "peer body failed on purpose" in (tmp_path / "bad.log").read_text()
    assert os.getsid(0) != bad.pid  # the child led its own session, not ours


def test_a_forked_peer_is_killed_with_its_session(tmp_path: Path):
    import time

    child = fork_peer(ExperimentConfig(), 0, lambda: time.sleep(60) or 0,
                      log_path=tmp_path / "sleep.log")
    assert child.poll() is None
    child.kill()
    assert child.wait(timeout=10) == -9


def test_an_unknown_start_method_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="start_method must be one of .*fork.*spawn"):
        ExperimentConfig().replace(run={"start_method": "forkserver"})


def test_the_run_verb_takes_a_start_method_and_refuses_others(capsys):
    from gossipml.cli import build_parser

    assert build_parser().parse_args(["run", "--start-method", "spawn"]).start_method == "spawn"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--start-method", "forkserver"])
    assert "invalid choice: 'forkserver'" in capsys.readouterr().err
