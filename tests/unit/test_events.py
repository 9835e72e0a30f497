"""Event streams: written line by line, followed incrementally without re-reading."""

from __future__ import annotations

from pathlib import Path

from gossipml.events import EventLog, EventTail, read_events


def test_tail_reads_only_new_complete_lines(tmp_path: Path):
    path = tmp_path / "peer-0.jsonl"
    tail = EventTail(path)
    tail.poll()  # no file yet: nothing, no error
    assert not tail.started and tail.latest is None
    log = EventLog(path, 0)
    log.emit("start", neighbors=[1])
    log.emit("round", round=0, loss=float("nan"))  # non-finite floats become null
    tail.poll()
    assert tail.started and tail.latest["round"] == 0 and tail.latest["loss"] is None
    with open(path, "a") as fh:  # a half-written line is not an event yet
        fh.write('{"event": "round", "peer": 0, "round": 1')
    tail.poll()
    assert tail.latest["round"] == 0
    with open(path, "a") as fh:
        fh.write(', "t_s": 1.0}\n')
    tail.poll()
    assert tail.latest["round"] == 1
    log.emit("round", round=2, accuracy=0.8)
    log.emit("round", round=3)  # no evaluation this round: the live view keeps the last one
    tail.poll()
    assert tail.latest["round"] == 3 and tail.latest["accuracy"] == 0.8
    log.emit("final", round=3, accuracy=0.9)
    log.close()
    tail.poll()
    assert tail.latest["event"] == "final" and tail.latest["accuracy"] == 0.9
    assert [e["event"] for e in read_events(path)] == ["start"] + ["round"] * 4 + ["final"]
