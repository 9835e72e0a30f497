"""Membership: an in-process swarm of Membership objects exchanging shuffles round by round."""

from __future__ import annotations

import random
import statistics

import msgpack
import numpy as np
import pytest

from gossipml.policies.membership import MAX_WIRE_ENTRIES, Membership, View, ViewEntry, parse_entries

ROUND_S = 1.0


def addr(i: int) -> str:
    return f"tcp://10.77.0.{i + 1}:5555"


class Swarm:
    """N peers; each round every live peer shuffles once with its target, in random order."""

    def __init__(self, n: int, view_size: int, shuffle_size: int, dead_after_s: float, seed: int):
        self.rng = random.Random(seed)
        self.now_s = 0.0
        self.peers: dict[int, Membership] = {}
        self.alive: set[int] = set()
        self.view_size, self.shuffle_size, self.dead_after_s = view_size, shuffle_size, dead_after_s
        for i in range(n):
            # a single seed each: a random earlier peer (peer 0 has none and waits to be found)
            self.add(i, [addr(self.rng.randrange(i))] if i else [])

    def add(self, i: int, seeds: list[str]) -> None:
        self.peers[i] = Membership(i, addr(i), seeds, view_size=self.view_size,
                                   shuffle_size=self.shuffle_size, dead_after_s=self.dead_after_s,
                                   seed=1000 + i)
        self.alive.add(i)

    def by_address(self, a: str) -> int:
        return next(i for i in self.peers if addr(i) == a)

    def step(self) -> None:
        self.now_s += ROUND_S
        order = sorted(self.alive)
        self.rng.shuffle(order)
        for i in order:
            out = self.peers[i].make_shuffle(self.now_s)
            if out is None:
                continue
            target_addr, entries = out
            entries = msgpack.unpackb(msgpack.packb(entries))  # what the wire does to them
            j = self.by_address(target_addr)
            if j not in self.alive:
                continue  # the message is lost: nobody answers
            self.peers[j].heard(i, addr(i), self.now_s)
            reply = self.peers[j].on_shuffle(entries, i, self.now_s)
            self.peers[i].on_reply(msgpack.unpackb(msgpack.packb(reply)), self.now_s)

    def run(self, rounds: int) -> None:
        for _ in range(rounds):
            self.step()

    def views(self) -> dict[int, set[int]]:
        return {i: set(self.peers[i].live_peers()) for i in self.alive}


@pytest.mark.parametrize("n", [16, 24])
def test_full_views_converge_to_live_set(n):
    swarm = Swarm(n, view_size=n, shuffle_size=5, dead_after_s=40.0, seed=n)
    swarm.run(40)
    for i, view in swarm.views().items():
        assert view == swarm.alive - {i}, f"peer {i} sees {sorted(view)}"


def test_partial_views_cover_union_and_indegree_is_spread():
    n, view_size = 32, 8
    swarm = Swarm(n, view_size=view_size, shuffle_size=4, dead_after_s=60.0, seed=7)
    swarm.run(60)
    views = swarm.views()
    assert set().union(*views.values()) == swarm.alive
    assert all(len(v) == view_size and i not in v and v <= swarm.alive for i, v in views.items())
    indegree = [sum(j in v for v in views.values()) for j in sorted(swarm.alive)]
    assert sum(indegree) == n * view_size
    assert min(indegree) >= 1, indegree
    assert max(indegree) <= 3 * view_size, indegree  # no star: nobody is known by almost everyone
    assert statistics.pstdev(indegree) < view_size / 2, indegree


@pytest.mark.parametrize("view_size", [32, 8])
def test_killed_peers_leave_every_view(view_size):
    n, dead_after_s = 24, 15.0
    swarm = Swarm(n, view_size=view_size, shuffle_size=4, dead_after_s=dead_after_s, seed=3)
    swarm.run(30)
    killed = {3, 11, 17, 20}
    swarm.alive -= killed
    swarm.run(int(dead_after_s / ROUND_S) + 1)
    views = swarm.views()
    for i, view in views.items():
        assert not view & killed, f"peer {i} still lists dead {sorted(view & killed)}"
    assert set().union(*views.values()) == swarm.alive


@pytest.mark.parametrize("seed_peer", [0, 9, 15])
def test_newcomer_joins_through_any_one_seed(seed_peer):
    n = 16
    swarm = Swarm(n, view_size=n + 1, shuffle_size=5, dead_after_s=40.0, seed=11)
    swarm.run(20)
    swarm.add(n, [addr(seed_peer)])
    swarm.run(25)
    views = swarm.views()
    assert views[n] == swarm.alive - {n}
    assert all(n in v for i, v in views.items() if i != n)


def test_sample_draws_distinct_live_ids():
    m = Membership(0, addr(0), [], view_size=8, shuffle_size=3, dead_after_s=10.0)
    for j in range(1, 6):
        m.heard(j, addr(j), now_s=1.0)
    got = m.sample(3, random.Random(1))
    assert len(set(got)) == 3 and set(got) <= set(range(1, 6))
    got_np = m.sample(10, np.random.default_rng(1))
    assert sorted(got_np) == [1, 2, 3, 4, 5]
    assert m.expire(now_s=11.5) == [1, 2, 3, 4, 5] and m.live_peers() == {}


def test_first_shuffle_goes_to_a_seed_and_self_is_never_kept():
    m = Membership(5, addr(5), [addr(5), addr(1)], view_size=4, shuffle_size=2, dead_after_s=10.0)
    target, entries = m.make_shuffle(0.0)
    assert target == addr(1) and entries == [[5, addr(5), 0.0]]
    m.on_reply([[5, addr(5), 0.0], [1, addr(1), 0.0], [2, addr(2), 3.0], [2, addr(2), 1.0]], 10.0)
    assert m.live_peers() == {1: addr(1), 2: addr(2)}
    assert m.view.get(2).last_heard_s == 9.0  # the freshest duplicate wins
    m.on_reply([[7, addr(7), 10.0]], 10.0)  # already too old to be alive: refused
    assert 7 not in m.live_peers()


def test_view_trim_evicts_shipped_then_oldest():
    v = View(2)
    for p, t in [(1, 5.0), (2, 1.0), (3, 9.0)]:
        v.upsert(ViewEntry(p, addr(p), t))
    assert v.trim(evict_first={3}) == [3]
    v.upsert(ViewEntry(4, addr(4), 2.0))
    assert v.trim() == [2] and sorted(e.peer_id for e in v.entries()) == [1, 4]


@pytest.mark.parametrize("bad, why", [
    ({"a": 1}, "must be a list"),
    ([[1, addr(1)]], "must be \\[peer_id"),
    ([[-1, addr(1), 0.0]], "peer_id"),
    ([[True, addr(1), 0.0]], "peer_id"),
    ([[1, "no-scheme", 0.0]], "address"),
    ([[1, "tcp://" + "x" * 300, 0.0]], "address"),
    ([[1, addr(1), float("nan")]], "age_s"),
    ([[1, addr(1), -1.0]], "age_s"),
    ([[1, addr(1), "0"]], "age_s"),
    ([[1, addr(1), 0.0]] * (MAX_WIRE_ENTRIES + 1), "limit"),
])
def test_untrusted_entries_are_refused_with_a_reason(bad, why):
    m = Membership(0, addr(0), [], view_size=4, shuffle_size=2, dead_after_s=10.0)
    with pytest.raises(ValueError, match=why):
        m.on_shuffle(bad, 1, 0.0)
    with pytest.raises(ValueError, match=why):
        parse_entries(bad)
    assert m.live_peers() == {}
