"""Datasets: scikit-learn digits, Fashion-MNIST from IDX files, and fixed draws of the synthetic
distributions. Every loader returns the same frozen :class:`Dataset`; nothing is cached on disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from gossipml.data.config import DEFAULT_FMNIST_PATH, SYNTHETIC_DATASETS, DataConfig
from gossipml.data.idx import load_fmnist_arrays
from gossipml.data.plugin import (PluginError, dataset_from_plugin, is_reference,
                                  resolve_reference)
from gossipml.data.streams import Stream, StreamWorld, make_world

__all__ = ["Dataset", "load_dataset", "dataset_for", "synthetic_name", "DIGITS_TEST_FRACTION",
           "load_plugin_dataset"]

DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and common test split: ``x`` float32 of shape ``(N, *input_shape)``, ``y`` int64
    labels in ``0..num_classes-1`` (float32 targets and ``num_classes == 0`` for regression)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    world: StreamWorld | None = None  # the true distribution of a synthetic dataset

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(f"dataset {self.name}: {split} x {x.shape} / y {y.shape} do not "
                                 f"match input_shape {self.input_shape}")

    @property
    def is_regression(self) -> bool:
        """Whether targets are real numbers (no classes)."""
        return self.num_classes == 0


def _load_digits(path: str | None) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION,
                                              random_state=0, stratify=y)
    return Dataset(np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te,
                   10, (64,), "digits")


def _load_fmnist(path: str | None) -> Dataset:
    arrays = load_fmnist_arrays(path or DEFAULT_FMNIST_PATH)

    def images(a: np.ndarray) -> np.ndarray:
        out = np.empty((a.shape[0], 1, 28, 28), dtype=np.float32)
        np.multiply(a[:, None], np.float32(1 / 255), out=out)
        return out

    return Dataset(images(arrays["x_train"]), arrays["y_train"].astype(np.int64),
                   images(arrays["x_test"]), arrays["y_test"].astype(np.int64),
                   10, (1, 28, 28), "fmnist")


def synthetic_name(cfg: DataConfig) -> str:
    """The name (with every parameter) of the synthetic dataset ``cfg`` describes."""
    return (f"{cfg.dataset}[d={cfg.synthetic_features},k={cfg.synthetic_classes},"
            f"noise={cfg.synthetic_noise},n={cfg.synthetic_train_size}/"
            f"{cfg.synthetic_test_size},seed={cfg.seed}]")


def _load_synthetic(cfg: DataConfig) -> Dataset:
    import torch

    kind = cfg.dataset.removeprefix("synthetic_")
    world = make_world(kind, cfg.synthetic_features, seed=cfg.seed,
                       n_classes=cfg.synthetic_classes, noise=cfg.synthetic_noise)
    stream = Stream(world, seed=np.random.SeedSequence([cfg.seed, 0xDA7A]).generate_state(1)[0])
    with torch.no_grad():
        x_tr, y_tr = stream.next_batch(cfg.synthetic_train_size)
        x_te, y_te = stream.next_batch(cfg.synthetic_test_size)
    return Dataset(x_tr.numpy(), y_tr.numpy(), x_te.numpy(), y_te.numpy(), world.num_classes,
                   (cfg.synthetic_features,), synthetic_name(cfg), world)


_LOADERS: dict[str, Callable[[str | None], Dataset]] = {
    "digits": _load_digits,
    "fmnist": _load_fmnist,
}


def load_dataset(name: str, path: str | None = None) -> Dataset:
    """Load dataset ``name`` (``digits``, ``fmnist`` or ``synthetic_*`` with default parameters);
    ``path`` is the folder of the files where the dataset has files."""
    if name in SYNTHETIC_DATASETS:
        return _load_synthetic(DataConfig(dataset=name))
    loader = _LOADERS.get(name)
    if loader is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of "
                         f"{sorted(_LOADERS) + list(SYNTHETIC_DATASETS)}")
    return loader(path)


def load_plugin_dataset(cfg: DataConfig, import_path: Sequence[str] = ()) -> Dataset:
    """Call ``cfg.dataset`` (``"module:callable"``) with ``cfg.dataset_args``; its ``(train,
    test)`` becomes a :class:`Dataset` named by the reference."""
    loader = resolve_reference(cfg.dataset, "[data] dataset", import_path)
    try:
        result = loader(**cfg.dataset_args)
    except TypeError as exc:
        raise PluginError(f"[data] dataset = {cfg.dataset!r} called with [data.dataset_args] "
                          f"{sorted(cfg.dataset_args)}: {exc}") from exc
    x_tr, y_tr, x_te, y_te, classes = dataset_from_plugin(result, cfg.dataset)
    return Dataset(x_tr, y_tr, x_te, y_te, int(classes), tuple(x_tr.shape[1:]), cfg.dataset)


def dataset_for(cfg: DataConfig, dataset: Dataset | None = None,
                import_path: Sequence[str] = ()) -> Dataset:
    """The dataset ``cfg`` names: ``dataset`` when it is that one, else freshly loaded
    (``import_path``: folders searched first for a ``module:callable`` dataset)."""
    want = synthetic_name(cfg) if cfg.is_synthetic else cfg.dataset
    if dataset is not None:
        if dataset.name == want:
            return dataset
        if not cfg.is_synthetic:
            raise ValueError(f"the dataset passed in is {dataset.name!r} but [data] dataset is "
                             f"{cfg.dataset!r}; pass the matching dataset or none")
    if is_reference(cfg.dataset):
        return load_plugin_dataset(cfg, import_path)
    return _load_synthetic(cfg) if cfg.is_synthetic else load_dataset(cfg.dataset, cfg.path)
