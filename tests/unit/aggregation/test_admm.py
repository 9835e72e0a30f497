"""Consensus ADMM on a quadratic across 4 in-process peers reaches the centralized optimum."""

from __future__ import annotations

import pytest
import torch

from gossipml.aggregation import (
    AdmmState, AggregationConfig, AsyncAdmmState, Contribution, admm_step, async_admm_step,
    build_aggregator,
)
from gossipml.aggregation.admm_async import SUM_PREFIX, edge_dual, record_own

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
        return lambda v, s, start=None: {"x": torch.linalg.solve(a + eye / s, a @ b + v["x"] / s)}

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


def _with_sums(state: AsyncAdmmState, version: int, x: dict) -> dict:
    """What a peer sends at ``version``: the model and its running sums (recorded)."""
    sums = record_own(state, version, x)
    return {**x, **{SUM_PREFIX + n: t for n, t in sums.items()}}


@pytest.mark.parametrize("max_delay_steps,max_staleness,loss,in_order", [
    (0, 1, 0.0, True), (3, 2, 0.0, True), (3, 2, 0.25, True), (4, 2, 0.25, False)])
def test_async_admm_with_newest_values_reaches_the_optimum(max_delay_steps, max_staleness, loss,
                                                           in_order):
    """Random peers step under bounded staleness; messages arrive late, and with ``loss`` a
    quarter of them never arrive (``in_order`` False: links also reorder them). The running
    sums make the lost ones cost nothing: every peer still ends at the exact optimum."""
    optimum, prox = quadratic_problem(seed=1)
    g = torch.Generator().manual_seed(3)
    xs, states = start(), [AsyncAdmmState() for _ in range(N_PEERS)]
    inbox: list[list[tuple[int, int, int, dict]]] = [[] for _ in range(N_PEERS)]
    last_delivery: dict[tuple[int, int], int] = {}
    for i in range(N_PEERS):
        for j in RING[i]:
            inbox[j].append((0, i, 0, _with_sums(states[i], 0, xs[i])))
    for t in range(3000):  # a random peer steps; messages arrive later
        i = int(torch.randint(N_PEERS, (1,), generator=g))
        if states[i].version > min(states[j].version for j in RING[i]) + max_staleness:
            continue  # bounded staleness, as pacing "ssp" would enforce
        ready = [msg for msg in inbox[i] if msg[0] <= t]
        inbox[i] = [msg for msg in inbox[i] if msg[0] > t]
        xs[i] = async_admm_step(xs[i], [(s, v, p) for _, s, v, p in ready], states[i], 1.0,
                                prox(i))
        sent = _with_sums(states[i], states[i].version, xs[i])
        for j in RING[i]:
            delay = int(torch.randint(max_delay_steps + 1, (1,), generator=g))
            at = max(last_delivery.get((i, j), 0), t + delay) if in_order else t + delay
            last_delivery[(i, j)] = at
            if float(torch.rand(1, generator=g)) >= loss:
                inbox[j].append((at, i, states[i].version, sent))
    assert min(s.version for s in states) > 400
    for x, s in zip(xs, states):
        assert torch.allclose(x["x"], optimum, atol=1e-4, rtol=0)
        assert len(s.own_sums) <= s.history_limit


def test_async_duals_stay_opposite_with_a_lost_and_a_reordered_version():
    """Edge (0, 1) on literal scalars: peer 1's version 1 never reaches peer 0, and its versions
    2 and 3 arrive in reverse order. Recomputed from running sums, the two ends' duals at a common
    version are exactly opposite (accumulated per received version they would not be)."""
    a, b = AsyncAdmmState(), AsyncAdmmState()
    xa = [torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([4.0]), torch.tensor([3.0])]
    xb = [torch.tensor([-1.0]), torch.tensor([5.0]), torch.tensor([0.5]), torch.tensor([7.0])]
    sent_a = [_with_sums(a, t, {"w": x}) for t, x in enumerate(xa)]
    sent_b = [_with_sums(b, t, {"w": x}) for t, x in enumerate(xb)]
    keep = lambda v, p, s: {"w": v["w"]}  # noqa: E731 (the prox is not under test here)
    # Execute: peer 0 at version 3 receives b's versions 0, 3 and 2 (in that order; 1 is lost)
    a.version = 3
    for arrivals in ([(1, 0, sent_b[0])], [(1, 3, sent_b[3])], [(1, 2, sent_b[2])]):
        async_admm_step({"w": xa[3]}, arrivals, a, 1.0, keep)
        a.version = 3
    # ... and peer 1 at version 3 receives every version of a's
    b.version = 3
    async_admm_step({"w": xb[3]}, [(0, t, m) for t, m in enumerate(sent_a)], b, 1.0, keep)
    # Assert: both ends paired at version 3 and their duals are exact negatives, equal to the
    # synchronous dual rho/2 sum_t (x_a(t) - x_b(t)) = 0.5 (10 - 11.5) = -0.75
    assert a.dual_version[1] == b.dual_version[0] == 3
    assert torch.equal(a.duals[1]["w"], -b.duals[0]["w"])
    assert a.duals[1]["w"].item() == pytest.approx(-0.75)


