"""Link emulation: seeded, order-independent decisions; overrides; rates; compute slowdown."""

from __future__ import annotations

import numpy as np
import pytest

from gossipml.policies.emulation import LinkEmulation, LinkSpec, link_decision


def test_inactive_links_never_drop_or_delay():
    emu = LinkEmulation()
    assert not emu.is_active
    assert all(emu.decide(0, 1, m) == (False, 0.0) for m in range(50))


def test_decisions_are_reproducible_and_order_independent():
    emu = LinkEmulation(delay_s=0.05, jitter_s=0.02, drop_prob=0.3, seed=5)
    keys = [(a, b, m) for a, b in ((0, 1), (1, 0), (2, 3)) for m in range(40)]
    forward = [emu.decide(*k) for k in keys]
    again = LinkEmulation(delay_s=0.05, jitter_s=0.02, drop_prob=0.3, seed=5)
    shuffled = np.random.default_rng(0).permutation(len(keys))
    by_key = {keys[i]: again.decide(*keys[i]) for i in shuffled}
    assert forward == [by_key[k] for k in keys]
    assert any(d for d, _ in forward) and not all(d for d, _ in forward)
    other_seed = LinkEmulation(delay_s=0.05, jitter_s=0.02, drop_prob=0.3, seed=6)
    assert forward != [other_seed.decide(a, b, m) for a, b in ((0, 1), (1, 0), (2, 3))
                       for m in range(40)]
    # the two directions of a link are independent streams
    assert [emu.decide(0, 1, m) for m in range(40)] != [emu.decide(1, 0, m) for m in range(40)]


def test_drop_rate_and_delay_range_match_the_config():
    spec = LinkSpec(delay_s=0.1, jitter_s=0.04, drop_prob=0.25)
    draws = [link_decision(spec, 3, 0, 1, m) for m in range(4000)]
    drop_rate = np.mean([d for d, _ in draws])
    delays = np.array([s for _, s in draws])
    assert abs(drop_rate - 0.25) < 0.03  # 4000 Bernoulli(0.25): sd ~ 0.007
    assert delays.min() >= 0.06 - 1e-12 and delays.max() <= 0.14 + 1e-12
    assert abs(delays.mean() - 0.1) < 0.003
    clipped = [link_decision(LinkSpec(delay_s=0.01, jitter_s=0.05), 0, 0, 1, m)[1]
               for m in range(500)]
    assert min(clipped) == 0.0 and max(clipped) <= 0.06 + 1e-12


def test_per_link_overrides_most_specific_wins():
    emu = LinkEmulation(delay_s=0.01, links={
        "0->1": {"drop_prob": 1.0},
        "2-3": {"delay_s": 0.5},
        "*->4": {"delay_s": 0.2},
        "4->*": {"delay_s": 0.3},
    })
    assert emu.link(0, 1) == LinkSpec(0.01, 0.0, 1.0)
    assert emu.link(1, 0) == LinkSpec(0.01, 0.0, 0.0)  # one way only
    assert emu.link(2, 3) == emu.link(3, 2) == LinkSpec(0.5, 0.0, 0.0)
    assert emu.link(5, 4).delay_s == 0.2 and emu.link(4, 5).delay_s == 0.3
    assert all(emu.decide(0, 1, m)[0] for m in range(20))
    assert emu.decide(2, 3, 7) == (False, 0.5)
    policy = emu.policy(0)  # what the transport calls: (dest, message number)
    assert policy(1, 3) == emu.decide(0, 1, 3) and policy(2, 3) == (False, 0.01)
    assert LinkEmulation(links={"1->2": {"drop_prob": 0.1}}).is_active


def test_compute_slowdown_per_peer():
    emu = LinkEmulation(compute_slowdown={"3": 3.0, "*": 1.5})
    assert emu.slowdown(3) == 3.0 and emu.slowdown(0) == 1.5
    assert LinkEmulation(compute_slowdown=2.0).slowdown(7) == 2.0
    assert LinkEmulation(compute_slowdown={3: 3.0}).slowdown(2) == 1.0


