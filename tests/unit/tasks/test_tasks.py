"""Tasks: real training of every model kind, optimizers by name (L-BFGS included), devices,
reproducible batches and the config's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gossipml.data import DEFAULT_FMNIST_PATH, DataConfig, load_dataset
from gossipml.tasks import TaskConfig, build_task, resolve_device
from gossipml.tasks.task import Task

gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_mlp_on_all_of_digits_reaches_90_percent(digits) -> None:
    torch.set_num_threads(1)
    task = build_task(TaskConfig(model="mlp", lr=0.05, device="cpu"), DataConfig(), 0, 1, 0,
                      dataset=digits)
    assert task.num_samples == 1437 and sum(task.label_histogram) == 1437
    for _ in range(400):
        task.train_step()
    metrics = task.evaluate()
    assert metrics["accuracy"] > 0.9, metrics
    assert "train_loss" not in metrics  # only linear tasks pay for a full training-loss pass


def test_cnn_on_a_fashion_mnist_subset_lowers_its_loss() -> None:
    try:
        fmnist = load_dataset("fmnist")
    except FileNotFoundError:
        pytest.skip(f"Debian package dataset-fashion-mnist not installed ({DEFAULT_FMNIST_PATH})")
    cfg = TaskConfig(model="cnn", lr=0.05, batch_size=32, device="cpu", eval_max_samples=500)
    task = build_task(cfg, DataConfig(dataset="fmnist"), 3, 30, 0, dataset=fmnist)
    assert task.num_samples == 2000 and task.x_test.shape[0] == 500
    before = task.evaluate()
    losses = [task.train_step() for _ in range(150)]
    after = task.evaluate()
    assert after["loss"] < 0.6 * before["loss"], (before, after)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    assert after["accuracy"] > 0.6


def test_lbfgs_fits_logreg(digits) -> None:
    cfg = TaskConfig(model="logreg", optimizer="lbfgs", lr=1.0, batch_size=2000, device="cpu")
    task = build_task(cfg, DataConfig(), 0, 2, 0, dataset=digits)
    start = task.train_loss()
    losses = [task.train_step() for _ in range(5)]
    assert task.train_loss() < 0.05 * start
    assert losses == sorted(losses, reverse=True)
    assert task.evaluate()["accuracy"] > 0.9


@pytest.mark.parametrize("model, optimizer, lr", [
    ("logreg", "sgd", 0.1), ("svm", "adam", 0.01), ("lstsq", "adamw", 0.01), ("mlp", "adam", 0.003),
])
def test_linear_models_and_optimizers_learn_digits(digits, model: str, optimizer: str,
                                                    lr: float) -> None:
    cfg = TaskConfig(model=model, optimizer=optimizer, lr=lr, device="cpu")
    task = build_task(cfg, DataConfig(partition="dirichlet", alpha=100.0), 1, 2, 0, dataset=digits)
    start = task.train_loss()
    for _ in range(300):
        task.train_step()
    metrics = task.evaluate()
    assert metrics["accuracy"] > 0.85, metrics
    if model != "mlp":
        assert metrics["train_loss"] < start


def _parameters(task: Task) -> list[torch.Tensor]:
    return [p.detach().clone() for p in task.model.parameters()]


def test_same_seed_same_training_and_peers_own_their_parts(digits) -> None:
    cfg, data = TaskConfig(device="cpu"), DataConfig(partition="iid")
    runs = []
    for _ in range(2):
        task = build_task(cfg, data, 2, 4, 7, dataset=digits)
        runs.append(([task.train_step() for _ in range(50)], _parameters(task)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    peers = [build_task(cfg, data, i, 4, 7, dataset=digits) for i in range(4)]
    assert sum(t.num_samples for t in peers) == 1437
    # same_init: every peer starts from the same weights; same_init=False: each its own
    assert all(torch.equal(a, b) for a, b in zip(_parameters(peers[0]), _parameters(peers[1])))
    own = build_task(TaskConfig(device="cpu", same_init=False), data, 1, 4, 7, dataset=digits)
    assert not torch.equal(_parameters(own)[0], _parameters(peers[0])[0])


def test_build_task_does_not_touch_the_global_generator(digits) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_task(TaskConfig(device="cpu"), DataConfig(), 0, 1, 0, dataset=digits)
    assert torch.equal(torch.rand(3), expected)


def test_eval_subset_is_the_same_on_every_peer(digits) -> None:
    cfg = TaskConfig(device="cpu", eval_max_samples=100)
    a = build_task(cfg, DataConfig(), 0, 3, 0, dataset=digits)
    b = build_task(cfg, DataConfig(), 2, 3, 5, dataset=digits)
    assert torch.equal(a.y_test, b.y_test) and a.y_test.shape[0] == 100


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


@gpu
def test_task_on_gpu_keeps_data_on_device(digits) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    task = build_task(TaskConfig(device="cuda", lr=0.05), DataConfig(), 0, 1, 0, dataset=digits)
    assert task.x.is_cuda and task.x_test.is_cuda and next(task.model.parameters()).is_cuda
    for _ in range(300):
        task.train_step()
    assert task.evaluate()["accuracy"] > 0.9


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "resnet"}, "unknown model"),
    ({"optimizer": "rmsprop"}, "unknown optimizer"),
    ({"lr": 0}, "lr must be > 0"),
    ({"momentum": 1.0}, "momentum"),
    ({"batch_size": 0}, "batch_size"),
    ({"eval_max_samples": 0}, "eval_max_samples"),
    ({"device": "tpu"}, "device must be"),
])
def test_task_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TaskConfig(**kwargs)


def test_model_data_mismatch_is_explained(digits) -> None:
    with pytest.raises(ValueError, match="use 'mlp' for flat data"):
        build_task(TaskConfig(model="cnn", device="cpu"), DataConfig(), 0, 1, 0, dataset=digits)
    with pytest.raises(ValueError, match="use model = 'lstsq'"):
        build_task(TaskConfig(model="logreg", device="cpu"),
                   DataConfig(dataset="synthetic_linear"), 0, 1, 0)
    with pytest.raises(ValueError, match="peer_index 4"):
        build_task(TaskConfig(device="cpu"), DataConfig(), 4, 4, 0, dataset=digits)


def test_feature_split_gradients_equal_the_full_gradient(digits) -> None:
    from gossipml.data import feature_blocks
    from gossipml.tasks.linear import block_gradient, margin_loss_and_grad, partial_margin

    x, y = torch.as_tensor(digits.x_train[:200]), torch.as_tensor(digits.y_train[:200])
    w = torch.randn(10, 64, generator=torch.Generator().manual_seed(0)) * 0.1
    b = torch.zeros(10)
    for model in ("logreg", "svm", "lstsq"):
        blocks = feature_blocks(64, 3)
        margin = sum(partial_margin(x[:, s], w[:, s]) for s in blocks) + b
        loss, g = margin_loss_and_grad(model, margin, y, 10)
        split = torch.cat([block_gradient(g, x[:, s]) for s in blocks], dim=1)
        wf = w.clone().requires_grad_(True)
        from gossipml.tasks import loss_function
        full = loss_function(model, 10)(x @ wf.T + b, y)
        full.backward()
        assert abs(loss - float(full.detach())) < 1e-5
        assert torch.allclose(split, wf.grad, atol=1e-6)


def test_reference_loss_is_below_what_sgd_reaches(digits) -> None:
    from gossipml.tasks.linear import reference_loss

    ref = reference_loss("lstsq", digits)
    task = build_task(TaskConfig(model="lstsq", lr=0.05, device="cpu"), DataConfig(), 0, 1, 0,
                      dataset=digits)
    for _ in range(300):
        task.train_step()
    assert 0 < ref <= task.train_loss()
    assert reference_loss("logreg", digits, l2=1e-2) > reference_loss("logreg", digits) >= 0
