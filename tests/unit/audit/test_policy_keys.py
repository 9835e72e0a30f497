"""``[topology]`` and ``[pacing]`` keys: the graph ``build_topology`` gives, the decisions of
``build_pacing`` on literal views, the schedule the peer builds, and (for keys the round loop
reads itself) one round of peers on an in-memory network."""

from __future__ import annotations

import time

from gossipml.policies.pacing import PaceView, PacingConfig, Schedule, build_pacing
from gossipml.policies.topology import TopologyConfig, build_topology

WAITING = PaceView(clock=5, now_s=2.0, waiting_since_s=0.0, expected=(1, 2, 3),
                   arrived_rounds={1: 5}, known_clocks={2: 3, 3: 3}, arrival_order=(1,))


def _edges(cfg: TopologyConfig, n: int = 8, round_: int = 0) -> list[tuple[int, ...]]:
    topo = build_topology(cfg, n)
    return [topo.out_neighbors(i, round_) for i in range(n)]


def _decide(**pacing) -> tuple[bool, tuple[int, ...]]:
    decision = build_pacing(PacingConfig(**pacing)).decide(WAITING)
    return decision.proceed, decision.merge


def test_topology_kind_chooses_the_graph():
    assert _edges(TopologyConfig(kind="ring")) != _edges(TopologyConfig(kind="full"))


def test_topology_k_sets_the_degree():
    assert _edges(TopologyConfig(kind="ring", k=2)) != _edges(TopologyConfig(kind="ring", k=4))


def test_topology_path_is_the_edge_list_read(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("0 1\n1 2\n")
    b.write_text("0 2\n")
    assert _edges(TopologyConfig(kind="edges", path=str(a)), 3) != \
        _edges(TopologyConfig(kind="edges", path=str(b)), 3)


def test_topology_seed_draws_another_random_graph():
    one = [_edges(TopologyConfig(kind="random", k=2, seed=1), round_=r) for r in range(3)]
    two = [_edges(TopologyConfig(kind="random", k=2, seed=2), round_=r) for r in range(3)]
    assert one != two


def test_pacing_mode_chooses_whether_to_wait():
    assert _decide(mode="async", timeout_s=10.0)[0] is True
    assert _decide(mode="sync", timeout_s=10.0)[0] is False


def test_pacing_timeout_s_bounds_the_wait():
    assert _decide(mode="sync", timeout_s=10.0)[0] is False
    assert _decide(mode="sync", timeout_s=1.0) == (True, (1,))  # waited 2 s


def test_pacing_max_staleness_bounds_the_lag():
    assert _decide(mode="ssp", max_staleness=1)[0] is False  # peers 2, 3 are 2 clocks behind
    assert _decide(mode="ssp", max_staleness=2) == (True, (1,))


def test_pacing_backup_k_is_how_many_to_wait_for():
    assert _decide(mode="backup", backup_k=1) == (True, (1,))
    assert _decide(mode="backup", backup_k=2)[0] is False


def test_pacing_backup_catch_up_jumps_to_the_others_round():
    behind = PaceView(clock=1, now_s=0.0, waiting_since_s=0.0, expected=(1, 2),
                      arrived_rounds={1: 3, 2: 3})
    off = build_pacing(PacingConfig(mode="backup", backup_k=1))
    on = build_pacing(PacingConfig(mode="backup", backup_k=1, backup_catch_up=True))
    assert off.catch_up(behind) is None and on.catch_up(behind) == 4


def test_pacing_push_every_steps_sets_when_to_push():
    two = Schedule.from_config(PacingConfig(push_every_steps=2))
    three = Schedule.from_config(PacingConfig(push_every_steps=3))
    assert [two.should_push(s) for s in range(1, 7)] != [three.should_push(s) for s in range(1, 7)]


def test_pacing_pull_every_steps_sets_when_to_pull():
    never = Schedule.from_config(PacingConfig())
    two = Schedule.from_config(PacingConfig(pull_every_steps=2))
    assert not any(never.should_pull(s) for s in range(1, 5))
    assert [two.should_pull(s) for s in range(1, 5)] == [False, True, False, True]


def test_pacing_heartbeat_interval_s_sets_when_to_beat():
    fast = Schedule.from_config(PacingConfig(heartbeat_interval_s=0.5))
    slow = Schedule.from_config(PacingConfig(heartbeat_interval_s=2.0))
    assert fast.should_heartbeat(1.0, 0.0) and not slow.should_heartbeat(1.0, 0.0)


def test_pacing_interval_steps_is_the_steps_of_a_round(memory_peers):
    rounds = {}
    for steps in (1, 3):
        p0, _ = memory_peers([0.0, 1.0], {"pacing": {"mode": "async", "interval_steps": steps}})
        rounds[steps] = [p0.step() is not None for _ in range(3)]
    assert rounds == {1: [True, True, True], 3: [False, False, True]}


def test_pacing_dead_after_s_stops_waiting_for_the_silent(memory_peers):
    paces = {}
    for dead_after_s in (0.05, 30.0):
        cfg = {"pacing": {"mode": "sync", "timeout_s": 0.3, "dead_after_s": dead_after_s,
                          "heartbeat_interval_s": 0.01}}
        p0, _ = memory_peers([0.0, 1.0], cfg)
        time.sleep(0.1)
        paces[dead_after_s] = p0.exchange()["pace"]
    assert paces == {0.05: "rest_dead", 30.0: "timeout"}


def test_pacing_final_sync_waits_in_the_last_round(memory_peers):
    paces = {}
    for final_sync in (False, True):
        cfg = {"pacing": {"mode": "async", "final_sync": final_sync, "timeout_s": 0.2}}
        p0, _ = memory_peers([0.0, 1.0], cfg)
        p0.set_final_round(0)
        paces[final_sync] = p0.exchange()["pace"]
    assert paces == {False: "async", True: "timeout"}


def _stale_merge(memory_peers, pacing: dict) -> dict:
    """Peer 0 merges peer 1's round-0 model in its round 1 (one round stale)."""
    p0, p1 = memory_peers([0.0, 1.0], {"pacing": {"mode": "async", **pacing}})
    p0.exchange()
    p1.outbound.publish(0, (0,))
    return p0.exchange()


def test_pacing_stale_correction_corrects_a_stale_merge(memory_peers):
    plain = _stale_merge(memory_peers, {})
    corrected = _stale_merge(memory_peers, {"stale_correction": True})
    assert plain["merged"] == corrected["merged"] == [1] and plain["staleness"] == [1]
    assert "corrected" not in plain and corrected["corrected"] == [1]


def test_pacing_stale_window_rounds_is_the_history_kept(memory_peers):
    short = _stale_merge(memory_peers, {"stale_correction": True, "stale_window_rounds": 1})
    long = _stale_merge(memory_peers, {"stale_correction": True, "stale_window_rounds": 4})
    assert short["corrected"] == [] and long["corrected"] == [1]
