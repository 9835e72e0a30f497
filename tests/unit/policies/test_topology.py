"""Topologies: degrees, symmetry, mixing weights, spectral gaps, seeded random graphs, edges."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.policies.topology import (
    TOPOLOGY_KINDS, TopologyConfig, build_topology, parse_edges, spectral_gap_of, torus_grid,
)

EXAMPLE_EDGES = Path(__file__).resolve().parents[3] / "examples" / "edges_example.txt"
GENERATED = [k for k in TOPOLOGY_KINDS if k != "edges"]


@pytest.mark.parametrize("kind", GENERATED)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 9])  # no prime > 3: torus refuses those
def test_no_self_loops_no_duplicates_and_in_out_agree(kind, n):
    topo = build_topology(TopologyConfig(kind=kind, k=2), n)
    for r in (0, 1, 5):
        for i in range(n):
            out = topo.out_neighbors(i, r)
            assert i not in out and len(set(out)) == len(out)
            assert all(0 <= j < n for j in out)
            for j in out:
                assert i in topo.in_neighbors(j, r)
        assert sum(len(topo.out_neighbors(i, r)) for i in range(n)) == \
            sum(len(topo.in_neighbors(i, r)) for i in range(n))


def test_one_and_two_peers():
    for kind in GENERATED:
        one = build_topology(TopologyConfig(kind=kind), 1)
        assert one.out_neighbors(0, 0) == () and one.mixing_weights(0, 0) == {0: 1.0}
        two = build_topology(TopologyConfig(kind=kind), 2)
        assert two.out_neighbors(0, 3) == (1,) and two.in_neighbors(1, 3) == (0,)
        assert two.mixing_weights(0, 3) == pytest.approx({0: 0.5, 1: 0.5})


@pytest.mark.parametrize("n,k,expected", [(8, 2, (1, 7)), (8, 4, (1, 2, 6, 7)),
                                          (5, 6, (1, 2, 3, 4)), (3, 2, (1, 2))])
def test_ring_lattice_degrees(n, k, expected):
    topo = build_topology(TopologyConfig(kind="ring", k=k), n)
    assert topo.out_neighbors(0) == expected == topo.in_neighbors(0)
    assert all(len(topo.out_neighbors(i)) == len(expected) for i in range(n))


def test_full_torus_and_exponential_degrees():
    assert all(len(build_topology(TopologyConfig(kind="full"), 6).out_neighbors(i)) == 5
               for i in range(6))
    torus = build_topology(TopologyConfig(kind="torus"), 12)  # 3 x 4 grid
    assert torus_grid(12) == (3, 4) and torus_grid(16) == (4, 4) and torus_grid(8) == (2, 4)
    assert torus.out_neighbors(5) == (1, 4, 6, 9)
    assert all(len(torus.out_neighbors(i)) == 4 for i in range(12))
    expo = build_topology(TopologyConfig(kind="exponential"), 8)
    assert expo.out_neighbors(0) == (1, 2, 4) and expo.in_neighbors(0) == (4, 6, 7)
    assert build_topology(TopologyConfig(kind="exponential"), 6).out_neighbors(5) == (0, 1, 3)


def test_torus_refuses_primes_with_advice():
    with pytest.raises(ValueError, match="n_peers=7 is prime.*ring"):
        build_topology(TopologyConfig(kind="torus"), 7)


def test_exponential_onepeer_cycles_through_powers_of_two():
    topo = build_topology(TopologyConfig(kind="exponential_onepeer"), 8)
    assert not topo.is_static and topo.spectral_gap() is None
    assert [topo.out_neighbors(3, r) for r in range(7)] == \
        [(4,), (5,), (7,), (4,), (5,), (7,), (4,)]
    assert [topo.in_neighbors(3, r) for r in range(3)] == [(2,), (1,), (7,)]
    # averaging over one period of tau = log2(8) rounds is exact consensus (Ying et al. 2021)
    prod = np.eye(8)
    for r in range(3):
        prod = topo.mixing_matrix(r) @ prod
    np.testing.assert_allclose(prod, np.full((8, 8), 1 / 8), atol=1e-12)


def test_symmetric_graphs_are_symmetric_and_mh_doubly_stochastic(tmp_path):
    edges = tmp_path / "e.txt"
    edges.write_text("0 1\n0 2\n0 3\n3 4\n4 5\n")  # a star plus a tail: unequal degrees
    cfgs = [TopologyConfig(kind="ring", k=4, weights="metropolis"),
            TopologyConfig(kind="torus", weights="metropolis"),
            TopologyConfig(kind="full", weights="metropolis"),
            TopologyConfig(kind="edges", path=str(edges), weights="metropolis")]
    for cfg in cfgs:
        w = build_topology(cfg, 6).mixing_matrix()
        np.testing.assert_allclose(w, w.T, atol=1e-12)
        np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
        assert (w >= 0).all()
    star = build_topology(cfgs[-1], 6)
    assert star.mixing_weights(1) == pytest.approx({1: 0.75, 0: 0.25})  # 1/(1+max(1, 3))
    assert star.mixing_weights(0)[0] == pytest.approx(1 - 3 * 0.25)


def test_uniform_weights_are_one_over_degree_plus_one():
    topo = build_topology(TopologyConfig(kind="random", k=3, seed=4), 10)
    for r in range(3):
        for i in range(10):
            w = topo.mixing_weights(i, r)
            d = len(topo.in_neighbors(i, r))
            assert set(w) == {i, *topo.in_neighbors(i, r)}
            assert all(v == pytest.approx(1 / (d + 1)) for v in w.values())
            assert sum(w.values()) == pytest.approx(1.0)


def test_full_graph_gap_is_one():
    for n in (2, 5, 8):
        assert build_topology(TopologyConfig(kind="full"), n).spectral_gap() == pytest.approx(1.0)


@pytest.mark.parametrize("n", range(4, 21))
def test_ring_gap_closed_form(n):
    # W = (I + S + S^T)/3 is circulant: lambda_m = (1 + 2 cos(2 pi m / n)) / 3. For n >= 4 the
    # largest |lambda_m| with m != 0 is m = 1 (the negative ones are >= -1/3 in magnitude <= 1/3),
    # so gap = 1 - (1 + 2 cos(2 pi / n)) / 3 = 2 (1 - cos(2 pi / n)) / 3.
    expected = 2.0 * (1.0 - math.cos(2.0 * math.pi / n)) / 3.0
    for weights in ("uniform", "metropolis"):
        gap = build_topology(TopologyConfig(kind="ring", weights=weights), n).spectral_gap()
        assert gap == pytest.approx(expected, abs=1e-10)


def test_gap_orders_graphs_and_spots_disconnection(tmp_path):
    ring = build_topology(TopologyConfig(kind="ring"), 36).spectral_gap()
    torus = build_topology(TopologyConfig(kind="torus"), 36).spectral_gap()
    expo = build_topology(TopologyConfig(kind="exponential"), 36).spectral_gap()
    assert 0 < ring < torus < expo < 1
    split = tmp_path / "split.txt"
    split.write_text("0 1\n2 3\n")
    assert build_topology(TopologyConfig(kind="edges", path=str(split)), 4).spectral_gap() == \
        pytest.approx(0.0, abs=1e-12)
    assert spectral_gap_of(np.eye(1)) == 1.0


def test_random_graph_is_seeded_per_round_and_k_out():
    a = build_topology(TopologyConfig(kind="random", k=3, seed=11), 9)
    b = build_topology(TopologyConfig(kind="random", k=3, seed=11), 9)
    c = build_topology(TopologyConfig(kind="random", k=3, seed=12), 9)
    rounds = range(20)
    graph = lambda t, r: [t.out_neighbors(i, r) for i in range(9)]  # noqa: E731
    # another peer asking in another order sees the same graph
    assert [graph(a, r) for r in rounds] == [graph(b, r) for r in reversed(rounds)][::-1]
    assert [graph(a, r) for r in rounds] != [graph(c, r) for r in rounds]
    assert len({tuple(graph(a, r)) for r in rounds}) > 15  # drawn anew each round
    assert all(len(a.out_neighbors(i, r)) == 3 for i in range(9) for r in rounds)
    assert not a.is_static and a.spectral_gap() is None
    small = build_topology(TopologyConfig(kind="random", k=5), 3)  # k capped at n - 1
    assert small.out_neighbors(0, 0) == (1, 2)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 6), seed=st.integers(0, 2**31), r=st.integers(0, 99))
def test_random_rows_are_stochastic(n, k, seed, r):
    for weights in ("uniform", "metropolis"):
        topo = build_topology(TopologyConfig(kind="random", k=k, seed=seed, weights=weights), n)
        w = topo.mixing_matrix(r)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
        assert (w >= 0).all() and (np.diag(w) > 0).all()


def test_edge_file_example_and_directed_marks():
    topo = build_topology(TopologyConfig(kind="edges", path=str(EXAMPLE_EDGES)), 8)
    assert topo.is_static and 0 < topo.spectral_gap() < 1
    assert parse_edges("0 1  # a comment\n\n# only a comment\n1 -> 2\n2 - 3\n3->0\n") == (
        (0, 1, False), (1, 2, True), (2, 3, False), (3, 0, True))
    assert topo.out_neighbors(1) == (0, 2, 5) and topo.in_neighbors(1) == (0, 2)
    assert topo.out_neighbors(0) == (1, 4, 7) == topo.in_neighbors(0)
    assert 1 in topo.in_neighbors(5) and 5 not in topo.in_neighbors(1)


@pytest.mark.parametrize("text,match", [
    ("0 1\n1 x\n", r"f\.txt:2: peer ids must be integers"),
    ("0 1\n\n# c\n2 2\n", r"f\.txt:4: self loop"),
    ("0 1 2\n", r"f\.txt:1: expected 'a b'"),
    ("0 -> -> 1\n", r"f\.txt:1: expected"),
    ("0 1\n1 9\n", r"f\.txt:2: peer 9 is out of range for n_peers=4"),
    ("-1 2\n", r"f\.txt:1: "),
])
def test_edge_file_errors_name_the_line(tmp_path, text, match):
    path = tmp_path / "f.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        build_topology(TopologyConfig(kind="edges", path=str(path)), 4)


def test_config_errors_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="unknown topology kind 'moebius'.*ring"):
        TopologyConfig(kind="moebius")
    with pytest.raises(ValueError, match="weights 'mh'.*metropolis"):
        TopologyConfig(weights="mh")
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        TopologyConfig(kind="random", k=0)
    with pytest.raises(ValueError, match="ring k must be even"):
        TopologyConfig(kind="ring", k=3)
    with pytest.raises(ValueError, match="needs path"):
        TopologyConfig(kind="edges")
    with pytest.raises(ValueError, match="seed must be"):
        TopologyConfig(seed=-1)
    with pytest.raises(ValueError, match="cannot read topology edge list"):
        build_topology(TopologyConfig(kind="edges", path=str(tmp_path / "none.txt")), 4)
    with pytest.raises(ValueError, match="n_peers must be"):
        build_topology(TopologyConfig(), 0)
    with pytest.raises(ValueError, match="peer 5 out of range"):
        build_topology(TopologyConfig(), 4).out_neighbors(5, 0)


def test_random_regular_is_a_seeded_undirected_expander_of_degree_k():
    cfg = TopologyConfig(kind="random_regular", k=4, weights="metropolis", seed=3)
    topo = build_topology(cfg, 1000)
    degrees = [len(topo.links(i)) for i in range(1000)]
    # Assert: degree k (a pair drawn twice counts once: rare), undirected, mutual, seeded
    assert max(degrees) == 4 and sum(d == 4 for d in degrees) > 950
    assert topo.mutual and topo.is_static
    assert all(i in topo.in_neighbors(j) for i in range(1000) for j in topo.out_neighbors(i))
    assert build_topology(cfg, 1000).out_neighbors(7) == topo.out_neighbors(7)
    other = build_topology(TopologyConfig(kind="random_regular", k=4, seed=4), 1000)
    assert any(other.out_neighbors(i) != topo.out_neighbors(i) for i in range(10))
    # an expander: its gap is far above a ring's of the same size and degree
    small = build_topology(cfg, 200).spectral_gap()
    ring = build_topology(TopologyConfig(kind="ring", k=4, weights="metropolis"), 200)
    assert small > 0.05 and small > 50 * ring.spectral_gap()
    with pytest.raises(ValueError, match="random_regular k must be even"):
        TopologyConfig(kind="random_regular", k=3)


def test_links_are_every_peer_a_peer_may_talk_to_and_mutual_only_when_undirected():
    ring = build_topology(TopologyConfig(kind="ring", k=2), 8)
    assert ring.links(0) == (1, 7) and ring.mutual
    expo = build_topology(TopologyConfig(kind="exponential"), 8)
    assert expo.links(0) == (1, 2, 4, 6, 7) and not expo.mutual  # out 1,2,4; in 7,6,4
    onepeer = build_topology(TopologyConfig(kind="exponential_onepeer"), 8)
    assert onepeer.links(0) == expo.links(0) and not onepeer.mutual  # the union of its rounds
    rand = build_topology(TopologyConfig(kind="random", k=1), 8)
    assert rand.links(3) == (0, 1, 2, 4, 5, 6, 7) and not rand.mutual
