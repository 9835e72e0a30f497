"""Membership: an in-process swarm of Membership objects exchanging shuffles round by round."""

from __future__ import annotations

import random
import statistics

import msgpack
import numpy as np
import pytest

from gossipml.policies.membership import (MAX_WIRE_ENTRIES, Membership, View, ViewEntry,
                                          parse_entries, parse_tcp_address)

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
            if not self.peers[j].is_member(i):
                self.handshake(i, j)  # a probe and its answer (peer/swarm.py)
            reply = self.peers[j].on_shuffle(entries, i, self.now_s)
            self.peers[i].on_reply(msgpack.unpackb(msgpack.packb(reply)), self.now_s, j)
        for i in order:  # every peer probes a few candidates; only live ones answer
            for c in list(self.peers[i].candidates.values())[:4]:
                if c.peer_id in self.alive and c.address == addr(c.peer_id):
                    self.handshake(i, c.peer_id)
                else:
                    self.peers[i].drop_candidate(c.peer_id)

    def handshake(self, i: int, j: int) -> None:
        """i and j each proved to the other that it answers at its address."""
        self.peers[i].confirm(j, addr(j), self.now_s)
        self.peers[j].confirm(i, addr(i), self.now_s)

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
        m.confirm(j, addr(j), now_s=1.0)
    got = m.sample(3, random.Random(1))
    assert len(set(got)) == 3 and set(got) <= set(range(1, 6))
    got_np = m.sample(10, np.random.default_rng(1))
    assert sorted(got_np) == [1, 2, 3, 4, 5]
    assert m.expire(now_s=11.5) == [1, 2, 3, 4, 5] and m.live_peers() == {}


def test_first_shuffle_goes_to_a_seed_and_self_is_never_kept():
    m = Membership(5, addr(5), [addr(5), addr(1)], view_size=4, shuffle_size=2, dead_after_s=10.0,
                   max_new_per_shuffle=3)
    target, entries = m.make_shuffle(0.0)
    assert target == addr(1) and entries == [[5, addr(5), 0.0]]
    m.confirm(1, addr(1), 10.0)  # the seed answered our probe as peer 1
    m.on_reply([[5, addr(5), 0.0], [1, addr(1), 0.0], [2, addr(2), 3.0], [2, addr(2), 1.0]], 10.0, 1)
    assert m.live_peers() == {1: addr(1)}  # 2 is hearsay: a candidate until it answers a probe
    assert set(m.candidates) == {2} and m.candidates[2].source == 1
    m.confirm(2, addr(2), 10.0)
    assert m.live_peers() == {1: addr(1), 2: addr(2)} and not m.candidates
    m.on_reply([[7, addr(7), 10.0]], 10.0, 1)  # already too old to be alive: refused
    assert 7 not in m.live_peers() and 7 not in m.candidates


def test_one_source_introduces_at_most_max_new_ids_and_hearsay_evicts_no_member():
    m = Membership(0, addr(0), [], view_size=4, shuffle_size=2, dead_after_s=10.0,
                   max_new_per_shuffle=2, max_candidates=8)
    for j in (1, 2, 3, 4):
        m.confirm(j, addr(j), 0.0)
    invented = [[1000 + k, addr(200), 0.0] for k in range(50)]
    m.on_shuffle(invented, 1, 1.0)
    m.on_shuffle(invented[10:], 1, 1.0)  # its two are still pending: nothing more from it
    assert sorted(m.candidates) == [1000, 1001] and m.ignored["new_over_limit"] == 48 + 40
    m.on_reply(invented[20:], 1.0, 2)  # another source: two more, and the table fills
    assert len(m.candidates) == 4 and sorted(m.live_peers()) == [1, 2, 3, 4]
    m.on_shuffle([[3, addr(9), 0.0]], 1, 1.0)  # a member named at another address: ignored
    assert m.live_peers()[3] == addr(3) and m.ignored["address_conflict"] == 1


def test_relayed_ages_have_a_floor_and_candidates_are_bounded():
    m = Membership(0, addr(0), [], view_size=4, shuffle_size=2, dead_after_s=10.0,
                   min_relayed_age_s=2.0, max_candidates=1)
    m.confirm(1, addr(1), 0.0)
    m.confirm(2, addr(2), 0.0)
    m.on_shuffle([[1, addr(1), 0.0], [2, addr(2), 0.0]], 1, 5.0)  # 2 relayed by 1
    assert m.view.get(1).last_heard_s == 5.0 and m.view.get(2).last_heard_s == 3.0
    m.on_shuffle([[2, addr(2), 9.5]], 1, 5.0)  # older news never moves an entry back
    assert m.view.get(2).last_heard_s == 3.0
    m.on_shuffle([[5, addr(5), 0.0], [6, addr(6), 0.0]], 1, 5.0)
    assert list(m.candidates) == [5] and m.ignored["candidates_full"] == 1
    assert m.expire(15.5) == [1, 2] and m.take_departed() == [1, 2] and not m.candidates


def test_a_confirmation_that_overflows_evicts_the_shipped_entries_and_reports_them():
    m = Membership(0, addr(0), [], view_size=2, shuffle_size=2, dead_after_s=10.0, seed=4)
    m.confirm(1, addr(1), 0.0)
    m.confirm(2, addr(2), 1.0)
    target, entries = m.make_shuffle(2.0)  # ships the member that is not the target
    shipped = [e[0] for e in entries[1:]]
    assert m.confirm(3, addr(3), 2.0) == shipped and m.take_departed() == shipped
    assert m.heard(3, None, 3.0) and not m.heard(9, addr(9), 3.0)  # first-hand: members only


@pytest.mark.parametrize("address, want", [
    ("tcp://10.0.0.1:5555", ("10.0.0.1", 5555)),
    ("tcp://[::1]:1", ("::1", 1)),
    ("tcp://gml-h1.example:65535", ("gml-h1.example", 65535)),
    ("tcp://localhost:80", ("127.0.0.1", 80)),
    ("tcp://10.0.0.1:0", None), ("tcp://10.0.0.1:65536", None), ("tcp://*:5555", None),
    ("tcp://0.0.0.0:5555", None), ("tcp://224.0.0.1:5555", None), ("tcp://-bad:1", None),
    ("tcp://a_b:1", None), ("tcp://999.1.1.1:1", None), ("ipc:///tmp/x", None),
    ("tcp://h:1 ", None), ("tcp://[zz]:1", None), (5, None),
])
def test_addresses_are_tcp_with_a_strict_host_and_port(address, want):
    assert parse_tcp_address(address) == want


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
    ([[1, "ipc:///tmp/p", 0.0]], "address"),
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
