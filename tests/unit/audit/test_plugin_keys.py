"""Key audit (issue #16): the plugin keys of ``[task]`` and ``[data]`` reach what is loaded."""

from __future__ import annotations

from pathlib import Path

from gossipml.config import ExperimentConfig
from gossipml.data import dataset_for

LOADER = """
import numpy as np

def load(n=10):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + {offset}
    y = np.arange(n) % 2
    return (x, y), (x[:4], y[:4])
"""


def _folder(root: Path, offset: int) -> str:
    root.mkdir()
    (root / "gml_audit_mod.py").write_text(LOADER.format(offset=offset))
    return str(root)


def _loaded(import_path: str, **dataset_args):
    cfg = ExperimentConfig.from_dict({
        "task": {"import_path": [import_path]},
        "data": {"dataset": "gml_audit_mod:load", "dataset_args": dataset_args}})
    return dataset_for(cfg.data, import_path=cfg.task.import_path)


def test_dataset_args_reach_the_dataset_callable(tmp_path):
    folder = _folder(tmp_path / "a", 0)
    assert len(_loaded(folder, n=12).y_train) == 12
    assert len(_loaded(folder, n=30).y_train) == 30


def test_import_path_chooses_the_folder_the_module_comes_from(tmp_path):
    a, b = _folder(tmp_path / "a", 0), _folder(tmp_path / "b", 1000)
    assert float(_loaded(a).x_train.min()) == 0.0
    assert float(_loaded(b).x_train.min()) == 1000.0
