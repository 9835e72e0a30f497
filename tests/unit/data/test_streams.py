"""Synthetic streams: reproducible per-peer draws, a shared world, and an optimum that plain SGD
approaches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gossipml.data import DataConfig, Stream, load_dataset, make_world
from gossipml.tasks import TaskConfig, build_task


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    world = make_world("logistic", 8, seed=1)
    a, b, c = Stream(world, 5), Stream(world, 5), Stream(world, 6)
    xa, ya = a.next_batch(16)
    xb, yb = b.next_batch(16)
    xc, _ = c.next_batch(16)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc)
    assert not torch.equal(xa, a.next_batch(16)[0]), "each draw is fresh"


def test_world_is_shared_by_seed() -> None:
    w1, w2 = make_world("gmm", 6, seed=3, n_classes=4), make_world("gmm", 6, seed=3, n_classes=4)
    assert np.array_equal(w1.optimum()[0], w2.optimum()[0])
    assert not np.array_equal(w1.optimum()[0], make_world("gmm", 6, seed=4).optimum()[0][:4])


def test_linear_optimum_is_the_least_squares_solution() -> None:
    world = make_world("linear", 5, seed=0, noise=0.1)
    x, y = Stream(world, 1).next_batch(20000)
    design = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()
    sol = torch.linalg.lstsq(design, y.double()[:, None]).solution[:, 0].numpy()
    assert world.distance(sol[None, :5], sol[5:]) < 0.01


def test_gmm_labels_match_the_bayes_posterior() -> None:
    world = make_world("gmm", 10, seed=2, n_classes=3)
    x, y = Stream(world, 9).next_batch(5000)
    w, b = (torch.as_tensor(a) for a in world.optimum())
    bayes_acc = float(((x @ w.T + b).argmax(1) == y).float().mean())
    # the true posterior must beat any other rule; here at least the nearest-mean rule it equals
    nearest = float(((-torch.cdist(x, torch.as_tensor(world.means))).argmax(1) == y)
                    .float().mean())
    assert abs(bayes_acc - nearest) < 1e-6 and bayes_acc > 0.5


@pytest.mark.parametrize("dataset, model, lr", [
    ("synthetic_linear", "lstsq", 0.05),
    ("synthetic_logistic", "logreg", 0.5),
    ("synthetic_gmm", "logreg", 0.5),
])
def test_sgd_on_a_stream_approaches_the_optimum(dataset: str, model: str, lr: float) -> None:
    cfg = TaskConfig(model=model, lr=lr, momentum=0.0, batch_size=64, device="cpu")
    task = build_task(cfg, DataConfig(dataset=dataset, stream=True, synthetic_features=10),
                      peer_index=1, n_peers=4, seed=0)
    start = task.distance_to_optimum()
    losses = [task.train_step() for _ in range(2000)]
    metrics = task.evaluate()
    assert metrics["distance_to_optimum"] < 0.35 * start, (start, metrics)
    assert np.mean(losses[-100:]) < np.mean(losses[:100])
    assert task.num_samples == 0 and task.label_histogram is None


def test_synthetic_dataset_is_a_fixed_draw_of_the_world() -> None:
    ds = load_dataset("synthetic_logistic")
    again = load_dataset("synthetic_logistic")
    assert ds.num_classes == 2 and ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.array_equal(ds.x_train, again.x_train)
    reg = load_dataset("synthetic_linear")
    assert reg.is_regression and reg.y_train.dtype == np.float32
