"""Pacing policies on literal scenarios, the SSP bound as a property, liveness and the schedule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.policies.pacing import (
    AsyncPacing, BackupPacing, Liveness, PaceDecision, PaceView, PacingConfig, Schedule,
    SSPPacing, SyncPacing, build_pacing,
)


def view(clock=5, now_s=100.0, since_s=100.0, expected=(1, 2, 3), arrived=None, clocks=None,
         dead=(), merged=(), order=()):
    return PaceView(clock=clock, now_s=now_s, waiting_since_s=since_s, expected=tuple(expected),
                    arrived_rounds=dict(arrived or {}), known_clocks=dict(clocks or {}),
                    dead=frozenset(dead), merged=frozenset(merged), arrival_order=tuple(order))


# ---- sync ----------------------------------------------------------------------------------
def test_sync_waits_for_every_round_r_model_then_merges_them():
    sync = build_pacing(PacingConfig(mode="sync", timeout_s=2.0))
    assert isinstance(sync, SyncPacing)
    waiting = sync.decide(view(arrived={1: 5, 2: 4, 3: 6}, now_s=101.0))
    assert waiting == PaceDecision(False, (), (2,), "waiting")
    done = sync.decide(view(arrived={1: 5, 2: 5, 3: 6}, now_s=101.0))
    assert done == PaceDecision(True, (1, 2, 3), (), "all_arrived")


def test_sync_timeout_goes_on_with_those_present_and_names_the_missing():
    sync = SyncPacing(timeout_s=2.0)
    assert not sync.decide(view(arrived={1: 5}, now_s=101.9)).proceed
    d = sync.decide(view(arrived={1: 5, 3: 2}, now_s=102.0))
    assert d == PaceDecision(True, (1,), (2, 3), "timeout")


def test_sync_dead_neighbour_never_blocks():
    d = SyncPacing(timeout_s=60.0).decide(view(arrived={1: 5, 3: 5}, dead={2}))
    assert d == PaceDecision(True, (1, 3), (2,), "rest_dead")
    # a dead neighbour whose model did arrive is merged anyway
    d = SyncPacing(timeout_s=60.0).decide(view(arrived={1: 5, 2: 5}, dead={2, 3}))
    assert d.proceed and d.merge == (1, 2) and d.missing == (3,)


def test_no_neighbours_never_waits():
    for mode in ("sync", "async", "ssp", "backup"):
        d = build_pacing(PacingConfig(mode=mode)).decide(view(expected=(), arrived={}))
        assert d.proceed and d.merge == () and d.missing == ()


# ---- async ---------------------------------------------------------------------------------
def test_async_never_waits_and_merges_only_unmerged():
    pace = build_pacing(PacingConfig(mode="async"))
    assert isinstance(pace, AsyncPacing)
    assert pace.decide(view(arrived={})) == PaceDecision(True, (), (), "async")
    d = pace.decide(view(arrived={1: 3, 2: 9, 7: 0}, merged={2}))
    assert d.proceed and d.merge == (1, 7)


# ---- SSP -----------------------------------------------------------------------------------
def test_ssp_waits_for_a_neighbour_beyond_the_bound():
    ssp = build_pacing(PacingConfig(mode="ssp", max_staleness=2, timeout_s=5.0))
    assert isinstance(ssp, SSPPacing)
    # clock 5, s = 2: neighbour 2 at clock 2 (< 3) blocks; heartbeats count as clocks
    d = ssp.decide(view(arrived={1: 5, 2: 2, 3: 1}, clocks={3: 4}))
    assert d == PaceDecision(False, (), (2,), "waiting")
    d = ssp.decide(view(arrived={1: 5, 2: 2, 3: 1}, clocks={2: 3, 3: 4}))
    assert d == PaceDecision(True, (1,), (), "within_bound")  # 2's and 3's models are too old


def test_ssp_timeout_and_dead_never_merge_stale_models():
    ssp = SSPPacing(max_staleness=1, timeout_s=5.0)
    d = ssp.decide(view(arrived={1: 4, 2: 0}, expected=(1, 2), now_s=105.0))
    assert d == PaceDecision(True, (1,), (2,), "timeout")
    d = ssp.decide(view(arrived={1: 4, 2: 0}, expected=(1, 2), dead={2}))
    assert d == PaceDecision(True, (1,), (2,), "rest_dead")
    d = ssp.decide(view(arrived={1: 4, 2: 7}, expected=(1, 2), merged={2}))
    assert d.proceed and d.merge == (1,)


def test_ssp_zero_is_sync_on_clocks():
    ssp = SSPPacing(max_staleness=0, timeout_s=5.0)
    assert not ssp.decide(view(arrived={1: 5, 2: 5}, clocks={3: 4})).proceed
    assert ssp.decide(view(arrived={1: 5, 2: 5}, clocks={3: 5})).merge == (1, 2)


@settings(max_examples=100, deadline=None)
@given(
    clock=st.integers(0, 30), s=st.integers(0, 4),
    rounds=st.dictionaries(st.integers(1, 6), st.integers(0, 40), max_size=6),
    clocks=st.dictionaries(st.integers(1, 6), st.integers(0, 40), max_size=6),
    dead=st.frozensets(st.integers(1, 6)), waited_s=st.floats(0, 20),
)
def test_ssp_never_merges_or_advances_beyond_the_bound(clock, s, rounds, clocks, dead, waited_s):
    v = view(clock=clock, now_s=100.0 + waited_s, expected=(1, 2, 3, 4, 5, 6), arrived=rounds,
             clocks=clocks, dead=dead)
    d = SSPPacing(max_staleness=s, timeout_s=10.0).decide(v)
    assert all(rounds[j] >= clock - s for j in d.merge)  # never a model more than s behind
    if d.proceed and waited_s < 10.0:  # before the timeout only dead peers may lag
        lagging = {j for j in v.expected if max(rounds.get(j, -1), clocks.get(j, -1)) < clock - s}
        assert lagging <= dead
        assert set(d.missing) == lagging


# ---- backup --------------------------------------------------------------------------------
def test_backup_takes_the_first_k_by_arrival_and_ignores_late_ones():
    backup = build_pacing(PacingConfig(mode="backup", backup_k=2))
    assert isinstance(backup, BackupPacing)
    one = backup.decide(view(arrived={3: 5, 1: 4}, order=(1, 3)))
    assert one == PaceDecision(False, (), (1, 2), "waiting")
    # 3 arrived first, then 1 (round 5), then 2: the first two are 3 and 1; 2 is late
    d = backup.decide(view(arrived={1: 5, 2: 5, 3: 5}, order=(3, 1, 2)))
    assert d == PaceDecision(True, (1, 3), (2,), "first_k")
    d = backup.decide(view(arrived={1: 5, 2: 5, 3: 5}, order=(2, 3, 1)))
    assert d.merge == (2, 3) and d.missing == (1,)


def test_backup_default_k_is_d_minus_one_and_dead_lower_the_bar():
    backup = BackupPacing(k=None, timeout_s=3.0)
    assert [backup.needed(d) for d in (0, 1, 2, 4)] == [0, 1, 1, 3]
    assert not backup.decide(view(arrived={1: 5}, order=(1,))).proceed
    assert backup.decide(view(arrived={1: 5, 3: 5}, order=(3, 1))).merge == (1, 3)
    # k = 2 of 3 but two are dead: the one live model suffices
    d = BackupPacing(k=2).decide(view(arrived={2: 5}, dead={1, 3}, order=(2,)))
    assert d.proceed and d.merge == (2,)
    # timeout: go on with what is there
    d = backup.decide(view(arrived={2: 5}, order=(2,), now_s=103.0))
    assert d == PaceDecision(True, (2,), (1, 3), "timeout")


def test_backup_catch_up_never_believes_a_clock_past_the_horizon():
    # Prepare: k = 1 of 3; peer 1 claims clock 2**62 - 1 (forged), peer 2 is really at 9
    backup = BackupPacing(k=1, catch_up_enabled=True)
    forged = {1: 2**62 - 1, 2: 9}
    # Execute / Assert: past the horizon the forged clock is not counted; the jump goes to 9
    assert backup.catch_up(PaceView(5, 0.0, 0.0, (1, 2, 3), {}, forged, horizon=7)) is None
    assert backup.catch_up(PaceView(5, 0.0, 0.0, (1, 2, 3), {}, forged, horizon=9)) == 9
    assert backup.catch_up(PaceView(5, 0.0, 0.0, (1, 2, 3), {}, {1: 8}, horizon=9)) == 8


def test_backup_catch_up_skips_to_where_the_first_k_went_on():
    # at clock 5 with k = 2 of 3: two neighbours at clocks 7 and 6 finished round 5 without us
    on = build_pacing(PacingConfig(mode="backup", backup_k=2, backup_catch_up=True))
    assert on.catch_up(view(clocks={1: 7, 2: 6, 3: 4})) == 6  # the 2nd highest: both are there
    assert on.catch_up(view(clocks={1: 7, 2: 5, 3: 4})) is None  # only one went on
    # a held round-m model means its sender finished round m: clock m + 1 at least
    assert on.catch_up(view(arrived={1: 8, 2: 6}, clocks={1: 5})) == 7
    assert on.catch_up(view(arrived={1: 5, 2: 5})) == 6  # both finished our round 5
    assert on.catch_up(view(arrived={1: 5, 2: 4})) is None
    assert on.catch_up(view(clocks={1: 9, 2: 9, 3: 9}, dead={1, 2})) is None  # dead don't count
    assert on.catch_up(view(expected=(), clocks={})) is None
    off = build_pacing(PacingConfig(mode="backup", backup_k=2))
    assert off.catch_up(view(clocks={1: 7, 2: 6, 3: 4})) is None  # off by default
    with pytest.raises(ValueError, match="backup_catch_up must be true or false"):
        PacingConfig(mode="backup", backup_catch_up=1)


@settings(max_examples=100, deadline=None)
@given(clock=st.integers(0, 10), k=st.integers(1, 6),
       rounds=st.dictionaries(st.integers(1, 6), st.integers(0, 12), max_size=6),
       dead=st.frozensets(st.integers(1, 6)), seed=st.integers(0, 1000))
def test_backup_merges_a_prefix_of_the_arrivals_never_more_than_k(clock, k, rounds, dead, seed):
    order = tuple(np.random.default_rng(seed).permutation(sorted(rounds)).tolist())
    v = view(clock=clock, expected=(1, 2, 3, 4, 5, 6), arrived=rounds, dead=dead, order=order)
    d = BackupPacing(k=k, timeout_s=10.0).decide(v)
    on_time = [j for j in order if rounds[j] >= clock]
    if d.proceed:
        assert sorted(d.merge) == sorted(on_time[:k])  # the first k by arrival, late ones ignored
        assert set(d.missing) == set(v.expected) - set(d.merge)
    else:
        assert len(on_time) < k and any(j not in dead for j in d.missing)


# ---- liveness ------------------------------------------------------------------------------
def test_liveness_death_and_revival():
    live = Liveness(dead_after_s=3.0, peers=(1, 2), start_s=10.0)
    assert live.dead(12.0) == frozenset()
    live.heard(1, 12.0)
    assert live.dead(13.5) == {2}  # 2 never spoke for 3.5 s
    assert live.dead(15.5) == {1, 2}
    live.heard(2, 16.0)
    assert live.dead(16.0) == {1}  # revived
    live.heard(1, 17.0, done=True)  # a goodbye: dead at once, until it speaks again
    assert live.dead(17.0) == {1} and live.is_dead(1, 17.0)
    live.heard(1, 18.0)
    assert live.dead(18.0) == frozenset()
    live.heard(1, 5.0)  # a late, older report does not move the clock back
    assert live.last_heard_s(1) == 18.0
    with pytest.raises(ValueError, match="dead_after_s"):
        Liveness(0.0)


# ---- schedule ------------------------------------------------------------------------------
def test_schedule_counts_pushes_and_pulls():
    sched = Schedule.from_config(PacingConfig(interval_steps=4, pull_every_steps=10))
    steps = 100
    pushes = sum(sched.should_push(s) for s in range(1, steps + 1))
    pulls = sum(sched.should_pull(s) for s in range(1, steps + 1))
    assert (pushes, pulls) == (25, 10)
    assert sched.messages_over(steps, out_degree=2) == {"push": 50, "pull_request": 10,
                                                         "pull_reply": 10}
    push_only = Schedule.from_config(PacingConfig(interval_steps=4, push_every_steps=3))
    assert sum(push_only.should_push(s) for s in range(1, 31)) == 10
    assert not any(push_only.should_pull(s) for s in range(1, 31))
    assert push_only.messages_over(30, out_degree=3)["push"] == 30
    assert not sched.should_push(0)
    assert sched.should_heartbeat(11.0, 10.0) and not sched.should_heartbeat(10.5, 10.0)


# ---- config --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "bsp"}, "unknown pacing mode 'bsp'"),
    ({"mode": "ssp", "max_staleness": -1}, r"max_staleness must be >= 0 for pacing='ssp'"),
    ({"timeout_s": 0}, "timeout_s must be a number > 0"),
    ({"backup_k": 0}, "backup_k must be an integer >= 1"),
    ({"dead_after_s": 1.0, "heartbeat_interval_s": 2.0}, "heartbeat_interval_s .* must be <"),
    ({"interval_steps": 0}, "interval_steps must be an integer >= 1"),
    ({"pull_every_steps": 2.5}, "pull_every_steps must be an integer >= 1"),
])
def test_config_errors_say_what_to_change(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PacingConfig(**kwargs)


# ---- a pure simulation: 4 peers on a ring, peer 0 three times slower ---------------------
def _simulate(pacing, rounds=12, n=4, slow=0, dt=0.05):
    """Discrete-time run of the policies (no sockets): returns per-peer finish time, the wait
    time, and every merge/advance as (peer, clock, {neighbour: clock or model round})."""
    step_s = {i: (3.0 if i == slow else 1.0) for i in range(n)}
    nbrs = {i: ((i - 1) % n, (i + 1) % n) for i in range(n)}
    clock, busy_until = dict.fromkeys(range(n), 0), {i: step_s[i] for i in range(n)}
    inbox = {i: {} for i in range(n)}  # receiver -> sender -> round held
    order = {i: [] for i in range(n)}
    merged = {i: set() for i in range(n)}
    since, waited, finish, log = {}, dict.fromkeys(range(n), 0.0), {}, []
    t = 0.0
    while len(finish) < n and t < 200:
        t = round(t + dt, 6)
        for i in range(n):
            if i in finish or t < busy_until[i]:
                continue
            if i not in since:  # local steps done: publish round clock[i]
                since[i] = t
                for j in nbrs[i]:
                    inbox[j][i] = clock[i]
                    order[j] = [p for p in order[j] if p != i] + [i]
                    merged[j].discard(i)
            v = PaceView(clock[i], t, since[i], nbrs[i], dict(inbox[i]),
                         {j: clock[j] for j in nbrs[i]}, frozenset(), frozenset(merged[i]),
                         tuple(order[i]))
            d = pacing.decide(v)
            if not d.proceed:
                continue
            log.append((i, clock[i], {j: inbox[i][j] for j in d.merge},
                        {j: clock[j] for j in nbrs[i]}))
            merged[i] |= set(d.merge)
            waited[i] += t - since.pop(i)
            clock[i] += 1
            busy_until[i] = t + step_s[i]
            if clock[i] == rounds:
                finish[i] = t
    return finish, waited, log


def test_simulated_ring_with_a_slow_peer_respects_each_mode():
    fast = (1, 2, 3)
    sync_finish, _, sync_log = _simulate(SyncPacing(timeout_s=100.0))
    assert all(len(m) == 2 and min(m.values()) >= c for _, c, m, _ in sync_log)
    assert min(sync_finish[i] for i in fast) > 33  # paced by the slow peer: 12 rounds x 3 s
    ssp_fast_finish = []
    for s in (1, 2, 4):
        finish, _, log = _simulate(SSPPacing(max_staleness=s, timeout_s=100.0))
        for _, c, merged_rounds, nbr_clocks in log:  # the SSP(s) bound, as an event log shows it
            assert all(rnd >= c - s for rnd in merged_rounds.values())
            assert all(k >= c - s for k in nbr_clocks.values())
        ssp_fast_finish.append(max(finish[i] for i in fast))
    assert ssp_fast_finish == sorted(ssp_fast_finish, reverse=True)  # looser bound, faster
    assert ssp_fast_finish[0] < max(sync_finish[i] for i in fast)
    async_finish, async_waited, _ = _simulate(AsyncPacing())
    assert sum(async_waited.values()) == 0.0 and max(async_finish[i] for i in fast) < 12.1
    backup_finish, _, backup_log = _simulate(BackupPacing(k=1, timeout_s=100.0))
    assert all(len(m) == 1 and min(m.values()) >= c for _, c, m, _ in backup_log)
    assert max(backup_finish[i] for i in fast) < 13  # 1 of 2: never waits for the slow one
