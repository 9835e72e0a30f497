"""Refusals: exact counts, and a log and events file that stay small under a flood."""

from __future__ import annotations

import logging

from gossipml.events import EventLog, read_events
from gossipml.peer.rejections import Rejections


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_a_flood_of_10000_is_counted_exactly_in_a_few_lines(tmp_path, caplog):
    # Prepare: a real events file, a clock that moves 1 ms per refusal (10 s in all)
    path = tmp_path / "peer-0.jsonl"
    events, clock = EventLog(path, 0), Clock()
    rejections = Rejections(0, events, burst=10, summary_interval_s=5.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="gossipml.peer.peer")
    # Execute: 10,000 refusals of two reasons, each with a long detail
    for i in range(10_000):
        clock.now_s = i / 1000
        rejections(7, "bad_payload" if i % 2 else "wrong_shape", "x" * 5000)
    rejections.flush()
    events.close()
    # Assert: every refusal counted; per reason 10 single lines, a summary per 5 s and the flush
    assert rejections.counts == {"bad_payload": 5000, "wrong_shape": 5000}
    assert rejections.total == 10_000 and not rejections.suppressed
    got = read_events(path)
    singles = [e for e in got if e["event"] == "rejected"]
    summaries = [e for e in got if e["event"] == "rejected_suppressed"]
    assert len(singles) == 20 and 2 <= len(summaries) <= 6, summaries
    assert sum(e["count"] for e in summaries) == 10_000 - 20
    assert path.stat().st_size < 16_000  # stated bound: ~30 lines of <= 0.5 KB
    assert len(caplog.records) == len(singles) + len(summaries)
    assert sum(len(r.getMessage()) for r in caplog.records) < 16_000


def test_summaries_wait_for_their_interval():
    clock = Clock()
    events = EventLog(None, 0)
    rejections = Rejections(0, events, burst=1, summary_interval_s=10.0, clock=clock)
    rejections(1, "too_large")
    rejections(1, "too_large")  # suppressed: the first summary is due 10 s from now
    assert "rejected_suppressed" not in events.last and rejections.suppressed["too_large"] == 1
    clock.now_s = 10.0
    rejections(2, "too_large", "the last")
    summary = events.last["rejected_suppressed"]
    assert (summary["count"], summary["total"], summary["last_sender"]) == (2, 3, 2)
    assert not rejections.suppressed
