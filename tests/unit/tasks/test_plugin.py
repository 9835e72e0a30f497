"""A task's own model, loss and metric (gossipml.tasks.plugin) inside a real Task."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from gossipml.data import DataConfig, PluginError
from gossipml.tasks import TaskConfig, build_task

MODULE = '''
import numpy as np
import torch
from torch import nn

CALLS = []

def net(input_shape, num_classes, width=8):
    CALLS.append((tuple(input_shape), num_classes, width))
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width), nn.Tanh(),
                         nn.Linear(width, num_classes))

def not_a_module():
    return 3

def l1(outputs, targets):
    return (outputs - nn.functional.one_hot(targets, outputs.shape[1])).abs().mean()

def always_half(outputs, targets):
    return 0.5

def load():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)).astype("float32")
    y = (x[:, 0] > 0).astype(int)
    return (x[:100], y[:100]), (x[100:], y[100:])
'''


@pytest.fixture
def folder(tmp_path: Path) -> str:
    (tmp_path / "gml_task_mod.py").write_text(MODULE)
    return str(tmp_path)


def _task(folder: str, **task: object):
    cfg = TaskConfig(import_path=(folder,), lr=0.1, **task)
    return build_task(cfg, DataConfig(dataset="gml_task_mod:load"), 0, 2, 0)


def test_the_model_gets_its_args_and_the_dataset_shape(folder: str):
    task = _task(folder, model="gml_task_mod:net", model_args={"width": 5})
    assert sys.modules["gml_task_mod"].CALLS[-1] == ((6,), 2, 5)
    before = task.evaluate()["loss"]
    for _ in range(30):
        task.train_step()
    assert task.evaluate()["loss"] < before


def test_loss_and_metric_replace_the_defaults(folder: str):
    task = _task(folder, model="gml_task_mod:net", loss="gml_task_mod:l1",
                 metric="gml_task_mod:always_half")
    assert task.loss_fn.__name__ == "l1"
    assert task.evaluate()["accuracy"] == 0.5
    assert np.isfinite(task.train_step())


def test_a_factory_that_returns_no_module_is_refused(folder: str):
    with pytest.raises(PluginError, match="must return a torch.nn.Module"):
        _task(folder, model="gml_task_mod:not_a_module")


def test_model_args_for_a_built_in_model_are_refused():
    with pytest.raises(ValueError, match="model_args are for a 'module:callable' model"):
        TaskConfig(model="mlp", model_args={"width": 3})
    with pytest.raises(ValueError, match="loss must be 'module:callable'"):
        TaskConfig(loss="mse")
