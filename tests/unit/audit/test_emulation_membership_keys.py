"""``[emulation]`` keys change the link decisions the transport is given (``policy``) and the step
times the round loop pads to (``step_factor``, ``pad_s``); ``[membership]`` keys change what the
swarm topology a peer builds does with its live view. Two values, two behaviours."""

from __future__ import annotations

import time
from typing import Any

import torch

from gossipml.peer.swarm import SwarmTopology
from gossipml.policies.emulation import LinkEmulation
from gossipml.policies.membership import MembershipConfig


def _decisions(**emulation: Any) -> list[tuple[bool, float]]:
    policy = LinkEmulation(**emulation).policy(0)
    return [policy(dest, n) for dest in (1, 2) for n in range(20)]


def _factors(n_peers: int = 4, rounds: int = 8, **emulation: Any) -> list[list[float]]:
    emu = LinkEmulation(**emulation)
    return [[emu.step_factor(i, r, n_peers) for i in range(n_peers)] for r in range(rounds)]


def test_delay_s_delays_every_message():
    assert {d for _, d in _decisions(delay_s=0.1)} == {0.1}
    assert {d for _, d in _decisions(delay_s=0.3)} == {0.3}


def test_jitter_s_spreads_the_delays():
    assert len({d for _, d in _decisions(delay_s=0.1)}) == 1
    assert len({d for _, d in _decisions(delay_s=0.1, jitter_s=0.05)}) > 1


def test_drop_prob_drops_messages():
    assert not any(drop for drop, _ in _decisions(drop_prob=0.0, delay_s=0.1))
    assert 5 < sum(drop for drop, _ in _decisions(drop_prob=0.5)) < 35


def test_seed_draws_other_link_decisions():
    assert _decisions(drop_prob=0.5, seed=1) != _decisions(drop_prob=0.5, seed=2)


def test_links_override_one_link():
    got = _decisions(links={"0->2": {"delay_s": 0.2}})
    assert {d for _, d in got[:20]} == {0.0} and {d for _, d in got[20:]} == {0.2}


def test_compute_slowdown_slows_a_peers_steps():
    emu = {"compute_slowdown": {"1": 3.0}}
    assert _factors()[0] == [1.0] * 4 and _factors(**emu)[0] == [1.0, 3.0, 1.0, 1.0]
    assert LinkEmulation(**emu).pad_s(3.0, 0.01) > LinkEmulation().pad_s(1.0, 0.01)


def test_straggler_factor_slows_one_peer_per_round():
    assert all(f == [1.0] * 4 for f in _factors())
    assert all(sorted(f) == [1.0, 1.0, 1.0, 4.0] for f in _factors(straggler_factor=4.0))


def test_straggler_every_rounds_is_how_long_one_straggles():
    def stragglers(every: int) -> list[int]:
        return [f.index(4.0) for f in _factors(rounds=12, straggler_factor=4.0,
                                               straggler_every_rounds=every)]
    assert stragglers(1) != stragglers(3) and len(set(stragglers(3)[:3])) == 1


def test_straggler_order_cycle_visits_every_peer():
    def firsts(order: str) -> list[int]:
        return [f.index(4.0) for f in _factors(rounds=4, straggler_factor=4.0, seed=3,
                                               straggler_order=order)]
    assert sorted(firsts("cycle")) == [0, 1, 2, 3] and firsts("random") != firsts("cycle")


def test_step_time_s_is_the_emulated_step():
    assert LinkEmulation().pad_s(1.0, 0.01) == 0.0
    assert abs(LinkEmulation(step_time_s=0.05).pad_s(1.0, 0.01) - 0.04) < 1e-9


def _swarm(heard: int = 0, **membership: Any) -> SwarmTopology:
    cfg = MembershipConfig(**{"seeds": ("tcp://10.0.0.1:5555",), **membership})
    swarm = SwarmTopology(cfg, 0, "tcp://10.0.0.100:5555", seed=1)
    for j in range(1, heard + 1):  # peers that proved their id at their address (probe answered)
        swarm.confirm(j, f"tcp://10.0.0.{j}:5555")
    return swarm


