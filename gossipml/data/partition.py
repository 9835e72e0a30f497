"""Sample partitions (which training items each peer owns) and feature blocks; pure and seeded.

Every peer calls :func:`partition_indices` with the same labels and config and keeps part
``peer_index``, so no one has to send anyone the split. Schemes:

- ``iid``: shuffle and split without replacement (parts differ in size by at most one).
- ``sample``: each peer draws its own i.i.d. sample with replacement (bootstrap); the expected
  share of repeated draws in a sample of ``n`` from ``N`` is ``1 - N (1 - (1 - 1/N)^n) / n``.
- ``dirichlet``: label skew; each class is split among peers by proportions ``p ~ Dir(alpha 1)``
  (Hsu et al., "Measuring the Effects of Non-Identical Data Distribution", 2019).
- ``shards``: exactly ``k`` distinct classes per peer (the pathological non-IID split of McMahan
  et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data", 2017);
  class slots go round-robin over a shuffled class order, and each class is split evenly among
  the peers holding it.
- ``quantity``: quantity skew; part sizes ``min_samples + Dir(alpha 1) * rest``, labels i.i.d.
  (Li et al., "Federated Learning on Non-IID Data Silos", 2022).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from gossipml.data.config import DataConfig

__all__ = ["partition_indices", "label_histograms", "feature_blocks", "PARTITIONERS"]

_DIRICHLET_TRIES = 100

Partitioner = Callable[[np.ndarray, int, DataConfig, np.random.Generator], list[np.ndarray]]


def _iid(labels: np.ndarray, n_peers: int, cfg: DataConfig,
         rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(labels.shape[0]), n_peers))


def _sample(labels: np.ndarray, n_peers: int, cfg: DataConfig,
            rng: np.random.Generator) -> list[np.ndarray]:
    n = labels.shape[0]
    size = round(cfg.sample_fraction * n) if cfg.sample_fraction else n // n_peers
    return [rng.integers(0, n, max(size, 1)) for _ in range(n_peers)]


def _dirichlet(labels: np.ndarray, n_peers: int, cfg: DataConfig,
               rng: np.random.Generator) -> list[np.ndarray]:
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    parts: list[list[np.ndarray]] = []
    for _ in range(_DIRICHLET_TRIES):  # redraw until every peer has min_samples (usual practice)
        parts = [[] for _ in range(n_peers)]
        for idx in by_class:
            p = rng.dirichlet(np.full(n_peers, cfg.alpha))
            cuts = (np.cumsum(p)[:-1] * idx.shape[0]).astype(np.int64)
            for peer, piece in enumerate(np.split(idx, cuts)):
                parts[peer].append(piece)
        if min(sum(x.shape[0] for x in part) for part in parts) >= cfg.min_samples:
            break
    out = [np.concatenate(part) for part in parts]
    return _top_up(out, cfg.min_samples, rng)


def _top_up(parts: list[np.ndarray], min_samples: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    """Move random items from the largest parts to those still below ``min_samples``."""
    for peer in range(len(parts)):
        while parts[peer].shape[0] < min_samples:
            donor = int(np.argmax([p.shape[0] for p in parts]))
            take = min(min_samples - parts[peer].shape[0], parts[donor].shape[0] - min_samples)
            pick = rng.permutation(parts[donor].shape[0])
            parts[peer] = np.concatenate([parts[peer], parts[donor][pick[:take]]])
            parts[donor] = parts[donor][np.sort(pick[take:])]
    return parts


def _shards(labels: np.ndarray, n_peers: int, cfg: DataConfig,
            rng: np.random.Generator) -> list[np.ndarray]:
    classes = rng.permutation(np.unique(labels))
    k = cfg.shards_per_peer
    if k > classes.shape[0]:
        raise ValueError(f"shards_per_peer = {k} but the labels have only {classes.shape[0]} "
                         f"classes; use at most {classes.shape[0]}")
    order = rng.permutation(n_peers)
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for slot, peer in enumerate(order):
        for j in range(k):  # k consecutive slots of the cyclic class order: all distinct
            holders[int(classes[(slot * k + j) % classes.shape[0]])].append(int(peer))
    parts: list[list[np.ndarray]] = [[] for _ in range(n_peers)]
    for c, peers in holders.items():
        idx = rng.permutation(np.flatnonzero(labels == c))
        if peers and idx.shape[0] < len(peers):
            raise ValueError(f"class {c} has {idx.shape[0]} items for {len(peers)} peers; use "
                             f"fewer peers or a smaller shards_per_peer")
        for peer, piece in zip(peers, np.array_split(idx, len(peers)) if peers else []):
            parts[peer].append(piece)
    return [np.concatenate(p) for p in parts]


def _quantity(labels: np.ndarray, n_peers: int, cfg: DataConfig,
              rng: np.random.Generator) -> list[np.ndarray]:
    n = labels.shape[0]
    rest = n - cfg.min_samples * n_peers
    sizes = cfg.min_samples + np.floor(rng.dirichlet(np.full(n_peers, cfg.alpha)) * rest)
    sizes = sizes.astype(np.int64)
    sizes[rng.integers(0, n_peers)] += n - int(sizes.sum())  # the rounding remainder
    return list(np.split(rng.permutation(n), np.cumsum(sizes)[:-1]))


PARTITIONERS: dict[str, Partitioner] = {
    "iid": _iid, "sample": _sample, "dirichlet": _dirichlet, "shards": _shards,
    "quantity": _quantity,
}


def partition_indices(labels: np.ndarray, n_peers: int, cfg: DataConfig) -> list[np.ndarray]:
    """Indices into ``labels`` owned by each of ``n_peers`` peers under ``cfg.partition``, seeded
    by ``cfg.seed`` (same inputs, same parts; int64 arrays)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if n_peers < 1:
        raise ValueError(f"n_peers must be >= 1, got {n_peers}")
    n = labels.shape[0]
    if cfg.partition != "sample" and n < n_peers:
        raise ValueError(f"{n} items cannot be split among {n_peers} peers; use fewer peers or "
                         f"partition = 'sample'")
    if cfg.partition in ("dirichlet", "quantity") and cfg.min_samples * n_peers > n:
        raise ValueError(f"min_samples = {cfg.min_samples} for {n_peers} peers needs "
                         f"{cfg.min_samples * n_peers} items, only {n} exist; lower min_samples")
    if cfg.partition in ("dirichlet", "shards") and np.issubdtype(labels.dtype, np.floating):
        raise ValueError(f"partition {cfg.partition!r} needs class labels; regression targets "
                         f"have none (use 'iid', 'sample' or 'quantity')")
    rng = np.random.default_rng([cfg.seed, 0x9A47])
    parts = PARTITIONERS[cfg.partition](labels, n_peers, cfg, rng)
    return [np.asarray(p, dtype=np.int64) for p in parts]


def label_histograms(labels: np.ndarray, parts: list[np.ndarray],
                     num_classes: int) -> list[list[int]]:
    """Per-peer label counts: ``hist[p][c]`` = items of class ``c`` in part ``p``."""
    labels = np.asarray(labels)
    return [np.bincount(labels[p].astype(np.int64), minlength=num_classes).tolist()
            for p in parts]


def feature_blocks(n_features: int, n_peers: int) -> list[slice]:
    """Disjoint contiguous column blocks covering ``0..n_features``, sizes differing by <= 1."""
    if n_peers < 1 or n_features < n_peers:
        raise ValueError(f"cannot split {n_features} features among {n_peers} peers; every "
                         f"peer needs at least one feature (use at most {n_features} peers)")
    bounds = [n_features * i // n_peers for i in range(n_peers + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(n_peers)]
