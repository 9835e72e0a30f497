"""Data from disk: a CSV table and an ImageFolder tree, loaded through ``[data] dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gossipml.config import ExperimentConfig
from gossipml.data import dataset_for, partition_indices


def _csv(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    lines = ["a,b,kind"] + [f"{rng.normal():.4f},{rng.normal():.4f},{['cat', 'dog'][i % 2]}"
                            for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(dataset: str, **args):
    cfg = ExperimentConfig.from_dict({"data": {"dataset": dataset, "dataset_args": args}})
    return cfg, dataset_for(cfg.data)


def test_a_csv_table_with_a_named_label_column_is_a_dataset(tmp_path):
    cfg, data = _load("gossipml.data.files:csv_table", path=str(_csv(tmp_path / "t.csv")),
                      label="kind", test_fraction=0.25)
    assert data.x_train.shape == (30, 2) and data.x_test.shape == (10, 2)
    assert data.num_classes == 2 and set(data.y_train.tolist()) == {0, 1}
    parts = partition_indices(data.y_train, 3, cfg.data)
    assert sorted(np.concatenate(parts).tolist()) == list(range(30))


def test_a_csv_without_the_label_column_says_which_columns_there_are(tmp_path):
    with pytest.raises(ValueError, match="no column 'y'.*'kind'"):
        _load("gossipml.data.files:csv_table", path=str(_csv(tmp_path / "t.csv")), label="y")


def test_an_image_folder_tree_is_a_dataset_with_classes_from_folder_names(tmp_path):
    image = pytest.importorskip("PIL.Image")
    for k, name in enumerate(["blue", "red"]):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(5):
            color = (200 * k, 10 * i, 200 * (1 - k))
            image.new("RGB", (12, 9), color).save(tmp_path / "img" / name / f"{i}.png")
    (tmp_path / "img" / "red" / "notes.txt").write_text("not an image")
    cfg, data = _load("gossipml.data.files:image_folder", root=str(tmp_path / "img"),
                      size=[8, 8], test_fraction=0.2)
    assert data.x_train.shape == (8, 3, 8, 8) and data.x_test.shape == (2, 3, 8, 8)
    assert data.num_classes == 2 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    red = np.concatenate([data.x_train, data.x_test])[:, 0].mean(axis=(1, 2)) > 0.5
    labels = np.concatenate([data.y_train, data.y_test])
    assert (red == (labels == 1)).all()  # "red" is class 1 (sorted folder names)
