"""Fixtures of the multi-peer runs: the checkpointing peer pair that the resume and the
learning-rate tests both stop and restart, and this process's resident memory for the attack
tests' bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import os

import pytest
import torch

from gossipml.config import ExperimentConfig


def _pair_config(ckpt_dir: str | Path, rounds: int) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "run": {"n_peers": 2, "seed": 3},
        "data": {"dataset": "digits"},
        "task": {"model": "logreg", "lr": 0.05, "momentum": 0.9, "batch_size": 32},
        "pacing": {"mode": "sync", "timeout_s": 5.0, "interval_steps": 2},
        "topology": {"kind": "ring"},
        "transport": {"shm": False},
        "peer": {"rounds": rounds, "eval_every_rounds": 2, "startup_timeout_s": 10.0,
                 "checkpoint_dir": str(ckpt_dir), "checkpoint_every_rounds": 2}})


def _pair_task(cfg: ExperimentConfig, i: int) -> Any:
    from gossipml.tasks import build_task

    torch.manual_seed(100 + i)
    return build_task(cfg.task, cfg.data, i, cfg.run.n_peers, cfg.run.seed)


@pytest.fixture
def pair_config() -> Callable[[str | Path, int], ExperimentConfig]:
    """``pair_config(ckpt_dir, rounds)``: two digits/logreg peers on a sync ring, checkpointing
    every 2 rounds into ``ckpt_dir``."""
    return _pair_config


@pytest.fixture
def pair_task() -> Callable[[ExperimentConfig, int], Any]:
    """``pair_task(cfg, i)``: peer ``i``'s task, its model initialised from seed ``100 + i``."""
    return _pair_task


@pytest.fixture
def run_pair(loopback_peers, run_threads) -> Callable[[ExperimentConfig, Path], list[dict]]:
    """``run_pair(cfg, events_dir)``: the two peers of ``cfg`` run to the end on threads (120 s at
    most), appending to ``events_dir/peer-<i>.jsonl``; their final results."""
    from gossipml.peer import Peer

    def run(cfg: ExperimentConfig, events_dir: Path) -> list[dict]:
        addresses = loopback_peers(2)
        tasks = [_pair_task(cfg, i) for i in range(2)]

        def peer_main(i: int) -> dict:
            with Peer(tasks[i].model, cfg, id=i, peers=addresses,
                      num_samples=tasks[i].num_samples,
                      events_path=str(events_dir / f"peer-{i}.jsonl")) as peer:
                return peer.run(tasks[i])

        return run_threads([lambda: peer_main(0), lambda: peer_main(1)], 120)

    return run


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def rss_bytes() -> Callable[[], int]:
    """``rss_bytes()``: this process's resident set size now, in bytes (Linux /proc)."""
    return _rss_bytes
