"""Snapshot buffers between training and sending: reuse after release, waiting for one."""

from __future__ import annotations

import threading
import time

import torch

from gossipml.comm.snapshot import SnapshotPool


def _full_pool() -> tuple[SnapshotPool, list]:
    pool = SnapshotPool({"w": torch.zeros(3)}, max_buffers=2)
    snaps = [pool.publish({"w": torch.full((3,), float(r))}, r) for r in range(2)]
    return pool, snaps


def test_a_full_pool_skips_at_once_without_a_wait():
    pool, snaps = _full_pool()
    assert all(s is not None for s in snaps)
    assert pool.publish({"w": torch.ones(3)}, 2) is None and pool.skipped == 1
    pool.release(snaps[0])
    again = pool.publish({"w": torch.full((3,), 7.0)}, 3)
    assert again is snaps[0] and again.round == 3 and again.tensors["w"].tolist() == [7.0] * 3


def test_a_paced_publish_waits_for_the_buffer_a_send_releases():
    pool, snaps = _full_pool()
    threading.Timer(0.15, pool.release, args=(snaps[1],)).start()
    t0 = time.monotonic()
    snap = pool.publish({"w": torch.full((3,), 5.0)}, 2, wait_s=5.0)
    waited = time.monotonic() - t0
    assert snap is snaps[1] and snap.round == 2 and 0.1 < waited < 4.0 and pool.skipped == 0


def test_a_paced_publish_gives_up_after_its_wait():
    pool, _ = _full_pool()
    t0 = time.monotonic()
    assert pool.publish({"w": torch.ones(3)}, 2, wait_s=0.2) is None
    assert time.monotonic() - t0 >= 0.2 and pool.skipped == 1
