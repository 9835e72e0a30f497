"""One JSONL event stream per peer: every line a JSON object with ``event``, ``peer`` and ``t_s``."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["EventLog", "EventTail", "read_events", "events_path"]


def events_path(out_dir: str | Path, peer_id: int) -> Path:
    """Where peer ``peer_id`` writes its JSONL events inside a run folder."""
    return Path(out_dir) / "events" / f"peer-{peer_id}.jsonl"


class EventLog:
    """Append-only JSONL writer, safe to call from the training and the communication thread."""

    def __init__(self, path: str | Path | None, peer_id: int) -> None:
        self.peer_id = peer_id
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._fh: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", buffering=1)  # line-buffered: readers see whole lines
        self.last: dict[str, dict[str, Any]] = {}

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event; also kept in ``last[event]`` for in-process readers."""
        record = {"event": event, "peer": self.peer_id,
                  "t_s": round(time.monotonic() - self._t0, 4), **fields}
        line = json.dumps(_clean(record), default=_jsonable, allow_nan=False)
        with self._lock:
            self.last[event] = record
            if self._fh is not None:
                self._fh.write(line + "\n")
        return record

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete event line of a JSONL file (a half-written last line is skipped)."""
    out = []
    try:
        with open(path) as fh:
            for line in fh:
                if line.endswith("\n"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
    except FileNotFoundError:
        pass
    return out


class EventTail:
    """Follows a growing JSONL event file, reading each byte once; keeps what a live view needs:
    whether the peer has started, and its newest ``round``/``final`` event, whose ``accuracy``
    is the newest one measured (evaluations run every few rounds; a round without one carries the
    last)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self.started = False
        self.latest: dict[str, Any] | None = None

    def poll(self) -> None:
        """Read the lines appended since the last poll (a half-written last line waits)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "start":
                self.started = True
            elif event.get("event") in ("round", "final"):
                if event.get("accuracy") is None and self.latest is not None:
                    event["accuracy"] = self.latest.get("accuracy")
                self.latest = event
