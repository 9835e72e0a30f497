"""Plugin datasets and ``module:callable`` references (gossipml.data.plugin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gossipml.data import DataConfig, PluginError, dataset_for, partition_indices
from gossipml.data.plugin import dataset_from_plugin, resolve_reference


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((2, 3), float(i)), i % 4


def test_a_torch_dataset_becomes_arrays_with_classes_read_from_its_labels():
    x_tr, y_tr, x_te, y_te, classes = dataset_from_plugin((_Pairs(20), _Pairs(8)), "t")
    assert x_tr.shape == (20, 2, 3) and x_tr.dtype == np.float32 and x_tr[5, 1, 2] == 5.0
    assert y_tr.dtype == np.int64 and y_tr.tolist() == [i % 4 for i in range(20)]
    assert classes == 4 and x_te.shape == (8, 2, 3)


def test_array_pairs_with_real_targets_are_a_regression():
    x, y = np.ones((10, 3)), np.linspace(0, 1, 10)
    *_, classes = dataset_from_plugin(((x, y), (torch.ones(4, 3), torch.zeros(4))), "r")
    assert classes == 0


@pytest.mark.parametrize("bad, words", [
    ([1, 2, 3], "must return (train, test)"),
    ((np.ones((3, 2)), np.ones((3, 2))), "must yield (x, y) items"),
    ((3, 4), "a pair of arrays (x, y), got int"),
    (((np.ones((3, 2)), np.zeros(2, dtype=int)), (np.ones((1, 2)), np.zeros(1, dtype=int))),
     "3 inputs and 2 labels"),
    (((np.ones((3, 2)), -np.ones(3, dtype=int)), (np.ones((1, 2)), np.zeros(1, dtype=int))),
     "integer >= 0"),
])
def test_bad_returns_say_what_the_contract_is(bad, words):
    with pytest.raises(PluginError, match="data"):
        try:
            dataset_from_plugin(bad, "x")
        except PluginError as exc:
            assert words in str(exc), str(exc)
            raise


def _module(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gml_plugin_mod.py").write_text(body)
    return folder


def test_same_named_modules_in_two_folders_do_not_mix(tmp_path: Path):
    a = _module(tmp_path / "a", "def f():\n    return 'a'\n")
    b = _module(tmp_path / "b", "def f():\n    return 'b'\n")
    assert resolve_reference("gml_plugin_mod:f", "k", [str(a)])() == "a"
    assert resolve_reference("gml_plugin_mod:f", "k", [str(b)])() == "b"


@pytest.mark.parametrize("ref, words", [
    ("gml_nowhere_xyz:f", "module 'gml_nowhere_xyz' was not found"),
    ("gml_plugin_mod:g", "has no attribute 'g'"),
    ("gml_plugin_mod:VALUE", "not a callable"),
    ("gml_plugin_mod:", "of the form 'module:callable'"),
])
def test_bad_references_name_the_key_and_what_is_missing(tmp_path: Path, ref, words):
    folder = _module(tmp_path / "c", "VALUE = 3\ndef f():\n    return 1\n")
    with pytest.raises(PluginError) as info:
        resolve_reference(ref, "[data] dataset", [str(folder)])
    assert "[data] dataset" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("partition", ["iid", "sample", "dirichlet", "shards", "quantity"])
def test_every_partition_works_on_a_plugin_dataset(tmp_path: Path, partition: str):
    folder = _module(tmp_path / "d", (
        "import numpy as np\n"
        "def load(n=200, classes=5):\n"
        "    rng = np.random.default_rng(0)\n"
        "    y = np.arange(n) % classes\n"
        "    return (rng.normal(size=(n, 4)), y), (rng.normal(size=(20, 4)), y[:20])\n"))
    cfg = DataConfig(dataset="gml_plugin_mod:load", dataset_args={"n": 300}, partition=partition,
                     min_samples=5)
    data = dataset_for(cfg, import_path=[str(folder)])
    assert data.num_classes == 5 and data.x_train.shape == (300, 4) and data.name == cfg.dataset
    parts = partition_indices(data.y_train, 4, cfg)
    assert len(parts) == 4 and all(p.size > 0 for p in parts)
    if partition == "shards":
        assert all(np.unique(data.y_train[p]).size == cfg.shards_per_peer for p in parts)


def test_dataset_args_are_refused_for_a_built_in_dataset():
    with pytest.raises(ValueError, match="dataset_args are for a 'module:callable' dataset"):
        DataConfig(dataset="digits", dataset_args={"n": 3})
    with pytest.raises(ValueError, match="or your own loader as 'module:callable'"):
        DataConfig(dataset="digitz")
