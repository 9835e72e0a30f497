"""IDX files (the MNIST / Fashion-MNIST format), read with ``numpy.frombuffer`` and checked.

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte
(0x08 unsigned byte, ...), a byte with the number of dimensions ``d``, then ``d`` big-endian
uint32 sizes, then the data in C order. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IdxError", "read_idx", "parse_idx", "write_idx", "load_fmnist_arrays", "FMNIST_FILES"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_CODES = {v: k for k, v in _DTYPES.items()}

FMNIST_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz",
}


class IdxError(ValueError):
    """An IDX file is missing, corrupt or not what was expected; the message names the file."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array of the declared shape (a read-only view, no copy)."""
    if len(data) < 4:
        raise IdxError(f"{name}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: bad IDX magic {data[:4].hex()} (must start with 0000); "
                       f"is it an IDX file, and decompressed?")
    dtype = _DTYPES.get(data[2])
    if dtype is None:
        raise IdxError(f"{name}: unknown IDX type byte 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IdxError(f"{name}: header declares {ndim} dimensions but the file has "
                       f"{len(data)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(f"{name}: shape {shape} of {dtype} needs {expected} bytes, file has "
                       f"{len(data)} (truncated or corrupt; reinstall the file)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed when its name ends in ``.gz``)."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxError(f"{path}: not a valid gzip file ({exc}); reinstall it") from exc
    return parse_idx(raw, str(path))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip when the name ends in ``.gz``); for tests and tools."""
    path = Path(path)
    arr = np.ascontiguousarray(array)
    code = _CODES.get(arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype)
    if code is None:
        raise IdxError(f"cannot write dtype {arr.dtype} as IDX; use uint8, int8, int16, "
                       f"int32, float32 or float64")
    big = arr.astype(_DTYPES[code], copy=False)
    data = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes() \
        + big.tobytes()
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)
    return path


def load_fmnist_arrays(folder: str | Path) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST arrays (uint8 images N x 28 x 28, uint8 labels N) from ``folder``."""
    folder = Path(folder)
    missing = [f for f in FMNIST_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} not found in {folder}; install the Debian package "
            f"'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or set "
            f"[data] path to a folder holding the four IDX .gz files")
    arrays = {key: read_idx(folder / name) for key, name in FMNIST_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise IdxError(f"{folder}: {split} images have shape {x.shape} {x.dtype}, "
                           f"expected (N, 28, 28) uint8")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise IdxError(f"{folder}: {split} labels have shape {y.shape}, expected "
                           f"({x.shape[0]},) to match the images")
        if y.size and int(y.max()) > 9:
            raise IdxError(f"{folder}: {split} labels go up to {int(y.max())}, expected 0..9")
    return arrays
