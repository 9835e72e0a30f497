"""``[data]`` and ``[task]`` keys: the dataset and partition every peer computes, and the task
``build_task`` gives a peer (model, optimizer, schedule, evaluation): two values, two behaviours."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from gossipml.data import DataConfig, dataset_for, label_histograms, partition_indices
from gossipml.data.idx import FMNIST_FILES, write_idx
from gossipml.tasks import TaskConfig, build_task

N_PEERS = 4


def _parts(**data: Any) -> list[list[int]]:
    cfg = DataConfig(**data)
    labels = dataset_for(cfg).y_train
    parts = partition_indices(labels, N_PEERS, cfg)
    return [sorted(p.tolist()) for p in parts]


def _histograms(digits, **data: Any) -> list[list[int]]:
    parts = partition_indices(digits.y_train, N_PEERS, DataConfig(**data))
    return label_histograms(digits.y_train, parts, 10)


def test_dataset_chooses_the_data():
    assert dataset_for(DataConfig(dataset="digits")).input_shape == (64,)
    assert dataset_for(DataConfig(dataset="synthetic_linear")).input_shape == (20,)


def test_path_is_the_folder_read(tmp_path):
    firsts = []
    for fill in (1, 2):
        folder = tmp_path / str(fill)
        folder.mkdir()
        for key, name in FMNIST_FILES.items():
            shape = (3, 28, 28) if key.startswith("x") else (3,)
            write_idx(folder / name, np.full(shape, fill, dtype=np.uint8))
        data = dataset_for(DataConfig(dataset="fmnist", path=str(folder)))
        firsts.append(float(data.x_train[0, 0, 0, 0]))
    assert firsts[0] != firsts[1]


def test_partition_chooses_the_split(digits):
    assert _histograms(digits, partition="iid") != _histograms(digits, partition="shards")


def test_alpha_sets_the_label_skew(digits):
    assert _histograms(digits, partition="dirichlet", alpha=0.1) != \
        _histograms(digits, partition="dirichlet", alpha=100.0)


def test_shards_per_peer_is_the_classes_per_peer(digits):
    def classes(k: int) -> list[int]:
        return [sum(c > 0 for c in h) for h in _histograms(digits, partition="shards",
                                                           shards_per_peer=k)]
    assert classes(1) == [1] * N_PEERS and classes(3) == [3] * N_PEERS


def test_sample_fraction_is_each_peers_sample_size():
    sizes = {f: [len(p) for p in _parts(partition="sample", sample_fraction=f)] for f in (0.1, 0.5)}
    assert sizes[0.1] != sizes[0.5]


def test_min_samples_is_the_smallest_part():
    def smallest(m: int) -> int:
        return min(len(p) for p in _parts(partition="quantity", alpha=0.05, min_samples=m))
    assert smallest(0) < 100 <= smallest(100)


def test_seed_draws_another_split():
    assert _parts(seed=1) != _parts(seed=2)


def test_stream_trains_on_fresh_batches():
    tasks = {s: build_task(TaskConfig(model="lstsq"), DataConfig(dataset="synthetic_linear",
                                                                 stream=s), 0, 2, 0)
             for s in (False, True)}
    assert tasks[False].stream is None and tasks[False].num_samples > 0
    assert tasks[True].stream is not None and tasks[True].x is None


@pytest.mark.parametrize("dataset, key, values, of", [
    ("synthetic_logistic", "synthetic_features", (5, 9), lambda d: d.input_shape),
    ("synthetic_gmm", "synthetic_classes", (2, 4), lambda d: d.num_classes),
    ("synthetic_linear", "synthetic_noise", (0.0, 1.0), lambda d: d.y_train[:20].tolist()),
    ("synthetic_logistic", "synthetic_train_size", (50, 80), lambda d: len(d.x_train)),
    ("synthetic_logistic", "synthetic_test_size", (50, 80), lambda d: len(d.x_test)),
])
def test_synthetic_keys_shape_the_distribution(dataset, key, values, of):
    got = [of(dataset_for(DataConfig(dataset=dataset, **{key: v}))) for v in values]
    assert got[0] != got[1], f"[data] {key} = {values} give the same dataset"


@pytest.mark.parametrize("dataset, key, value", [
    ("synthetic_logistic", "synthetic_classes", 5),
    ("synthetic_linear", "synthetic_classes", 5),
    ("synthetic_logistic", "synthetic_noise", 1.0),
    ("synthetic_gmm", "synthetic_noise", 1.0),
])
def test_a_synthetic_key_the_distribution_cannot_use_is_refused(dataset, key, value):
    with pytest.raises(ValueError, match=key):
        DataConfig(dataset=dataset, **{key: value})


def _task(digits, i: int = 0, **task: Any):
    return build_task(TaskConfig(device="cpu", **task), DataConfig(), i, N_PEERS, 0,
                      dataset=digits)


def _trained(digits, steps: int = 3, **task: Any) -> torch.Tensor:
    t = _task(digits, **task)
    t.set_horizon(10)
    for _ in range(steps):
        t.train_step()
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def _differ(digits, a: dict[str, Any], b: dict[str, Any], steps: int = 3) -> None:
    assert not torch.allclose(_trained(digits, steps, **a), _trained(digits, steps, **b)), \
        f"[task] {a} and {b} train the same: a key is ignored"


def _lrs(digits, steps: int = 10, **task: Any) -> list[float]:
    t = _task(digits, model="logreg", **task)
    t.set_horizon(steps)
    out = []
    for _ in range(steps):
        t.train_step()
        out.append(round(t.optimizer.param_groups[0]["lr"], 6))
    return out


def test_model_chooses_the_architecture(digits):
    assert _trained(digits, model="logreg").numel() != _trained(digits, model="mlp").numel()


def test_optimizer_chooses_the_update(digits):
    _differ(digits, {"optimizer": "sgd"}, {"optimizer": "adam"})


def test_lr_sets_the_step_size(digits):
    _differ(digits, {"lr": 0.1}, {"lr": 0.2})


def test_momentum_carries_past_steps(digits):
    _differ(digits, {"momentum": 0.0}, {"momentum": 0.9})


def test_weight_decay_shrinks_the_weights(digits):
    _differ(digits, {"weight_decay": 0.0}, {"weight_decay": 0.1})


def test_batch_size_is_the_items_per_step(digits):
    _differ(digits, {"batch_size": 4}, {"batch_size": 64})


def test_hidden_is_the_mlp_width(digits):
    assert _trained(digits, 1, hidden=8).numel() != _trained(digits, 1, hidden=16).numel()


def test_same_init_starts_every_peer_from_the_same_weights(digits):
    def first(same: bool, i: int) -> torch.Tensor:
        return next(_task(digits, i, same_init=same).model.parameters()).detach()
    assert torch.equal(first(True, 0), first(True, 1))
    assert not torch.equal(first(False, 0), first(False, 1))


def test_lbfgs_max_iter_is_the_inner_iterations(digits):
    _differ(digits, {"model": "logreg", "optimizer": "lbfgs", "lr": 1.0, "lbfgs_max_iter": 1},
            {"model": "logreg", "optimizer": "lbfgs", "lr": 1.0, "lbfgs_max_iter": 10}, steps=1)


def test_lbfgs_history_is_the_curvature_memory(digits):
    _differ(digits, {"model": "logreg", "optimizer": "lbfgs", "lr": 1.0, "lbfgs_history": 1},
            {"model": "logreg", "optimizer": "lbfgs", "lr": 1.0, "lbfgs_history": 10}, steps=2)


def test_device_places_the_model(digits):
    assert next(_task(digits).model.parameters()).device.type == "cpu"
    cfg = TaskConfig(device="cuda")
    if torch.cuda.is_available():
        task = build_task(cfg, DataConfig(), 0, N_PEERS, 0, dataset=digits)
        assert next(task.model.parameters()).device.type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="no CUDA"):
            build_task(cfg, DataConfig(), 0, N_PEERS, 0, dataset=digits)


def test_eval_batch_size_is_the_evaluation_batch(digits):
    calls = {}
    for size in (50, 1000):
        task = _task(digits, eval_batch_size=size)
        seen = []
        task.model.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
        task.evaluate()
        calls[size] = seen
    assert max(calls[50]) == 50 and len(calls[1000]) < len(calls[50])


def test_eval_max_samples_bounds_the_test_set(digits):
    assert len(_task(digits, eval_max_samples=30).y_test) == 30
    assert len(_task(digits).y_test) > 30


def test_lr_schedule_changes_the_rate_over_the_run(digits):
    assert len(set(_lrs(digits, lr_schedule="constant"))) == 1
    assert len(set(_lrs(digits, lr_schedule="cosine"))) > 1


def test_lr_min_factor_is_where_the_decay_ends(digits):
    assert _lrs(digits, lr_schedule="linear", lr_min_factor=0.0) != \
        _lrs(digits, lr_schedule="linear", lr_min_factor=0.5)


def test_lr_milestones_are_where_the_steps_drop(digits):
    assert _lrs(digits, lr_schedule="step", lr_milestones=(0.2,)) != \
        _lrs(digits, lr_schedule="step", lr_milestones=(0.8,))


def test_lr_gamma_is_the_drop_at_a_milestone(digits):
    assert _lrs(digits, lr_schedule="step", lr_gamma=0.5) != \
        _lrs(digits, lr_schedule="step", lr_gamma=0.1)


def test_warmup_steps_ramp_the_rate_up(digits):
    assert _lrs(digits)[0] == 0.1 and _lrs(digits, warmup_steps=4)[0] == 0.025


def test_lr_decay_steps_is_the_span_of_the_decay(digits):
    assert _lrs(digits, lr_schedule="linear", lr_decay_steps=4) != \
        _lrs(digits, lr_schedule="linear", lr_decay_steps=0)