def test_enabled_takes_neighbours_from_the_live_view():
    from gossipml.config import ExperimentConfig
    from gossipml.peer import Peer

    peers = {0: "tcp://127.0.0.1:5701", 1: "tcp://127.0.0.1:5702"}
    plain = Peer(torch.nn.Linear(2, 1), ExperimentConfig(), id=0, peers=peers)  # never started
    cfg = ExperimentConfig.from_dict({"membership": {"enabled": True,
                                                     "seeds": ["tcp://127.0.0.1:5702"]}})
    swarm = Peer(torch.nn.Linear(2, 1), cfg, id=0, peers=peers)
    assert plain.swarm is None and plain.topology.out_neighbors(0, 0) == (1,)
    assert swarm.swarm is not None and swarm.topology is swarm.swarm


def _link(**membership: Any):
    from gossipml.comm.config import TransportConfig
    from gossipml.comm.memory import MemoryNetwork
    from gossipml.peer.swarm import SwarmLink

    swarm = _swarm(**membership)
    port = MemoryNetwork().transport(0, "memory://0", {}, TransportConfig(), lambda *a: None)
    return SwarmLink(swarm, port, 0, "tcp://10.0.0.100:5555", {}, lambda *a: None), swarm


def test_max_new_per_shuffle_bounds_the_ids_one_source_introduces():
    invented = [[100 + k, "tcp://10.0.0.200:5555", 0.0] for k in range(20)]
    counts = []
    for limit in (1, 3):
        swarm = _swarm(1, max_new_per_shuffle=limit)
        swarm.on_shuffle(invented, 1)
        counts.append(len(swarm.candidates()))
    assert counts == [1, 3]


def test_max_probes_bounds_the_probes_in_flight():
    assert [_link(max_probes=n)[0]._probe_slots() for n in (1, 5)] == [1, 5]


def test_probe_timeout_s_drops_a_candidate_that_never_answers():


    kept = []
    for timeout_s in (0.5, 5.0):
        link, _ = _link(probe_timeout_s=timeout_s)
        link._start_probe(7, "tcp://10.0.0.7:5555", dial=False)
        link._expire_probes(time.monotonic() + 1.0)
        kept.append(7 in link._probes)
    assert kept == [False, True]


def test_seeds_are_whom_an_empty_view_shuffles_with():
    one = _swarm(seeds=("tcp://10.0.0.1:5555",)).due_shuffle()
    two = _swarm(seeds=("tcp://10.0.0.2:5555",)).due_shuffle()
    assert one is not None and two is not None and one[0] != two[0]


def test_view_size_bounds_the_live_view():
    assert len(_swarm(6, view_size=2, shuffle_size=2).live()) == 2
    assert len(_swarm(6, view_size=16).live()) == 6


def test_shuffle_size_is_the_entries_a_shuffle_carries():
    sizes = {}
    for size in (2, 6):
        shuffle = _swarm(10, shuffle_size=size).due_shuffle()
        assert shuffle is not None
        sizes[size] = len(shuffle[1])
    assert sizes[2] < sizes[6]


def test_shuffle_interval_s_spaces_the_shuffles():
    fast, slow = _swarm(3, shuffle_interval_s=0.01), _swarm(3, shuffle_interval_s=5.0)
    assert fast.due_shuffle() is not None and slow.due_shuffle() is not None
    time.sleep(0.03)
    assert fast.due_shuffle() is not None and slow.due_shuffle() is None


def test_dead_after_s_drops_the_silent():
    alive = {}
    for dead_after_s in (1.0, 100.0):
        swarm = _swarm(3, dead_after_s=dead_after_s)
        swarm.membership.expire(time.monotonic() + 5.0)
        alive[dead_after_s] = len(swarm.membership.live_peers())
    assert alive == {1.0: 0, 100.0: 3}


def test_fanout_is_how_many_a_round_pushes_to():
    assert len(_swarm(6, fanout=1).out_neighbors(0, 0)) == 1
    assert len(_swarm(6, fanout=3).out_neighbors(0, 0)) == 3
