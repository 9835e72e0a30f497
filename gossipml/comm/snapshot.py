"""Model snapshots handed from the training thread to the communication thread.

Training and sending overlap: the training side copies its parameters into a free buffer and
goes on; the communication thread encodes and sends that buffer while training writes the next
one into the other. A buffer is free again only when libzmq no longer reads it (its send trackers
are done), so zero-copy sends stay safe. When no buffer is free, publishing waits up to
``wait_s`` for one (a paced run needs every round's model: a skipped one makes its receivers wait
out their timeout), then reports ``None`` and the caller counts a skipped send (async pacing
passes 0: a newer model supersedes it anyway).
"""

from __future__ import annotations

import threading
import time
from typing import Mapping

import torch

__all__ = ["SnapshotPool", "Snapshot"]


class Snapshot:
    """One set of tensors mirroring the model's exchanged state."""

    def __init__(self, reference: Mapping[str, torch.Tensor], device: torch.device) -> None:
        self.tensors = {k: torch.empty_like(v, device=device) for k, v in reference.items()}
        self.round = -1
        self.busy = False


class SnapshotPool:
    """Double buffering (growing to ``max_buffers`` if sends are slow to complete)."""

    def __init__(self, reference: Mapping[str, torch.Tensor], *, max_buffers: int = 3,
                 device: torch.device | str = "cpu") -> None:
        self._reference = {k: v.detach() for k, v in reference.items()}
        self._device = torch.device(device)
        self._buffers = [Snapshot(self._reference, self._device) for _ in range(2)]
        self._max = max(2, max_buffers)
        self._cond = threading.Condition()
        self.skipped = 0

    def publish(self, params: Mapping[str, torch.Tensor], round_: int,
                wait_s: float = 0.0) -> Snapshot | None:
        """Copy ``params`` into a free buffer and mark it busy; None when none is free within
        ``wait_s``."""
        with self._cond:
            deadline = time.monotonic() + wait_s
            while True:
                snap = next((b for b in self._buffers if not b.busy), None)
                if snap is None and len(self._buffers) < self._max:
                    snap = Snapshot(self._reference, self._device)
                    self._buffers.append(snap)
                if snap is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left) and time.monotonic() >= deadline:
                    self.skipped += 1
                    return None
            snap.busy = True
        with torch.no_grad():
            for name, dst in snap.tensors.items():
                dst.copy_(params[name], non_blocking=False)
        snap.round = round_
        return snap

    def release(self, snap: Snapshot) -> None:
        """Mark a buffer free (called once its frames are no longer read by libzmq)."""
        with self._cond:
            snap.busy = False
            self._cond.notify_all()
