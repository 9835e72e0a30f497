"""IDX reader and dataset loaders: the real Fashion-MNIST files, tiny files written here, corrupt
files, missing files, digits, and the data config's checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from gossipml.data import (
    DEFAULT_FMNIST_PATH,
    DataConfig,
    IdxError,
    dataset_for,
    load_dataset,
    parse_idx,
    read_idx,
    write_idx,
)
from gossipml.data.idx import FMNIST_FILES

HAS_FMNIST = all((Path(DEFAULT_FMNIST_PATH) / f).is_file() for f in FMNIST_FILES.values())
needs_fmnist = pytest.mark.skipif(
    not HAS_FMNIST, reason=f"Debian package dataset-fashion-mnist is not installed "
                           f"(no IDX files in {DEFAULT_FMNIST_PATH})")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype: type, suffix: str) -> None:
    arr = (np.arange(2 * 3 * 5) % 100).astype(dtype).reshape(2, 3, 5)
    back = read_idx(write_idx(tmp_path / f"a.idx{suffix}", arr))
    assert back.shape == arr.shape and np.array_equal(back.astype(dtype), arr)


def test_idx_header_is_the_published_format() -> None:
    data = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9])
    assert parse_idx(data).tolist() == [7, 8, 9]


@pytest.mark.parametrize("data, match", [
    (b"\x00\x00", "too short"),
    (bytes([1, 0, 8, 1]) + (3).to_bytes(4, "big") + b"abc", "bad IDX magic"),
    (bytes([0, 0, 0x42, 1]) + (3).to_bytes(4, "big") + b"abc", "unknown IDX type"),
    (bytes([0, 0, 8, 2]) + (3).to_bytes(4, "big"), "declares 2 dimensions"),
    (bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + b"abc", "truncated or corrupt"),
    (bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + b"abc", "truncated or corrupt"),
])
def test_corrupt_idx_is_refused_with_reason(data: bytes, match: str) -> None:
    with pytest.raises(IdxError, match=match):
        parse_idx(data)


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    good = gzip.compress(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(100))
    path = tmp_path / "x.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IdxError, match="x.gz"):
        read_idx(path)


def _write_tiny_fmnist(folder: Path, n_train: int = 6, n_test: int = 4) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        write_idx(folder / FMNIST_FILES[f"x_{split}"], rng.integers(0, 256, (n, 28, 28),
                                                                    dtype=np.uint8))
        write_idx(folder / FMNIST_FILES[f"y_{split}"], rng.integers(0, 10, n, dtype=np.uint8))


def test_fmnist_from_a_tiny_folder(tmp_path: Path) -> None:
    _write_tiny_fmnist(tmp_path)
    ds = load_dataset("fmnist", str(tmp_path))
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_fmnist_mismatched_labels_are_refused(tmp_path: Path) -> None:
    _write_tiny_fmnist(tmp_path)
    write_idx(tmp_path / FMNIST_FILES["y_test"], np.zeros(3, np.uint8))
    with pytest.raises(IdxError, match="test labels"):
        load_dataset("fmnist", str(tmp_path))


def test_missing_fmnist_names_the_package_and_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        load_dataset("fmnist", str(tmp_path / "nowhere"))
    assert "nowhere" in str(info.value)


@needs_fmnist
def test_real_fmnist_files() -> None:
    ds = load_dataset("fmnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert float(ds.x_train.max()) == 1.0 and float(ds.x_train.min()) == 0.0


def test_digits_split_is_stratified_scaled_and_fixed() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert a.x_train.dtype == np.float32 and a.y_test.dtype == np.int64
    assert a.x_train.max() == 1.0 and a.x_train.min() == 0.0
    assert np.array_equal(a.y_test, b.y_test)
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~20 % of each class


def test_dataset_for_reuses_or_refuses() -> None:
    digits = load_dataset("digits")
    assert dataset_for(DataConfig(), digits) is digits
    with pytest.raises(ValueError, match="pass the matching dataset"):
        dataset_for(DataConfig(dataset="fmnist"), digits)
    default_synth = load_dataset("synthetic_linear")
    cfg = DataConfig(dataset="synthetic_linear", synthetic_features=5)
    assert dataset_for(cfg, default_synth).input_shape == (5,)


@pytest.mark.parametrize("kwargs, match", [
    ({"dataset": "mnist"}, "unknown dataset"),
    ({"partition": "random"}, "unknown partition"),
    ({"alpha": 0}, "alpha must be > 0"),
    ({"shards_per_peer": 0}, "shards_per_peer"),
    ({"sample_fraction": 0.0}, "sample_fraction"),
    ({"min_samples": -1}, "min_samples"),
    ({"seed": -1}, "seed"),
    ({"stream": True}, "synthetic dataset"),
    ({"dataset": "synthetic_gmm", "synthetic_classes": 1}, "synthetic_classes"),
])
def test_data_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)
