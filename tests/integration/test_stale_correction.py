"""Stale correction ([pacing] stale_correction): a neighbour's model k rounds old merges as its
difference from our own round-k model, so merging it does not roll back our progress. The
arithmetic on literal tensors, the config checks, and a real SSP run over inproc:// sockets where
the exact outcome is known."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from gossipml.aggregation.base import Contribution
from gossipml.config import ConfigError, ExperimentConfig
from gossipml.events import read_events
from gossipml.policies.pacing import PacingConfig
from gossipml.peer.stale import StaleCorrection

LR = 0.125  # a power of two: every value below is exact in float32


def _params(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), value), "b": torch.full((2,), value)}


def test_a_stale_model_merges_as_its_difference_from_our_own_then():
    # Prepare: own models of rounds 0..3 kept (window 3 keeps rounds 1..3)
    stale = StaleCorrection(_params(0.0), window=3)
    for r in range(4):
        stale.record(r, _params(10.0 * r))
    own = _params(35.0)  # our model now, at round 3
    contribs = [Contribution(sender=1, round=1, params=_params(7.0)),   # 2 rounds old
                Contribution(sender=2, round=3, params=_params(4.0)),   # this round
                Contribution(sender=4, round=5, params=_params(9.0)),   # ahead of us
                Contribution(sender=5, round=0, params=_params(1.0))]   # older than the window
    # Execute
    out, corrected = stale.correct(own, contribs, r=3)
    # Assert: only the stale one within the window changed: 7 + (35 - 10)
    assert corrected == [1]
    assert [float(c.params["w"][0, 0]) for c in out] == [32.0, 4.0, 9.0, 1.0]
    assert torch.equal(out[0].params["b"], torch.full((2,), 32.0))
    assert (out[0].sender, out[0].round) == (1, 1)  # who and when stay as they arrived
    assert (stale.corrected, stale.too_old) == (1, 1)
    assert stale.at(0) is None and float(stale.at(1)["w"][0, 0]) == 10.0


def test_the_history_is_written_in_place():
    stale = StaleCorrection(_params(0.0), window=2)
    source = _params(1.0)
    stale.record(0, source)
    source["w"].fill_(99.0)  # the live model moves on; the kept copy must not
    assert float(stale.at(0)["w"][0, 0]) == 1.0


def test_config_checks_and_window():
    assert PacingConfig(mode="ssp", max_staleness=2).stale_window == 3
    assert PacingConfig(mode="async").stale_window == 4
    assert PacingConfig(mode="async", stale_window_rounds=7).stale_window == 7
    with pytest.raises(ValueError, match="stale_correction must be true or false"):
        PacingConfig(stale_correction="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stale_window_rounds must be an integer >= 1"):
        PacingConfig(stale_window_rounds=0)
    with pytest.raises(ConfigError, match="stale_correction needs whole models"):
        ExperimentConfig.from_dict({"pacing": {"stale_correction": True},
                                    "codec": {"spec": "q8+delta"}})
    with pytest.raises(ConfigError, match="does not apply to .* \"admm\""):
        ExperimentConfig.from_dict({"pacing": {"stale_correction": True},
                                    "aggregation": {"rule": "admm"}})
    with pytest.raises(ValueError, match="window must be >= 1"):
        StaleCorrection(_params(0.0), window=0)


class DriftTask:
    """Real SGD on loss = -sum(params) from zero: every step adds exactly LR to every parameter,
    so a peer's own progress after k steps is k * LR."""

    def __init__(self, start: threading.Event | None = None,
                 after: threading.Event | None = None) -> None:
        self.start, self.after = start, after  # set on the first step / wait for it first
        self.model = torch.nn.Linear(3, 2)
        with torch.no_grad():
            for p in self.model.parameters():
                p.zero_()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)

    def train_step(self) -> float:
        if self.after is not None:
            assert self.after.wait(30), "the other peer never started"
        if self.start is not None:
            self.start.set()
        self.optimizer.zero_grad()
        loss = -sum(p.sum() for p in self.model.parameters())
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def evaluate(self) -> dict[str, float]:
        values = torch.cat([p.detach().flatten() for p in self.model.parameters()])
        return {"value_min": float(values.min()), "value_max": float(values.max())}


def _one_way_run(tmp_path: Path, correction: bool) -> tuple[dict[str, Any], list[dict]]:
    """Peer 1 (5x slower, so it never gets ahead) sends to peer 0 only, under SSP(2): peer 1
    never merges, so its round-m model is exactly its own progress; peer 0 merges peer 1's
    newest model, often 1 or 2 rounds old. Returns peer 0's final event and its round events."""
    from gossipml.peer import Peer
    import zmq

    edges = tmp_path / "edges.txt"
    edges.write_text("1 -> 0\n")
    cfg = ExperimentConfig.from_dict({
        "topology": {"kind": "edges", "path": str(edges)},
        "pacing": {"mode": "ssp", "max_staleness": 2, "interval_steps": 2, "timeout_s": 10.0,
                   "stale_correction": correction},
        "emulation": {"step_time_s": 0.01, "compute_slowdown": {"1": 5.0}},
        "peer": {"rounds": 15, "eval_every_rounds": 15},
    })
    addresses = {i: f"inproc://stale-{id(tmp_path)}-{correction}-{i}" for i in range(2)}
    ctx = zmq.Context()
    logs = {i: tmp_path / f"{correction}-{i}.jsonl" for i in range(2)}
    started = threading.Event()  # peer 1 starts after peer 0, so it is never ahead of it
    tasks = [DriftTask(start=started), DriftTask(after=started)]
    peers = [Peer(tasks[i].model, cfg, id=i, peers=addresses, events_path=str(logs[i]),
                  context=ctx) for i in range(2)]
    errors: list[BaseException] = []

    def main(i: int) -> None:
        try:
            peers[i].run(tasks[i])
        except BaseException as exc:
            errors.append(exc)

    for p in peers:
        p.start()
    threads = [threading.Thread(target=main, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for p in peers:
        p.close()
    ctx.term()
    assert not any(t.is_alive() for t in threads) and not errors, errors
    events = read_events(logs[0])
    return (next(e for e in events if e["event"] == "final"),
            [e for e in events if e["event"] == "round"])


def test_ssp_with_correction_merges_stale_models_without_rolling_back(tmp_path):
    # Execute: the same one-way run with and without the correction
    fixed, fixed_rounds = _one_way_run(tmp_path, correction=True)
    plain, plain_rounds = _one_way_run(tmp_path, correction=False)
    own_progress = 15 * 2 * LR  # peer 0's 30 local steps
    # Assert: stale models were merged in both runs, corrected only in the first
    assert all(s >= 0 for e in fixed_rounds for s in e["staleness"]), "peer 1 got ahead"
    stale_merges = [e for e in fixed_rounds if any(s > 0 for s in e["staleness"])]
    assert stale_merges, "peer 0 never merged a stale model: slow peer 1 more"
    assert all(e["corrected"] == [1] for e in stale_merges)
    assert fixed["stale_corrected"] == len(stale_merges) and fixed["stale_too_old"] == 0
    assert any(any(s > 0 for s in e["staleness"]) for e in plain_rounds)
    assert "corrected" not in plain_rounds[0]
    # with the correction peer 0 ends exactly at its own progress (each stale model's
    # difference from peer 0's model of its round is zero); without, stale merges pulled it back
    assert fixed["value_min"] == fixed["value_max"] == own_progress
    assert plain["value_max"] <= own_progress - LR
