"""Your own code in an experiment: ``"module:callable"`` references and plugin datasets.

A reference names a module importable from the experiment's ``[task] import_path`` folders (the
experiment file's own folder is always one, so a ``task.py`` beside ``experiment.toml`` works on
every host and in every child process) or from the installed packages. :func:`resolve_reference`
imports it; :func:`dataset_from_plugin` turns what a dataset callable returns, ``(train, test)``,
each a ``torch.utils.data.Dataset`` of ``(x, y)`` items or a pair of arrays ``(x, y)``, into the
arrays of a dataset (labels read from it, so every partition works).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["is_reference", "resolve_reference", "dataset_from_plugin", "PluginError"]


class PluginError(ValueError):
    """A ``module:callable`` reference that cannot be imported or used."""


def is_reference(value: object) -> bool:
    """Whether ``value`` is a ``"module:callable"`` reference (not a built-in name)."""
    return isinstance(value, str) and ":" in value


def _check_form(ref: str, key: str) -> tuple[str, str]:
    module, _, attr = ref.partition(":")
    parts = module.split(".") + attr.split(".")
    if not module or not attr or not all(p.isidentifier() for p in parts):
        raise PluginError(f"{key} = {ref!r} is not a reference of the form 'module:callable' "
                          f"(e.g. 'task:build_model' for a task.py beside the experiment file)")
    return module, attr


def _forget_shadowed(top: str, folders: Sequence[str]) -> None:
    """Drop an imported module ``top`` (and its submodules) that another folder's file of the
    same name shadows, so two experiments' ``task.py`` in one process do not mix."""
    spec = importlib.machinery.PathFinder.find_spec(top, list(folders))
    loaded = sys.modules.get(top)
    if spec is None or loaded is None or getattr(loaded, "__file__", None) == spec.origin:
        return
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def resolve_reference(ref: str, key: str, import_path: Sequence[str] = ()) -> Callable[..., Any]:
    """The callable ``ref`` (``"module:attr"``) names, the ``import_path`` folders searched first;
    errors name ``key`` and what was not found."""
    module_name, attr = _check_form(ref, key)
    folders = [str(Path(p)) for p in import_path]
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    _forget_shadowed(module_name.split(".")[0], folders)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = f"in {folders} or " if folders else "in "
        raise PluginError(f"{key} = {ref!r}: module {exc.name!r} was not found {where}the "
                          f"installed packages; put {module_name.replace('.', '/')}.py beside "
                          f"the experiment file or add its folder to [task] import_path") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{key} = {ref!r}: module {module_name!r} "
                              f"({getattr(module, '__file__', '?')}) has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{key} = {ref!r} is a {type(obj).__name__}, not a callable")
    return obj


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _split_arrays(split: Any, key: str, which: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` arrays of one split: a pair of arrays, or a map-style dataset of pairs."""
    if isinstance(split, (tuple, list)) and len(split) == 2 and hasattr(split[0], "__len__") \
            and hasattr(split[0], "shape"):
        x, y = _as_array(split[0]), _as_array(split[1])
    elif hasattr(split, "__len__") and hasattr(split, "__getitem__"):
        items = [split[i] for i in range(len(split))]
        if not items or not all(isinstance(it, (tuple, list)) and len(it) >= 2 for it in items):
            raise PluginError(f"{key}: the {which} dataset must yield (x, y) items, got "
                              f"{type(items[0]).__name__ if items else 'no items'}")
        x = np.stack([_as_array(it[0]) for it in items])
        y = np.stack([_as_array(it[1]) for it in items])
    else:
        raise PluginError(f"{key}: the {which} split must be a torch Dataset of (x, y) items or a "
                          f"pair of arrays (x, y), got {type(split).__name__}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise PluginError(f"{key}: the {which} split has {x.shape[0]} inputs and {y.shape[0]} "
                          f"labels; they must be equal and non-zero")
    return x, y


def _labels(y: np.ndarray, key: str) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        if y.ndim != 1 or (y.size and y.min() < 0):
            raise PluginError(f"{key}: class labels must be one integer >= 0 per item, got "
                              f"shape {y.shape}, min {y.min() if y.size else '-'}")
        return y.astype(np.int64)
    return y.astype(np.float32)


def dataset_from_plugin(result: Any, name: str,
                        key: str = "[data] dataset") -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test, num_classes)`` of a dataset callable's ``(train,
    test)``: integer labels are classes ``0..max``; real targets make a regression (0 classes)."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise PluginError(f"{key} = {name!r} must return (train, test), got "
                          f"{type(result).__name__}")
    (x_tr, y_tr), (x_te, y_te) = (_split_arrays(result[0], key, "train"),
                                  _split_arrays(result[1], key, "test"))
    y_tr, y_te = _labels(y_tr, key), _labels(y_te, key)
    if x_tr.shape[1:] != x_te.shape[1:] or y_tr.dtype != y_te.dtype:
        raise PluginError(f"{key}: train items {x_tr.shape[1:]} / labels {y_tr.dtype} differ from "
                          f"test items {x_te.shape[1:]} / labels {y_te.dtype}")
    regression = y_tr.dtype != np.int64
    classes = 0 if regression else int(max(y_tr.max(), y_te.max())) + 1
    return (np.ascontiguousarray(x_tr, dtype=np.float32), y_tr,
            np.ascontiguousarray(x_te, dtype=np.float32), y_te, classes)
