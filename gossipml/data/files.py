"""Data from disk as built-in dataset kinds, selected like any dataset callable:

    [data]
    dataset = "gossipml.data.files:csv_table"        # a CSV file with a named label column
    [data.dataset_args]
    path = "data/wine.csv"
    label = "class"
    test_fraction = 0.2

    [data]
    dataset = "gossipml.data.files:image_folder"     # class folders of images (torchvision's
    [data.dataset_args]                              # ImageFolder layout); needs pillow
    root = "data/flowers"                            # (pip install 'gossipml[images]')
    size = [32, 32]

Each returns ``(train, test)`` as arrays, so every partition works on it (labels from the file or
the folder names). A relative path is taken from the current folder; the experiment file's folder
is on the import path, not the data path, so give an absolute path for multi-host runs.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["csv_table", "image_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                  ".webp")

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Arrays:
    """A seeded shuffle-split into (train, test)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = max(1, int(round(len(y) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    if len(train) == 0:
        raise ValueError(f"{len(y)} items leave nothing to train on at test_fraction "
                         f"{test_fraction}")
    return (x[train], y[train]), (x[test], y[test])


def csv_table(path: str, label: str, test_fraction: float = 0.2, seed: int = 0,
              delimiter: str = ",") -> Arrays:
    """A CSV file with a header row: every column but ``label`` is a float feature; integer
    labels are classes (strings are mapped to 0..k-1 in sorted order), other numbers a
    regression target."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    if len(rows) < 3:
        raise ValueError(f"{path}: needs a header row and at least two data rows")
    header, body = rows[0], [r for r in rows[1:] if r]
    if label not in header:
        raise ValueError(f"{path}: no column {label!r} (label); columns: {header}")
    j = header.index(label)
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: line(s) {bad[:5]} do not have {len(header)} fields")
    try:
        x = np.array([[float(v) for k, v in enumerate(r) if k != j] for r in body],
                     dtype=np.float32)
    except ValueError as exc:
        raise ValueError(f"{path}: a feature is not a number ({exc})") from None
    raw = [r[j] for r in body]
    y = _labels(raw)
    return _split(x, y, test_fraction, seed)


def _labels(raw: Sequence[str]) -> np.ndarray:
    try:
        values = np.array([float(v) for v in raw])
    except ValueError:  # names: classes in sorted order
        names = sorted(set(raw))
        return np.array([names.index(v) for v in raw], dtype=np.int64)
    if np.all(values == np.round(values)) and values.min() >= 0:
        return values.astype(np.int64)
    return values.astype(np.float32)


def image_folder(root: str, size: Sequence[int] = (32, 32), grayscale: bool = False,
                 test_fraction: float = 0.2, seed: int = 0) -> Arrays:
    """``root/<class>/<image>`` (torchvision's ImageFolder layout): classes are the sorted folder
    names; every image is resized to ``size`` (width, height) and scaled to [0, 1], channels
    first."""
    try:
        from PIL import Image
    except ModuleNotFoundError:
        raise ValueError("image_folder needs pillow: pip install 'gossipml[images]'") from None
    base = Path(root)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if not classes:
        raise ValueError(f"{root}: no class folders (expected {root}/<class>/<image>)")
    xs, ys = [], []
    for k, name in enumerate(classes):
        for f in sorted((base / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(f) as img:
                img = img.convert("L" if grayscale else "RGB").resize(tuple(size))
                arr = np.asarray(img, dtype=np.float32) / 255.0
            xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            ys.append(k)
    if len(ys) < 2:
        raise ValueError(f"{root}: found {len(ys)} image(s) with suffixes {IMAGE_SUFFIXES}")
    return _split(np.stack(xs), np.array(ys, dtype=np.int64), test_fraction, seed)
