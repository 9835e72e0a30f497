"""Checkpoints: round trips, the weights_only type check, and SIGKILL during writing."""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

from gossipml.peer.checkpoint import (CheckpointError, CheckpointManager, check_state, latest_checkpoint,
                                 load_checkpoint, remove_stale_temp_files, save_checkpoint)

ELEMS = 1 << 19  # 2 MiB of float32: a write takes long enough to be killed in the middle


def peer_state(i: int) -> dict:
    """A state shaped like a peer's: every tensor encodes ``i`` so a torn mix would show."""
    model = collections.OrderedDict(w=torch.full((ELEMS,), float(i)), b=torch.full((7,), float(i)))
    return {"model": model,
            "optimizer": {"state": {0: {"momentum_buffer": torch.full((3,), float(i))}},
                          "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "clock": i, "codec": {"residual": torch.full((5,), float(i)), "seed": 3},
            "aggregation": {"dual": [torch.full((2,), float(i))], "rho": 0.5},
            "meta": {"dtype": torch.float32, "shape": torch.Size([2, 3]), "tag": b"x", "ok": None}}


def assert_consistent(state: dict) -> int:
    i = state["clock"]
    assert isinstance(i, int) and i >= 0
    for t in (state["model"]["w"], state["model"]["b"], state["codec"]["residual"],
              state["optimizer"]["state"][0]["momentum_buffer"], state["aggregation"]["dual"][0]):
        assert torch.all(t == float(i)), f"torn checkpoint: clock {i} but a tensor holds {t[0]}"
    return i


def test_round_trip_keeps_every_part(tmp_path):
    path = tmp_path / "peer.pt"
    assert load_checkpoint(path) is None
    save_checkpoint(path, peer_state(4))
    back = load_checkpoint(path)
    assert assert_consistent(back) == 4
    assert back["meta"] == {"dtype": torch.float32, "shape": torch.Size([2, 3]), "tag": b"x", "ok": None}
    assert list(tmp_path.iterdir()) == [path]


def test_state_that_weights_only_would_refuse_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"state\['codec'\]\['r'\].*numpy"):
        check_state({"codec": {"r": np.ones(3)}})
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "x.pt", {"a": [object()]})
    assert list(tmp_path.iterdir()) == []


def test_garbage_file_raises_checkpoint_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_manager_keeps_newest_and_falls_back_past_a_bad_file(tmp_path):
    mgr = CheckpointManager(tmp_path, every_rounds=5, keep=2)
    assert mgr.load_latest() is None
    saved = [r for r in range(1, 21) if mgr.maybe_save(r, lambda r=r: {"clock": r})]
    assert saved == [5, 10, 15, 20]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000015.pt", "ckpt-00000020.pt"]
    assert latest_checkpoint(tmp_path) == mgr.path_for(20)
    mgr.path_for(20).write_bytes(b"\x00" * 10)  # e.g. a disk that lied about fsync
    assert mgr.load_latest() == (15, {"clock": 15})


def _writer(path: str, start: int) -> None:
    torch.set_num_threads(1)
    i = start
    while True:
        i += 1
        save_checkpoint(path, peer_state(i))


def _manager_writer(folder: str, start: int) -> None:
    torch.set_num_threads(1)
    mgr = CheckpointManager(folder, every_rounds=1, keep=2)
    for r in range(start + 1, 10**9):
        mgr.save(r, peer_state(r))


@pytest.mark.parametrize("use_manager", [False, True])
def test_sigkill_while_writing_never_leaves_an_unreadable_checkpoint(tmp_path, use_manager):
    ctx = multiprocessing.get_context("fork")  # torch is already imported: the child starts at once
    rng = random.Random(1234 + use_manager)
    path = tmp_path / "peer.pt"
    mgr = CheckpointManager(tmp_path, every_rounds=1, keep=2)
    if use_manager:
        mgr.save(0, peer_state(0))
    else:
        save_checkpoint(path, peer_state(0))
    last, kills, torn_temps = 0, 0, 0
    deadline = time.monotonic() + 12.0
    while kills < 20 and time.monotonic() < deadline:
        target, arg = (_manager_writer, str(tmp_path)) if use_manager else (_writer, str(path))
        child = ctx.Process(target=target, args=(arg, last), daemon=True)
        child.start()
        time.sleep(rng.uniform(0.005, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        child.join(5)
        assert child.exitcode == -signal.SIGKILL
        kills += 1
        if use_manager:
            torn_temps += len(list(tmp_path.glob(".*.tmp")))
            round_, state = mgr.load_latest()  # also removes the temp files
            assert round_ == state["clock"]
        else:
            torn_temps += len(remove_stale_temp_files(tmp_path))
            state = load_checkpoint(path)
        i = assert_consistent(state)
        assert i >= last, "a checkpoint went back in time"
        last = i
    assert kills >= 10
    assert last > 0, "the writer never finished a checkpoint: the test exercised nothing"
    assert torn_temps > 0, "no kill landed mid-write: the test exercised nothing"
