"""Sample partitions: coverage, disjointness, skew that follows alpha, shards, bootstrap duplicates,
and seeded reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipml.data import (
    PARTITIONS,
    DataConfig,
    feature_blocks,
    label_histograms,
    partition_indices,
)


def _labels(n: int, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def _assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert joined.shape[0] == n, "parts must hold every item exactly once"
    assert np.array_equal(np.sort(joined), np.arange(n))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), n_peers=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_iid_parts_are_disjoint_cover_and_balanced(n: int, n_peers: int, seed: int) -> None:
    if n < n_peers:
        with pytest.raises(ValueError, match="cannot be split"):
            partition_indices(_labels(n), n_peers, DataConfig(seed=seed))
        return
    parts = partition_indices(_labels(n), n_peers, DataConfig(seed=seed))
    assert len(parts) == n_peers
    _assert_disjoint_cover(parts, n)
    sizes = [p.shape[0] for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", ["dirichlet", "shards", "quantity"])
def test_non_iid_schemes_are_disjoint(scheme: str) -> None:
    labels = _labels(3000)
    parts = partition_indices(labels, 12, DataConfig(partition=scheme, alpha=0.3, seed=3))
    joined = np.concatenate(parts)
    assert np.unique(joined).shape[0] == joined.shape[0], "no item may go to two peers"
    if scheme != "shards":
        _assert_disjoint_cover(parts, labels.shape[0])


def _mean_max_share(labels: np.ndarray, alpha: float, seed: int) -> float:
    parts = partition_indices(labels, 10, DataConfig(partition="dirichlet", alpha=alpha,
                                                     seed=seed, min_samples=5))
    hists = np.array(label_histograms(labels, parts, 10), dtype=float)
    return float(np.mean(hists.max(axis=1) / hists.sum(axis=1)))


def test_dirichlet_skew_follows_alpha() -> None:
    labels = _labels(5000)
    skewed = np.mean([_mean_max_share(labels, 0.1, s) for s in range(3)])
    uniform = np.mean([_mean_max_share(labels, 100.0, s) for s in range(3)])
    # alpha 0.1: most of a peer's data is one class; alpha 100: close to the 1/10 of uniform
    assert skewed > 0.5, skewed
    assert uniform < 0.2, uniform


def test_dirichlet_gives_every_peer_min_samples() -> None:
    labels = _labels(400)
    for seed in range(5):
        parts = partition_indices(labels, 20, DataConfig(partition="dirichlet", alpha=0.05,
                                                         min_samples=15, seed=seed))
        assert min(p.shape[0] for p in parts) >= 15
        _assert_disjoint_cover(parts, 400)


@settings(max_examples=50, deadline=None)
@given(n_peers=st.integers(1, 30), k=st.integers(1, 10), seed=st.integers(0, 2**31))
def test_shards_give_exactly_k_classes(n_peers: int, k: int, seed: int) -> None:
    labels = _labels(2000, seed=seed % 7)
    parts = partition_indices(labels, n_peers, DataConfig(partition="shards",
                                                          shards_per_peer=k, seed=seed))
    for part in parts:
        assert np.unique(labels[part]).shape[0] == k


def test_shards_refuse_more_classes_than_exist() -> None:
    with pytest.raises(ValueError, match="only 10 classes"):
        partition_indices(_labels(100), 4, DataConfig(partition="shards", shards_per_peer=11))


def test_sample_with_replacement_has_expected_duplicate_rate() -> None:
    n_items, n_peers = 1000, 40
    parts = partition_indices(np.zeros(n_items, dtype=np.int64), n_peers,
                              DataConfig(partition="sample", sample_fraction=1.0, seed=1))
    draws = parts[0].shape[0]
    assert draws == n_items
    # E[distinct] = N (1 - (1 - 1/N)^n): the bootstrap's ~63.2 % unique items
    expected_dup = 1 - n_items * (1 - (1 - 1 / n_items) ** draws) / draws
    measured = np.mean([1 - np.unique(p).shape[0] / p.shape[0] for p in parts])
    assert abs(measured - expected_dup) < 0.01, (measured, expected_dup)


def test_sample_default_size_is_n_over_peers() -> None:
    parts = partition_indices(_labels(1000), 8, DataConfig(partition="sample"))
    assert [p.shape[0] for p in parts] == [125] * 8


def test_quantity_skew_follows_alpha() -> None:
    labels = _labels(5000)
    def spread(alpha: float) -> float:
        parts = partition_indices(labels, 10, DataConfig(partition="quantity", alpha=alpha))
        sizes = np.array([p.shape[0] for p in parts])
        assert sizes.min() >= 10
        _assert_disjoint_cover(parts, 5000)
        return float(sizes.std() / sizes.mean())
    assert spread(0.1) > 1.0
    assert spread(1000.0) < 0.1


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_same_seed_same_parts_other_seed_other_parts(scheme: str) -> None:
    labels = _labels(2000)
    def parts(seed: int) -> list[np.ndarray]:
        return partition_indices(labels, 8, DataConfig(partition=scheme, seed=seed))
    a, b, c = parts(5), parts(5), parts(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_label_histograms_count_each_part() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    hists = label_histograms(labels, [np.array([0, 1]), np.array([2, 3, 4, 5])], 4)
    assert hists == [[1, 1, 0, 0], [0, 1, 3, 0]]


@settings(max_examples=80, deadline=None)
@given(n_features=st.integers(1, 300), n_peers=st.integers(1, 40))
def test_feature_blocks_are_disjoint_and_cover(n_features: int, n_peers: int) -> None:
    if n_peers > n_features:
        with pytest.raises(ValueError, match="at least one feature"):
            feature_blocks(n_features, n_peers)
        return
    blocks = feature_blocks(n_features, n_peers)
    cols = np.concatenate([np.arange(n_features)[b] for b in blocks])
    assert np.array_equal(cols, np.arange(n_features))
    sizes = [b.stop - b.start for b in blocks]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_errors_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="lower min_samples"):
        partition_indices(_labels(50), 10, DataConfig(partition="dirichlet", min_samples=10))
    with pytest.raises(ValueError, match="needs class labels"):
        partition_indices(np.zeros(50, np.float32), 2, DataConfig(partition="dirichlet"))
