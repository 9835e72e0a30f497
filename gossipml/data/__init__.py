"""Data and model partition: datasets, per-peer sample partitions, feature blocks and streams."""

from __future__ import annotations

from gossipml.data.config import (
    DATASETS,
    DEFAULT_FMNIST_PATH,
    PARTITIONS,
    SYNTHETIC_DATASETS,
    DataConfig,
)
from gossipml.data.datasets import (
    Dataset,
    dataset_for,
    load_dataset,
    load_plugin_dataset,
    synthetic_name,
)
from gossipml.data.plugin import PluginError, dataset_from_plugin, is_reference, resolve_reference
from gossipml.data.idx import IdxError, parse_idx, read_idx, write_idx
from gossipml.data.partition import (
    PARTITIONERS,
    feature_blocks,
    label_histograms,
    partition_indices,
)
from gossipml.data.streams import STREAM_KINDS, Stream, StreamWorld, make_world

__all__ = [
    "DATASETS", "DEFAULT_FMNIST_PATH", "PARTITIONS", "SYNTHETIC_DATASETS", "STREAM_KINDS",
    "PARTITIONERS", "DataConfig", "Dataset", "IdxError", "Stream", "StreamWorld",
    "dataset_for", "dataset_from_plugin", "feature_blocks", "is_reference",
    "load_plugin_dataset", "PluginError", "resolve_reference", "label_histograms", "load_dataset", "make_world",
    "parse_idx", "partition_indices", "read_idx", "synthetic_name", "write_idx",
]