def test_edge_dual_recomputed_after_a_gap_equals_the_accumulated_one():
    """After versions 1..4 lost, version 5's sums give the same dual as every increment."""
    xa = [torch.tensor([float(t), 1.0]) for t in range(6)]
    xb = [torch.tensor([2.0, float(-t)]) for t in range(6)]
    a, b = AsyncAdmmState(), AsyncAdmmState()
    sa = [record_own(a, t, {"w": x})["w"] for t, x in enumerate(xa)]
    sb = [record_own(b, t, {"w": x})["w"] for t, x in enumerate(xb)]
    accumulated = sum(0.5 * 2.0 * (p - q) for p, q in zip(xa, xb))
    assert torch.allclose(edge_dual({"w": sa[5]}, {"w": sb[5]}, 2.0)["w"],
                          accumulated.double())


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
    for r in range(5):  # each message carries what the aggregator adds (asynchronous: sums)
        ma, mb = {**xa, **a.outgoing_tensors(r, xa)}, {**xb, **b.outgoing_tensors(r, xb)}
        xa, xb = (a.aggregate(xa, [Contribution(1, r, mb)], 0.5, own_round=r),
                  b.aggregate(xb, [Contribution(0, r, ma)], 0.5, own_round=r))
    # Execute: a's state through a checkpoint file into a fresh aggregator
    save_checkpoint(tmp_path / "a.pt", {"aggregation": a.state_dict()})
    restored = build_aggregator(cfg)
    restored.load_state_dict(load_checkpoint(tmp_path / "a.pt")["aggregation"])
    fresh = build_aggregator(cfg)
    # Assert: the restored one steps exactly like the original; a fresh one (zero duals) does not
    step = [Contribution(1, 5, {**xb, **b.outgoing_tensors(5, xb)})]
    for agg in (a, restored, fresh):
        agg.outgoing_tensors(5, xa)
    expected = a.aggregate(xa, step, 0.5, own_round=5)["w"]
    assert torch.equal(restored.aggregate(xa, step, 0.5, own_round=5)["w"], expected)
    assert not torch.allclose(fresh.aggregate(xa, step, 0.5, own_round=5)["w"], expected)


def _digits_task(model: str, l2: float):
    from gossipml.data import DataConfig
    from gossipml.tasks import TaskConfig, build_task
    from gossipml.tasks.prox import build_local_prox

    task = build_task(TaskConfig(model=model, weight_decay=l2), DataConfig(dataset="digits"), 0,
                      4, 0)
    total = len(task.dataset.x_train)
    return task, lambda **kw: build_local_prox(task, n_peers=4, total_samples=total, l2=l2,
                                               **{"steps": 10, "lr": None, "batch_size": 0,
                                                  **kw})


def _prox_stationarity(prox, x, v, step):
    g = prox.gradient(x)
    return max(float((g[n] + (x[n] - v[n]) / step).abs().max()) for n in x)


def test_lstsq_prox_is_exact():
    from gossipml.peer.exchanged import exchanged_state

    task, make = _digits_task("lstsq", l2=0.05)
    prox = make()
    v = {n: t + 0.3 for n, t in exchanged_state(task.model).items()}
    x = prox(v, 0.25, None)
    assert _prox_stationarity(prox, x, v, 0.25) < 1e-5


def test_logreg_prox_from_gradient_steps_converges_and_keeps_its_fixed_point():
    from gossipml.peer.exchanged import exchanged_state

    task, make = _digits_task("logreg", l2=0.1)
    v = {n: t + 0.1 for n, t in exchanged_state(task.model).items()}
    few, many = make(steps=3), make(steps=2000)
    exact = many(v, 0.5, v)
    assert _prox_stationarity(many, exact, v, 0.5) < 1e-4
    # warm-started at the prox itself, a few steps stay there: ADMM's fixed point stays exact
    again = few(v, 0.5, exact)
    assert max(float((again[n] - exact[n]).abs().max()) for n in v) < 1e-5
    # from v, a few steps do not reach it
    cold = few(v, 0.5, None)
    assert max(float((cold[n] - exact[n]).abs().max()) for n in v) > 1e-3


def test_prox_needs_a_step_size_for_nonlinear_models():
    from gossipml.data import DataConfig
    from gossipml.tasks import TaskConfig, build_task
    from gossipml.tasks.prox import build_local_prox

    task = build_task(TaskConfig(model="mlp"), DataConfig(dataset="digits"), 0, 4, 0)
    with pytest.raises(ValueError, match="prox_lr"):
        build_local_prox(task, n_peers=4, total_samples=1000, l2=0.0, steps=5, lr=None,
                         batch_size=0)
    assert build_local_prox(task, n_peers=4, total_samples=1000, l2=0.0, steps=5, lr=0.1,
                            batch_size=32) is not None


def test_setup_check_accepts_what_admm_needs():
    from gossipml.aggregation.admm import admm_setup_problems

    good = dict(asynchronous=False, pacing_mode="sync", codec_spec="identity", content="params",
                topology_kind="ring", topology_static=True, topology_undirected=True,
                consensus_step=1.0, membership=False, push_every_steps=None, interval_steps=1,
                stream=False)
    assert admm_setup_problems(**good) == []
    assert admm_setup_problems(**{**good, "asynchronous": True, "pacing_mode": "ssp",
                                  "max_staleness": 1}) == []
    assert len(admm_setup_problems(**{**good, "codec_spec": "q8", "stream": True})) == 2
