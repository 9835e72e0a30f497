"""Model snapshots handed from the training thread to the communication thread.

Training and sending overlap: the training side copies its parameters into a free buffer and
goes on; the communication thread encodes and sends that buffer while training writes the next
one into the other. A buffer is free again only when libzmq no longer reads it (its send trackers
are done), so zero-copy sends stay safe. Publishing never waits: if no buffer is free it reports
``None`` and the caller counts a skipped send.
"""

from __future__ import annotations

import threading
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
        self._lock = threading.Lock()
        self.skipped = 0

    def publish(self, params: Mapping[str, torch.Tensor], round_: int) -> Snapshot | None:
        """Copy ``params`` into a free buffer and mark it busy; None when none is free."""
        with self._lock:
            snap = next((b for b in self._buffers if not b.busy), None)
            if snap is None and len(self._buffers) < self._max:
                snap = Snapshot(self._reference, self._device)
                self._buffers.append(snap)
            if snap is None:
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
        with self._lock:
            snap.busy = False
