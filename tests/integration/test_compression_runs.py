"""Real compressed runs: 4 peers as threads learn digits with q8+ef, topk+ef and CHOCO q8+delta."""

from __future__ import annotations

import pytest

from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.launch.results import events_path
from gossipml.launch.local import run_in_process

N_PEERS, ROUNDS = 4, 30


def _run(tmp_path_factory, spec: str, consensus_step: float = 1.0, **peer: object) -> dict:
    # top-k over parameters is refused unless asked for by name: this row measures it knowingly
    biased = {"allow_biased_params": True} if spec.startswith("topk") and "+delta" not in spec \
        else {}
    cfg = ExperimentConfig.from_dict({
        "run": {"n_peers": N_PEERS, "mode": "threads", "deadline_s": 120, "seed": 0},
        "data": {"dataset": "digits", "partition": "iid"},
        "task": {"model": "mlp", "optimizer": "sgd", "lr": 0.05, "batch_size": 16},
        "topology": {"kind": "ring", "weights": "metropolis"},
        "pacing": {"mode": "sync", "timeout_s": 10.0, "interval_steps": 5},
        "codec": {"spec": spec, **biased},
        "peer": {"rounds": ROUNDS, "eval_every_rounds": 10, "consensus_step": consensus_step,
                 **peer},
    })
    out = tmp_path_factory.mktemp(spec.replace(":", "_").replace("+", "_"))
    result = run_in_process(cfg, out)
    return {"out": out, "summary": result.summary, "ok": result.ok}


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> dict:
    """The same run with identity: the byte and accuracy reference."""
    return _run(tmp_path_factory, "identity")


def _check_finished(run: dict) -> None:
    s = run["summary"]
    assert run["ok"] and s["failed_peers"] == [], s
    for i in range(N_PEERS):
        events = read_events(events_path(run["out"], i))
        rounds = [e for e in events if e["event"] == "round"]
        assert len(rounds) == ROUNDS
        assert rounds[-1]["rejected"] == 0, rounds[-1].get("rejected_by_reason")
        assert sum(len(e["merged"]) for e in rounds) > 0
        assert any(e["event"] == "final" for e in events)


@pytest.mark.parametrize("spec, min_reduction", [("q8+ef", 3.0), ("topk:0.05+ef", 4.0)])
def test_compressed_run_learns_with_fewer_bytes(tmp_path_factory, dense, spec, min_reduction):
    # Prepare + execute: the dense run (fixture) and the same run with a compressing codec
    run = _run(tmp_path_factory, spec)
    # Assert: everyone finished, learned, and sent several times fewer bytes than dense
    _check_finished(dense)
    _check_finished(run)
    s, d = run["summary"], dense["summary"]
    assert s["mean_accuracy"] > 0.8, s["mean_accuracy"]
    assert s["bytes_sent"] * min_reduction < d["bytes_sent"], (s["bytes_sent"], d["bytes_sent"])
    assert s["mean_accuracy"] > d["mean_accuracy"] - 0.1


def test_choco_delta_run_converges(tmp_path_factory, dense):
    # Prepare + execute: CHOCO content (8-bit change of the public reference), step 0.5
    run = _run(tmp_path_factory, "q8+delta", consensus_step=0.5)
    # Assert: finished with no delta gaps, learned, and fewer bytes than dense
    _check_finished(run)
    s = run["summary"]
    assert s["mean_accuracy"] > 0.8, s["mean_accuracy"]
    assert s["bytes_sent"] < dense["summary"]["bytes_sent"]
    assert s["min_accuracy"] > 0.75, s["min_accuracy"]


def test_choco_topk_with_sign_refresh_converges(tmp_path_factory, dense):
    # Prepare + execute: CHOCO top-1 % deltas, every 2nd round a 1-bit sign delta instead, one
    # keyframe (round 0)
    run = _run(tmp_path_factory, "topk:0.01>q8+delta", keyframe_every_rounds=1000,
               keyframe_codec="q8", refresh_every_rounds=2, refresh_codec="sign")
    plain = _run(tmp_path_factory, "topk:0.01>q8+delta", keyframe_every_rounds=1000,
                 keyframe_codec="q8")
    # Assert: finished over real sockets with no rejected message, learned, and sent far fewer
    # bytes than dense; the refresh rounds went out (1-bit dense deltas are larger than top-1 %
    # ones: more bytes than the same run without them)
    _check_finished(run)
    s = run["summary"]
    assert s["mean_accuracy"] > 0.8, s["mean_accuracy"]
    assert s["bytes_sent"] * 15 < dense["summary"]["bytes_sent"]
    assert s["bytes_sent"] > 1.1 * plain["summary"]["bytes_sent"], (s["bytes_sent"],
                                                                   plain["summary"]["bytes_sent"])
