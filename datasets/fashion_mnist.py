"""Fashion-MNIST (28x28 clothing images, 10 classes) from the Debian package
``dataset-fashion-mnist``, which installs the original idx files under
``/usr/share/datasets/fashion-mnist/``.

Splits follow MNIST's classic convention: "valid" is the last 10,000 images of the 60,000
training file, "train" the first 50,000, "test" the 10,000 of the t10k file.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from discdiff.datasets.images import ImageDataset, check_levels, check_split

__all__ = [
    "FASHION_MNIST_ROOT",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SIZES",
    "FASHION_MNIST_CLASSES",
    "read_idx",
    "fashion_mnist_grey",
    "load_fashion_mnist",
]

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_SIDE = 28

# idx type codes -> big-endian numpy dtypes (Y. LeCun's MNIST file format).
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(source: str | os.PathLike[str] | bytes) -> np.ndarray:
    """Read an idx file (plain or gzip-compressed) into an array of its declared shape.

    Header: two zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of
    dimensions, then each dimension as a big-endian uint32; the data follow, big-endian.
    Returns native-endian data. A malformed file raises ValueError naming the problem.
    """
    name = "<bytes>"
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        name = str(source)
        data = Path(source).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name} is not an idx file: it must start with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{name}: unknown idx type code 0x{code:02X}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated idx header ({len(data)} bytes for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{name}: idx header declares shape {shape} ({expected} bytes), "
            f"but {len(data) - header} bytes of data follow"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def _read_pair(root: Path, which: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = FASHION_MNIST_FILES[which]
    images_path, labels_path = root / images_name, root / labels_name
    for p in (images_path, labels_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {p} not found: install it with "
                "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass root= a folder "
                "holding the four *-ubyte.gz files"
            )
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.ndim != 3 or x.shape[1:] != (_SIDE, _SIDE) or x.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected uint8 images (N, 28, 28), got {x.dtype} {x.shape}"
        )
    if y.shape != (x.shape[0],) or y.dtype != np.uint8 or (y.size and y.max() > 9):
        raise ValueError(f"{labels_path}: expected {x.shape[0]} uint8 labels in 0..9")
    return x.reshape(len(x), _SIDE * _SIDE), y.astype(np.int64)


def fashion_mnist_grey(
    split: str = "train", root: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One split as (uint8 grey levels (N, 784) in 0..255, int64 labels (N,)).

    ``root`` defaults to /usr/share/datasets/fashion-mnist; a missing file raises
    FileNotFoundError saying how to install the Debian package.
    """
    check_split(split)
    folder = FASHION_MNIST_ROOT if root is None else Path(root)
    if split == "test":
        return _read_pair(folder, "test")
    x, y = _read_pair(folder, "train")
    n_valid = FASHION_MNIST_SIZES["valid"]
    if len(x) <= n_valid:
        raise ValueError(
            f"the Fashion-MNIST training file has {len(x)} images, need more than {n_valid}"
        )
    if split == "train":
        return x[:-n_valid], y[:-n_valid]
    return x[-n_valid:], y[-n_valid:]


def load_fashion_mnist(
    split: str = "train", levels: int = 256, root: str | os.PathLike[str] | None = None
) -> ImageDataset:
    """Fashion-MNIST ``split`` ("train" 50k, "valid" 10k, "test" 10k), pixels in [0, levels)."""
    check_levels(levels)
    grey, labels = fashion_mnist_grey(split, root)
    return ImageDataset.from_grey(
        grey, labels, 256, levels, _SIDE, _SIDE, 10, name="fashion-mnist", split=split
    )
