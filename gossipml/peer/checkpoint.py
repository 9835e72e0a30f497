"""Atomic checkpoints of a peer: model, optimizer, clock, codec and aggregation state.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, renamed over
the target with ``os.replace`` (atomic on POSIX), and the folder is fsynced so the rename itself
survives a power cut. A process killed at any moment therefore leaves either the previous
checkpoint or the new one, never a torn file; at worst a stray ``.*.tmp`` file, which
:func:`remove_stale_temp_files` (and :class:`CheckpointManager`) clean up.

Files are written with ``torch.save`` (a local file, never network input) and read back with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. The state may hold
only: ``dict`` / ``OrderedDict`` (keys: str, int, float, bool, None), ``list``, ``tuple``, ``set``,
``str``, ``bytes``, ``int``, ``float``, ``complex``, ``bool``, ``None``, ``torch.Tensor``,
``torch.Size``, ``torch.dtype``, ``torch.device``. NumPy arrays and scalars are not allowed: convert
them with ``torch.from_numpy`` / ``.item()``. :func:`check_state` says which entry is wrong.
"""

from __future__ import annotations

import collections
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "check_state", "latest_checkpoint",
           "remove_stale_temp_files", "CheckpointManager", "CheckpointError"]

_SCALARS = (str, bytes, int, float, complex, bool, type(None), torch.Size, torch.dtype, torch.device)
_KEYS = (str, int, float, bool, type(None))
_TMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read; the message names the file."""


def check_state(state: Any, where: str = "state") -> None:
    """Raise TypeError naming the first entry that ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(state, torch.Tensor) or isinstance(state, _SCALARS):
        return
    if isinstance(state, (dict, collections.OrderedDict)):
        for k, v in state.items():
            if not isinstance(k, _KEYS):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} cannot be checkpointed; "
                                "use str or int keys")
            check_state(v, f"{where}[{k!r}]")
        return
    if isinstance(state, (list, tuple, set)):
        for i, v in enumerate(state):
            check_state(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(state).__module__}.{type(state).__qualname__} cannot be loaded "
                    "with torch.load(weights_only=True); store tensors, numbers, strings and "
                    "dicts/lists of them (numpy: torch.from_numpy(a) or a.item())")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, ``os.replace``, fsync the folder)."""
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    check_state(state)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict | None:
    """Read a checkpoint written by :func:`save_checkpoint`; None when the file does not exist."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # torch raises several types for a bad file
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); "
                              "delete it to start fresh or restore an older one") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temp files a killed writer left in ``folder``; return what was removed."""
    removed = []
    for p in Path(folder).glob(f".*{_TMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The ``ckpt-<round>.pt`` file with the highest round in ``folder``, or None."""
    found = _checkpoints(Path(folder))
    return found[-1][1] if found else None


class CheckpointManager:
    """Checkpoints every ``every_rounds`` rounds as ``ckpt-<round>.pt``, keeping the newest ``keep``."""

    def __init__(self, folder: str | Path, every_rounds: int, keep: int = 2) -> None:
        if every_rounds < 1:
            raise ValueError(f"every_rounds must be >= 1, got {every_rounds}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (the checkpoint to resume from), got {keep}")
        self.folder = Path(folder)
        self.every_rounds = every_rounds
        self.keep = keep

    def path_for(self, round_: int) -> Path:
        """The file name of the checkpoint taken at ``round_``."""
        return self.folder / f"ckpt-{round_:08d}.pt"

    def is_due(self, round_: int) -> bool:
        """Whether a checkpoint should be taken after ``round_``."""
        return round_ > 0 and round_ % self.every_rounds == 0

    def save(self, round_: int, state: dict) -> Path:
        """Write the checkpoint of ``round_`` and prune older ones beyond ``keep``."""
        path = save_checkpoint(self.path_for(round_), state)
        for _, old in _checkpoints(self.folder)[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def maybe_save(self, round_: int, make_state: Callable[[], dict]) -> Path | None:
        """``save(round_, make_state())`` when due; ``make_state`` is only called then."""
        return self.save(round_, make_state()) if self.is_due(round_) else None

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[int, dict] | None:
        """``(round, state)`` of the newest readable checkpoint (older ones are tried if it is not)."""
        if self.folder.is_dir():
            remove_stale_temp_files(self.folder)
        errors = []
        for round_, path in reversed(_checkpoints(self.folder)):
            try:
                state = load_checkpoint(path, map_location)
            except CheckpointError as exc:
                errors.append(str(exc))
                continue
            if state is not None:
                return round_, state
        if errors:
            raise CheckpointError(f"no readable checkpoint in {self.folder}: " + "; ".join(errors))
        return None