def test_cycled_straggler_visits_every_peer_once_a_cycle():
    emu = LinkEmulation(straggler_factor=3.0, straggler_every_rounds=3, seed=2,
                        straggler_order="cycle")
    who = [emu.straggler(r, 5) for r in range(60)]  # 4 cycles of 5 windows of 3 rounds
    windows = who[::3]
    assert all(who[r] == windows[r // 3] for r in range(60))  # one straggler per window
    cycles = [windows[c * 5:(c + 1) * 5] for c in range(4)]
    assert all(sorted(c) == [0, 1, 2, 3, 4] for c in cycles)  # each peer once per cycle
    assert len({tuple(c) for c in cycles}) > 1  # a new permutation each cycle
    assert who == [LinkEmulation(straggler_factor=3.0, straggler_every_rounds=3, seed=2,
                                 straggler_order="cycle").straggler(r, 5) for r in range(60)]


def test_moving_straggler_is_shared_windowed_and_spread():
    emu = LinkEmulation(straggler_factor=3.0, straggler_every_rounds=2, seed=5)
    who = [emu.straggler(r, 8) for r in range(400)]
    assert who == [LinkEmulation(straggler_factor=3.0, straggler_every_rounds=2,
                                 seed=5).straggler(r, 8) for r in range(400)]  # any process agrees
    assert all(who[2 * w] == who[2 * w + 1] for w in range(200))  # one draw per window
    counts = [who[::2].count(p) for p in range(8)]
    assert min(counts) >= 10 and max(counts) <= 45  # 200 draws over 8 peers (mean 25)
    assert LinkEmulation(straggler_factor=3.0, seed=6).straggler(0, 8) is not None
    assert LinkEmulation().straggler(3, 8) is None  # factor 1: off


def test_step_factor_and_padding():
    emu = LinkEmulation(compute_slowdown={"1": 2.0}, straggler_factor=3.0, seed=1)
    for r in range(20):
        s = emu.straggler(r, 4)
        for p in range(4):
            want = (2.0 if p == 1 else 1.0) * (3.0 if p == s else 1.0)
            assert emu.step_factor(p, r, 4) == want
    assert emu.pad_s(3.0, 0.01) == pytest.approx(0.02)  # real time stretched
    assert emu.pad_s(1.0, 0.01) == 0.0
    device = LinkEmulation(step_time_s=0.05)
    assert device.pad_s(3.0, 0.01) == pytest.approx(0.14)  # 3 x 50 ms, 10 ms of it real
    assert device.pad_s(1.0, 0.08) == 0.0  # a step slower than the device: no pad


@pytest.mark.parametrize("kwargs,match", [
    ({"drop_prob": 1.5}, r"drop_prob must be in \[0, 1\]"),
    ({"delay_s": -0.1}, "delay_s must be a number >= 0"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"links": {"0=>1": {"delay_s": 0.1}}}, "must be \"a->b\""),
    ({"links": {"0->x": {"delay_s": 0.1}}}, "'x' is not a peer id"),
    ({"links": {"0->1": {"latency": 0.1}}}, "keys from"),
    ({"links": {"0->1": {"jitter_s": -1}}}, "link '0->1': jitter_s must be"),
    ({"compute_slowdown": {"2": 0.5}}, r"compute_slowdown\['2'\] must be a number >= 1.0"),
    ({"straggler_factor": 0.5}, "straggler_factor must be a number >= 1.0"),
    ({"straggler_every_rounds": 0}, "straggler_every_rounds must be an integer >= 1"),
    ({"straggler_order": "roundrobin"}, "straggler_order must be one of"),
    ({"step_time_s": -0.01}, r"step_time_s must be a number in \[0, 60\]"),
])
def test_config_errors_say_what_to_change(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinkEmulation(**kwargs)
