"""Refused messages: one exact counter by reason; log lines and events rate-limited per reason.

A flood of bad messages must not grow the log or the events file without bound, while the
counters stay exact. Per reason, the first ``burst`` refusals are logged and emitted one by one;
after that, refusals of that reason are only counted, and at most one summary line and one
``rejected_suppressed`` event per ``summary_interval_s`` say how many were held back (the last
ones at :meth:`flush`, which the peer calls when it closes). So the log and events grow by at
most ``reasons x (burst + run_s / summary_interval_s + 1)`` lines, whatever arrives.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable

from gossipml.events import EventLog

__all__ = ["Rejections", "DETAIL_CHARS", "BURST", "SUMMARY_INTERVAL_S"]

log = logging.getLogger("gossipml.peer.peer")  # the logger name the refusals always had

DETAIL_CHARS = 200
BURST = 10  # refusals of one reason logged one by one before the summaries take over
SUMMARY_INTERVAL_S = 10.0


class Rejections:
    """Counts refused messages by reason (``counts``, exact) and reports them, rate-limited
    (module docstring); ``suppressed`` counts refusals not yet reported one by one or in a
    summary. Owner: the peer; writer: the communication thread (the inbound side, the outbound
    pull answers and the swarm link, which run there, are handed this object and call it)."""

    def __init__(self, peer_id: int, events: EventLog | None = None, *, burst: int = BURST,
                 summary_interval_s: float = SUMMARY_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 0 or summary_interval_s <= 0:
            raise ValueError("burst must be >= 0 and summary_interval_s > 0")
        self.peer_id = peer_id
        self.events = events
        self.burst = burst
        self.summary_interval_s = summary_interval_s
        self._clock = clock
        self.counts: collections.Counter[str] = collections.Counter()
        self.suppressed: collections.Counter[str] = collections.Counter()
        self._last_summary_s: dict[str, float] = {}

    def __call__(self, sender: int | None, reason: str, detail: str = "") -> None:
        """Count one refusal of a message from ``sender`` for ``reason`` (a counter key)."""
        self.counts[reason] += 1
        if self.counts[reason] <= self.burst:
            log.warning("peer %d: rejected a message from %s: %s (%s)", self.peer_id, sender,
                        reason, detail[:DETAIL_CHARS])
            if self.events is not None:
                self.events.emit("rejected", sender=sender, reason=reason,
                                 detail=detail[:DETAIL_CHARS])
            return
        self.suppressed[reason] += 1
        now = self._clock()
        last = self._last_summary_s.setdefault(reason, now)
        if now - last >= self.summary_interval_s:
            self._summarise(reason, now, last_sender=sender, last_detail=detail)

    def _summarise(self, reason: str, now: float, last_sender: int | None = None,
                   last_detail: str = "") -> None:
        n = self.suppressed.pop(reason, 0)
        self._last_summary_s[reason] = now
        if not n:
            return
        log.warning("peer %d: rejected %d more messages for %s (%d in all; the last from %s: "
                    "%s)", self.peer_id, n, reason, self.counts[reason], last_sender,
                    last_detail[:DETAIL_CHARS])
        if self.events is not None:
            self.events.emit("rejected_suppressed", reason=reason, count=n,
                             total=self.counts[reason], last_sender=last_sender,
                             detail=last_detail[:DETAIL_CHARS])

    def flush(self) -> None:
        """Report every refusal still held back (one summary per reason); call it at close."""
        now = self._clock()
        for reason in sorted(self.suppressed):
            self._summarise(reason, now)

    @property
    def total(self) -> int:
        """Refusals of every reason."""
        return sum(self.counts.values())
