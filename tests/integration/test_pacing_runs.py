"""Pacing on real multi-peer runs (threads over inproc://, one processes drill), checked from the
event logs: SSP's staleness bound, sync going on past a stalled or killed neighbour, async never
waiting, backup merging exactly k, and push/pull message counts against ``Schedule``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gossipml.config import ExperimentConfig
from gossipml.events import read_events
from gossipml.policies.pacing import Schedule
from gossipml.launch.results import events_path
from gossipml.launch.local import run_in_process, run_local

SLOW = 3  # the peer slowed 3x in every run here


def _cfg(n: int, pacing: dict[str, Any], rounds: int = 12, **tables: Any) -> ExperimentConfig:
    base: dict[str, Any] = {
        "run": {"n_peers": n, "mode": "threads", "deadline_s": 120},
        "data": {"dataset": "digits", "partition": "iid"},
        "task": {"model": "mlp", "optimizer": "sgd", "lr": 0.05, "batch_size": 16},
        "topology": {"kind": "ring", "weights": "metropolis"},
        "pacing": {"timeout_s": 10.0, "interval_steps": 4, **pacing},
        "peer": {"rounds": rounds, "eval_every_rounds": rounds},
        "emulation": {"compute_slowdown": {str(SLOW): 3.0}},
    }
    for key, sub in tables.items():
        base.setdefault(key, {}).update(sub)
    return ExperimentConfig.from_dict(base)


def _rounds(out: Path, i: int) -> list[dict[str, Any]]:
    return [e for e in read_events(events_path(out, i)) if e["event"] == "round"]


def _final(out: Path, i: int) -> dict[str, Any]:
    return next(e for e in read_events(events_path(out, i)) if e["event"] == "final")


def _run_ok(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    result = run_in_process(cfg, out)
    assert result.ok and not result.summary["errors"], result.summary
    return result.summary


@pytest.mark.parametrize("s", [0, 1, 2])
def test_ssp_never_merges_or_advances_past_the_bound(tmp_path, s):
    # Prepare: 5 peers on a ring, peer 3 three times slower, SSP(s)
    cfg = _cfg(5, {"mode": "ssp", "max_staleness": s}, rounds=14)
    # Execute
    _run_ok(cfg, tmp_path)
    # Assert: every merged model is at most s clocks old, no peer went on by timeout (so every
    # advance was the policy's "every live neighbour within s"), and the slow peer's neighbours
    # recorded waits for it
    waits_near_slow = 0
    for i in range(5):
        rounds = _rounds(tmp_path, i)
        assert [e["round"] for e in rounds] == list(range(14))
        for e in rounds:
            assert all(st <= s for st in e["staleness"]), (i, e)
            assert e["pace"] in ("within_bound", "rest_dead"), (i, e)
            assert e["missing"] == [], (i, e)
            assert set(e["merged"]) <= {(i - 1) % 5, (i + 1) % 5}, (i, e)
        if i in (2, 4):
            waits_near_slow += sum(1 for e in rounds if e["wait_s"] > 0)
    assert waits_near_slow > 0
    if s > 0:  # the slow peer merges its neighbours' newest models, ahead of its own clock,
        # not the ones of its own round (which it still holds: the mailbox keeps 3 rounds)
        late = [st for e in _rounds(tmp_path, SLOW)[s + 1:] for st in e["staleness"]]
        assert sum(st < 0 for st in late) > len(late) / 2, late


def test_ssp_final_sync_ends_on_every_neighbours_last_model(tmp_path):
    # Prepare: 5 peers on a ring, peer 3 three times slower, SSP(2) with a synchronous last round
    cfg = _cfg(5, {"mode": "ssp", "max_staleness": 2, "final_sync": True}, rounds=10)
    # Execute
    _run_ok(cfg, tmp_path)
    # Assert: the last round merged both ring neighbours' round-9 (or later) models and said so
    # as a synchronous round; the rounds before it stayed SSP rounds
    for i in range(5):
        rounds = _rounds(tmp_path, i)
        last = rounds[-1]
        assert last["round"] == 9 and last["pace"] == "all_arrived", (i, last)
        assert sorted(last["merged"]) == sorted({(i - 1) % 5, (i + 1) % 5}), (i, last)
        assert all(st <= 0 for st in last["staleness"]), (i, last)
        assert all(e["pace"] in ("within_bound", "rest_dead") for e in rounds[:-1]), i


def test_emulated_device_and_moving_straggler_set_step_times(tmp_path):
    # Prepare: 4 async peers (nobody waits), each step an emulated 20 ms device step, one moving
    # 3x straggler per round drawn from the seed
    emulation = {"compute_slowdown": 1.0, "step_time_s": 0.02, "straggler_factor": 3.0, "seed": 4}
    cfg = _cfg(4, {"mode": "async"}, rounds=8, emulation=emulation)
    # Execute
    _run_ok(cfg, tmp_path)
    # Assert: every round lasted at least its 4 emulated steps, and the round's straggler (the
    # peer every process computes from the seed) at least 3x that
    slowed = 0
    for i in range(4):
        events = [e for e in read_events(events_path(tmp_path, i))
                  if e["event"] in ("start", "round")]
        for prev, e in zip(events, events[1:]):
            floor_s = 4 * 0.02 * (3.0 if cfg.emulation.straggler(e["round"], 4) == i else 1.0)
            slowed += floor_s > 0.08
            assert e["t_s"] - prev["t_s"] >= 0.98 * floor_s, (i, e["round"])
    assert slowed == 8  # one straggler per round


def test_async_never_waits(tmp_path):
    # Prepare: 4 peers, peer 3 slow, asynchronous pacing
    cfg = _cfg(4, {"mode": "async"}, rounds=12)
    # Execute
    _run_ok(cfg, tmp_path)
    # Assert: every round's decision is "async" with nothing missing; the wait is the decision's
    # own cost (no poll interval of 0.05 s is ever taken)
    for i in range(4):
        rounds = _rounds(tmp_path, i)
        assert len(rounds) == 12
        assert all(e["pace"] == "async" and e["missing"] == [] for e in rounds), i
        assert max(e["wait_s"] for e in rounds) < 0.05, [e["wait_s"] for e in rounds]


def test_backup_merges_exactly_the_first_k(tmp_path):
    # Prepare: 6 peers on a degree-4 ring, backup k = d - 1 = 3, peer 3 slow
    cfg = _cfg(6, {"mode": "backup", "backup_k": 3}, rounds=12,
               topology={"kind": "ring", "k": 4, "weights": "metropolis"})
    # Execute
    _run_ok(cfg, tmp_path)
    # Assert: nobody is dead, so every round merged exactly k senders of round >= r (staleness
    # <= 0) and named the one late neighbour as missing
    skipped_slow = 0
    for i in range(6):
        for e in _rounds(tmp_path, i):
            assert e["pace"] == "first_k", (i, e)
            assert len(e["merged"]) == 3 and len(e["missing"]) == 1, (i, e)
            assert not set(e["merged"]) & set(e["missing"])
            assert all(st <= 0 for st in e["staleness"]), (i, e)
            skipped_slow += SLOW in e["missing"]
    assert skipped_slow > 0  # the slow peer was the late one somewhere


def test_backup_catch_up_skips_the_rounds_the_others_finished_without_the_slow_peer(tmp_path):
    # Prepare: 5 peers, full topology, backup k = d - 1 = 3 of 4, peer 3 always 3x slower: the
    # others never wait for it, so it falls a round behind again and again
    cfg = _cfg(5, {"mode": "backup", "backup_catch_up": True}, rounds=16,
               topology={"kind": "full"}, emulation={"step_time_s": 0.01})
    # Execute
    _run_ok(cfg, tmp_path)
    # Assert: the slow peer dropped rounds the others had finished (mid-round, or whole rounds
    # skipped), more than any fast peer (one starting late may drop its first round); for each
    # peer every round is either begun or skipped, never both, and the clock lands where the
    # event says
    def drops(i: int) -> int:
        return sum(bool(e.get("aborted")) + e.get("skipped_rounds", 0)
                   for e in _rounds(tmp_path, i))

    def skipped_of(e: dict) -> list[int]:  # skipped_rounds counts from skipped_from
        return list(range(e.get("skipped_from", 0), e.get("skipped_from", 0)
                          + e.get("skipped_rounds", 0)))

    slow = _rounds(tmp_path, SLOW)
    skipped = [r for e in slow for r in skipped_of(e)]
    aborted = [e for e in slow if e.get("aborted")]
    assert aborted or skipped, "the slow peer never caught up"
    assert all(e["pace"] == "caught_up" and e["wait_s"] == 0.0 for e in aborted)
    run = [e["round"] for e in slow]
    assert sorted(run + skipped) == list(range(16))
    for e in slow:
        assert e["clock"] == e["round"] + 1 + e.get("skipped_rounds", 0)
        if e.get("skipped_rounds") and not e.get("aborted"):  # skipped at a round's end
            assert e["caught_up_from"], e
    assert _final(tmp_path, SLOW)["clock"] == 16
    for i in (0, 1, 2, 4):
        assert drops(i) < drops(SLOW), (i, drops(i), drops(SLOW))
        rounds_i = _rounds(tmp_path, i)
        begun = [e["round"] for e in rounds_i]
        assert sorted(begun + [r for e in rounds_i for r in skipped_of(e)]) == \
            list(range(16)), i


def _threads_run(out: Path, cfg: ExperimentConfig, rounds_of: dict[int, int] | None = None,
                 leave_early: frozenset[int] = frozenset()) -> dict[int, dict[str, Any]]:
    """Peers as threads over inproc://; ``rounds_of`` gives some fewer rounds. Every peer stays
    up (heartbeats going, no models: a stuck peer) until all have finished their loops, except
    those in ``leave_early``, which close at once (they say goodbye). Returns each staying peer's
    ``stats()`` read after every loop ended, before any close."""
    from gossipml.data import load_dataset
    from gossipml.peer import Peer
    from gossipml.tasks import build_task
    import zmq

    n, rounds_of = cfg.run.n_peers, rounds_of or {}
    addresses = {i: f"inproc://pacing-runs-{id(out)}-{i}" for i in range(n)}
    dataset = load_dataset(cfg.data.dataset)
    ctx = zmq.Context()
    peers = []
    for i in range(n):
        torch.manual_seed(i)
        task = build_task(cfg.task, cfg.data, i, n, cfg.run.seed, dataset=dataset)
        peers.append((Peer(task.model, cfg, id=i, peers=addresses, num_samples=task.num_samples,
                           events_path=str(events_path(out, i)), context=ctx), task))
    for p, _ in peers:
        p.start()
    finished = threading.Barrier(n - len(leave_early), timeout=90)
    stats: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def main(i: int) -> None:
        peer, task = peers[i]
        try:
            peer.run(task, rounds_of.get(i, cfg.peer.rounds))
            if i not in leave_early:
                finished.wait()
                time.sleep(0.3)  # let the last pull answers land
                stats[i] = peer.stats()
                finished.wait()
        except BaseException as exc:
            errors.append(exc)
        finally:
            peer.close()

    threads = [threading.Thread(target=main, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    ctx.term()
    return stats


def test_sync_goes_on_after_timeout_past_a_stuck_neighbour(tmp_path):
    # Prepare: 3 peers (all neighbours), sync with a 0.5 s timeout; peer 2 stops training after 3
    # rounds but stays up and keeps sending heartbeats, so it never looks dead
    cfg = _cfg(3, {"mode": "sync", "timeout_s": 0.5, "dead_after_s": 30.0}, rounds=8,
               emulation={"compute_slowdown": 1.0})
    # Execute
    _threads_run(tmp_path, cfg, {2: 3})
    # Assert: the others finished every round; from round 3 on each went on by timeout with
    # peer 2 missing and not merged
    for i in (0, 1):
        rounds = _rounds(tmp_path, i)
        assert [e["round"] for e in rounds] == list(range(8))
        late = [e for e in rounds if e["round"] >= 4]
        assert all(e["pace"] == "timeout" and e["missing"] == [2] for e in late), late
        assert all(2 not in e["merged"] for e in late)
        assert all(e["wait_s"] >= 0.5 for e in late)


def test_sync_goes_on_past_a_neighbour_that_left(tmp_path):
    # Prepare: as above, but peer 2 closes after 3 rounds (says goodbye): no timeout needed
    cfg = _cfg(3, {"mode": "sync", "timeout_s": 5.0}, rounds=8,
               emulation={"compute_slowdown": 1.0})
    # Execute
    _threads_run(tmp_path, cfg, {2: 3}, leave_early=frozenset({2}))
    # Assert: the others finished; after peer 2 left they went on as "rest_dead", never waiting
    # the 5 s timeout
    for i in (0, 1):
        rounds = _rounds(tmp_path, i)
        assert len(rounds) == 8
        late = [e for e in rounds if e["round"] >= 5]
        assert all(e["pace"] == "rest_dead" and e["missing"] == [2] for e in late), late
        assert all(e["wait_s"] < 5.0 for e in rounds)


@pytest.mark.slow
def test_sync_goes_on_after_a_peer_is_killed(tmp_path):
    # Prepare: 4 processes on a ring, sync with a 1 s timeout, dead after 3 s of silence;
    # peer 3 is SIGKILLed 2 s after every peer started
    cfg = _cfg(4, {"mode": "sync", "timeout_s": 1.0, "dead_after_s": 3.0,
                   "heartbeat_interval_s": 0.5}, rounds=400,
               run={"mode": "processes", "deadline_s": 150}, task={"model": "logreg"},
               emulation={"compute_slowdown": 1.0, "step_time_s": 0.003})
    # each step lasts 3 ms: the 1,600 steps take ~5 s, so the kill at 2 s lands mid-run however
    # fast the peers start and step
    cfg = cfg.replace(peer={"rounds": 400, "eval_every_rounds": 400})
    # Execute
    result = run_local(cfg, tmp_path, kill_after_s={SLOW: 2.0})
    # Assert: only the killed peer failed; its neighbours waited out the timeout at least once
    # with it missing, then went on without it to the end
    assert result.summary["failed_peers"] == [SLOW], result.summary
    for i in (2, 0):
        rounds = _rounds(tmp_path, i)
        assert len(rounds) == 400
        gone = [e for e in rounds if SLOW in e["missing"]]
        assert any(e["pace"] == "timeout" for e in gone), gone[:3]
        assert gone and gone[-1]["pace"] == "rest_dead" and gone[-1]["round"] == 399


def test_push_pull_counts_match_the_schedule(tmp_path):
    # Prepare: 4 peers, async, 4 steps per round, push every 2 steps, pull every 3; heartbeats
    # far apart so that after start-up none go out
    rounds, steps = 10, 40
    pacing = {"mode": "async", "interval_steps": 4, "push_every_steps": 2, "pull_every_steps": 3,
              "heartbeat_interval_s": 5.0, "dead_after_s": 60.0}
    cfg = _cfg(4, pacing, rounds=rounds, emulation={"compute_slowdown": 1.0})
    # Execute
    stats = _threads_run(tmp_path, cfg)
    # Assert: pull requests and answers as Schedule.messages_over says (answers counted once
    # every loop ended: a pull may land after its target's own last round); every other message
    # is a push (to each of 2 neighbours) or a heartbeat (to both neighbours; start-up only)
    sched = Schedule.from_config(cfg.pacing)
    want = sched.messages_over(steps, out_degree=2)
    assert want == {"push": 40, "pull_request": 13, "pull_reply": 13}
    assert all(stats[i]["pulls_sent"] == want["pull_request"] for i in range(4))
    # each pull is answered or, past its requester's budget (a peer that finished its loop
    # answers again only slowly: its model no longer changes), refused as pull_rate
    answered = sum(stats[i]["pulls_answered"] for i in range(4))
    refused = sum(stats[i]["rejected_by_reason"].get("pull_rate", 0) for i in range(4))
    assert answered + refused == 4 * want["pull_reply"] and answered >= 4 * 4, (answered, refused)
    for i in range(4):
        f = stats[i]
        assert f["send_dropped"] == 0, f
        # a push is skipped (both snapshot buffers still being sent) rather than block training
        pushes = want["push"] - 2 * f["send_skipped"]
        assert f["send_skipped"] < want["push"] // 2, f  # some pushes went out
        rest = f["messages_sent"] - pushes - f["pulls_sent"] - f["pulls_answered"]
        # heartbeats: start-up beats to each neighbour not yet linked both ways (at least one
        # each), then regular ones only where nothing else went for an interval
        assert 2 <= rest <= 20, f
        start_s = next(e for e in read_events(events_path(tmp_path, i))
                       if e["event"] == "start")["t_s"]
        assert rest <= 2 * (10 * (start_s + 0.5) + 6), f  # 0.1 s apart at start-up, then 5 s
        assert _final(tmp_path, i)["pulls_sent"] == want["pull_request"]
