"""The ``[data]`` table: which dataset, how it is split among peers, and the synthetic streams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gossipml.data.plugin import is_reference

__all__ = ["DataConfig", "DATASETS", "SYNTHETIC_DATASETS", "PARTITIONS", "DEFAULT_FMNIST_PATH"]

DEFAULT_FMNIST_PATH = "/usr/share/datasets/fashion-mnist"
SYNTHETIC_DATASETS: tuple[str, ...] = ("synthetic_linear", "synthetic_logistic", "synthetic_gmm")
DATASETS: tuple[str, ...] = ("digits", "fmnist", *SYNTHETIC_DATASETS)
PARTITIONS: tuple[str, ...] = ("iid", "sample", "dirichlet", "shards", "quantity")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataConfig:
    """Dataset and partition of one experiment (every peer computes the same split from ``seed``).

    ``partition``: ``iid`` shuffle-and-split without replacement; ``sample`` each peer draws its
    own i.i.d. sample with replacement of ``sample_fraction * N`` items (default ``N / n_peers``);
    ``dirichlet`` label skew Dirichlet(``alpha``); ``shards`` exactly ``shards_per_peer`` classes
    per peer; ``quantity`` sizes from Dirichlet(``alpha``), labels i.i.d. ``min_samples`` is the
    smallest part ``dirichlet`` and ``quantity`` may give a peer.
    ``dataset = "module:callable"`` loads your own data: the callable, given ``dataset_args`` as
    keyword arguments, returns ``(train, test)`` (see :mod:`gossipml.data.plugin`).
    ``stream = true`` (synthetic datasets only) trains on fresh batches drawn for ever instead of a
    fixed training set; the ``synthetic_*`` fields shape those distributions.
    """

    dataset: str = "digits"
    path: str | None = None
    dataset_args: dict[str, Any] = field(default_factory=dict)
    partition: str = "iid"
    alpha: float = 0.5
    shards_per_peer: int = 2
    sample_fraction: float | None = None
    min_samples: int = 10
    seed: int = 0
    stream: bool = False
    synthetic_features: int = 20
    synthetic_classes: int = 3
    synthetic_noise: float = 0.1
    synthetic_train_size: int = 4000
    synthetic_test_size: int = 1000

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS and not is_reference(self.dataset):
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {list(DATASETS)} "
                             f"or your own loader as 'module:callable'")
        if not isinstance(self.dataset_args, dict):
            raise ValueError(f"dataset_args must be a table of keyword arguments, got "
                             f"{self.dataset_args!r}")
        if self.dataset_args and not is_reference(self.dataset):
            raise ValueError(f"dataset_args are for a 'module:callable' dataset; dataset "
                             f"{self.dataset!r} takes none (remove [data.dataset_args])")
        if self.partition not in PARTITIONS:
            raise ValueError(f"unknown partition {self.partition!r}; choose one of "
                             f"{list(PARTITIONS)}")
        if self.path is not None and not isinstance(self.path, str):
            raise ValueError(f"path must be a string (a folder), got {self.path!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) \
                or not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 (0.1 very skewed, 100 near uniform), "
                             f"got {self.alpha!r}")
        if not _is_int(self.shards_per_peer) or self.shards_per_peer < 1:
            raise ValueError(f"shards_per_peer must be an integer >= 1, got {self.shards_per_peer!r}")
        if self.sample_fraction is not None and not 0 < self.sample_fraction <= 100:
            raise ValueError(f"sample_fraction must be in (0, 100] (each peer draws "
                             f"fraction * N samples) or unset, got {self.sample_fraction!r}")
        if not _is_int(self.min_samples) or self.min_samples < 0:
            raise ValueError(f"min_samples must be an integer >= 0, got {self.min_samples!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.stream and self.dataset not in SYNTHETIC_DATASETS:
            raise ValueError(f"stream = true needs a synthetic dataset "
                             f"{list(SYNTHETIC_DATASETS)}, got dataset {self.dataset!r}")
        self._check_synthetic()

    def _check_synthetic(self) -> None:
        for name in ("synthetic_features", "synthetic_train_size", "synthetic_test_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not _is_int(self.synthetic_classes) or self.synthetic_classes < 2:
            raise ValueError(f"synthetic_classes must be an integer >= 2, "
                             f"got {self.synthetic_classes!r}")
        if not isinstance(self.synthetic_noise, (int, float)) or self.synthetic_noise < 0:
            raise ValueError(f"synthetic_noise must be >= 0, got {self.synthetic_noise!r}")
        # each applies to one distribution only (data/streams.py): refuse rather than ignore
        if self.synthetic_classes != 3 and self.dataset != "synthetic_gmm":
            raise ValueError(f"synthetic_classes shapes only dataset = 'synthetic_gmm' "
                             f"(synthetic_logistic has 2 classes), got dataset "
                             f"{self.dataset!r}; leave synthetic_classes out")
        if self.synthetic_noise != 0.1 and self.dataset != "synthetic_linear":
            raise ValueError(f"synthetic_noise shapes only dataset = 'synthetic_linear' (the "
                             f"other distributions fix their own), got dataset "
                             f"{self.dataset!r}; leave synthetic_noise out")

    @property
    def is_synthetic(self) -> bool:
        """Whether the dataset is one of the synthetic distributions."""
        return self.dataset in SYNTHETIC_DATASETS
