"""Consensus ADMM on a quadratic across 4 in-process peers reaches the centralized optimum."""

from __future__ import annotations

import pytest
import torch

from gossipml.aggregation import (
    AdmmState, AggregationConfig, AsyncAdmmState, Contribution, admm_step, async_admm_step,
    build_aggregator,
)

N_PEERS, DIM = 4, 3
RING = {i: [(i - 1) % N_PEERS, (i + 1) % N_PEERS] for i in range(N_PEERS)}


def quadratic_problem(seed: int):
    """f_i(x) = 1/2 (x - b_i)^T A_i (x - b_i); optimum of the sum: (sum A_i)^-1 sum A_i b_i."""
    g = torch.Generator().manual_seed(seed)
    mats, centers = [], []
    for _ in range(N_PEERS):
        m = torch.randn(DIM, DIM, generator=g, dtype=torch.float64)
        mats.append(m @ m.T + 0.5 * torch.eye(DIM, dtype=torch.float64))
        centers.append(torch.randn(DIM, generator=g, dtype=torch.float64))
    optimum = torch.linalg.solve(sum(mats), sum(a @ b for a, b in zip(mats, centers)))
    eye = torch.eye(DIM, dtype=torch.float64)

    def prox(i: int):
        a, b = mats[i], centers[i]
        return lambda v, s: {"x": torch.linalg.solve(a + eye / s, a @ b + v["x"] / s)}

    return optimum, prox


def start():
    return [{"x": torch.zeros(DIM, dtype=torch.float64)} for _ in range(N_PEERS)]


@pytest.mark.parametrize("rho", [0.5, 1.0, 2.0])
def test_sync_admm_reaches_the_centralized_optimum(rho):
    optimum, prox = quadratic_problem(seed=1)
    xs, states = start(), [AdmmState() for _ in range(N_PEERS)]
    for _ in range(300):
        xs = [admm_step(xs[i], {j: xs[j] for j in RING[i]}, states[i], rho, prox(i))
              for i in range(N_PEERS)]
    for x in xs:
        assert torch.allclose(x["x"], optimum, atol=1e-4, rtol=0)


def test_admm_aggregator_with_prox_context_matches():
    optimum, prox = quadratic_problem(seed=2)
    cfg = AggregationConfig(rule="admm", rho=1.0)
    aggs = [build_aggregator(cfg, prox=prox(i)) for i in range(N_PEERS)]
    xs = start()
    for r in range(300):
        xs = [aggs[i].aggregate(xs[i], [Contribution(j, r, xs[j]) for j in RING[i]], 0.0)
              for i in range(N_PEERS)]
    for x in xs:
        assert torch.allclose(x["x"], optimum, atol=1e-4, rtol=0)


@pytest.mark.parametrize("max_delay_steps,max_staleness", [(0, 1), (3, 2)])
def test_async_admm_with_newest_values_reaches_the_optimum(max_delay_steps, max_staleness):
    optimum, prox = quadratic_problem(seed=1)
    g = torch.Generator().manual_seed(3)
    xs, states = start(), [AsyncAdmmState() for _ in range(N_PEERS)]
    inbox: list[list[tuple[int, int, int, dict]]] = [[] for _ in range(N_PEERS)]
    last_delivery: dict[tuple[int, int], int] = {}
    for i in range(N_PEERS):
        for j in RING[i]:
            inbox[j].append((0, i, 0, xs[i]))
    for t in range(3000):  # a random peer steps; messages arrive later, in order per link
        i = int(torch.randint(N_PEERS, (1,), generator=g))
        if states[i].version > min(states[j].version for j in RING[i]) + max_staleness:
            continue  # bounded staleness, as pacing "ssp" would enforce
        ready = [msg for msg in inbox[i] if msg[0] <= t]
        inbox[i] = [msg for msg in inbox[i] if msg[0] > t]
        xs[i] = async_admm_step(xs[i], [(s, v, p) for _, s, v, p in ready], states[i], 1.0,
                                prox(i))
        for j in RING[i]:
            delay = int(torch.randint(max_delay_steps + 1, (1,), generator=g))
            at = max(last_delivery.get((i, j), 0), t + delay)
            last_delivery[(i, j)] = at
            inbox[j].append((at, i, states[i].version, xs[i]))
    assert min(s.version for s in states) > 400
    for x, s in zip(xs, states):
        assert torch.allclose(x["x"], optimum, atol=1e-4, rtol=0)
        assert len(s.own_history) <= s.history_limit


def test_admm_default_surrogate_pulls_peers_together():
    cfg = AggregationConfig(rule="admm", rho=1.0)
    a, b = build_aggregator(cfg), build_aggregator(cfg)
    xa, xb = {"w": torch.tensor([0.0])}, {"w": torch.tensor([4.0])}
    for r in range(20):
        xa, xb = (a.aggregate(xa, [Contribution(1, r, xb)], 0.5),
                  b.aggregate(xb, [Contribution(0, r, xa)], 0.5))
    assert abs(xa["w"].item() - xb["w"].item()) < 0.4


@pytest.mark.parametrize("asynchronous", [False, True])
def test_admm_state_survives_a_checkpoint_file(tmp_path, asynchronous):
    """A restarted ADMM peer goes on with the same duals (and, asynchronous, the same versions
    and histories): its next step equals the one the uninterrupted peer takes."""
    from gossipml.peer.checkpoint import load_checkpoint, save_checkpoint

    # Prepare: two peers take a few ADMM steps together
    cfg = AggregationConfig(rule="admm", rho=1.0, asynchronous=asynchronous)
    a, b = build_aggregator(cfg), build_aggregator(cfg)
    xa, xb = {"w": torch.tensor([0.0, 1.0])}, {"w": torch.tensor([4.0, -2.0])}
    for r in range(5):
        xa, xb = (a.aggregate(xa, [Contribution(1, r, xb)], 0.5, own_round=r),
                  b.aggregate(xb, [Contribution(0, r, xa)], 0.5, own_round=r))
    # Execute: a's state through a checkpoint file into a fresh aggregator
    save_checkpoint(tmp_path / "a.pt", {"aggregation": a.state_dict()})
    restored = build_aggregator(cfg)
    restored.load_state_dict(load_checkpoint(tmp_path / "a.pt")["aggregation"])
    fresh = build_aggregator(cfg)
    # Assert: the restored one steps exactly like the original; a fresh one (zero duals) does not
    step = [Contribution(1, 5, xb)]
    expected = a.aggregate(xa, step, 0.5, own_round=5)["w"]
    assert torch.equal(restored.aggregate(xa, step, 0.5, own_round=5)["w"], expected)
    assert not torch.allclose(fresh.aggregate(xa, step, 0.5, own_round=5)["w"], expected)
