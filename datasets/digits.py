"""scikit-learn's 8x8 handwritten digits (1,797 images, 17 grey levels 0..16): the tiny image
set for tests and quick demos. Ships with scikit-learn, so it needs no download.

The split is fixed: a permutation from numpy's legacy ``RandomState(0)`` (whose stream numpy
keeps stable across versions) puts 1,257 images in "train", 180 in "valid", 360 in "test".
"""

from __future__ import annotations

import numpy as np

from discdiff.datasets.images import ImageDataset, check_levels, check_split

__all__ = [
    "DIGITS_SIZES",
    "DIGITS_GREY_LEVELS",
    "digits_split_indices",
    "digits_grey",
    "load_digits",
]

DIGITS_SIZES = {"train": 1257, "valid": 180, "test": 360}
DIGITS_GREY_LEVELS = 17
_SIDE = 8
_SEED = 0


def digits_split_indices(split: str) -> np.ndarray:
    """Sorted indices into sklearn's 1,797 digits that form ``split``, (N,) int64."""
    check_split(split)
    total = sum(DIGITS_SIZES.values())
    perm = np.random.RandomState(_SEED).permutation(total)
    start = {"train": 0, "valid": DIGITS_SIZES["train"]}.get(split, total - DIGITS_SIZES["test"])
    return np.sort(perm[start : start + DIGITS_SIZES[split]]).astype(np.int64)


def digits_grey(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One split as (int64 grey levels (N, 64) in 0..16, int64 labels (N,))."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    data, target = np.asarray(bunch.data), np.asarray(bunch.target)
    if data.shape != (sum(DIGITS_SIZES.values()), _SIDE * _SIDE):
        raise ValueError(f"scikit-learn's digits have shape {data.shape}, expected (1797, 64)")
    grey = np.rint(data).astype(np.int64)
    if np.abs(grey - data).max() > 0 or grey.min() < 0 or grey.max() >= DIGITS_GREY_LEVELS:
        raise ValueError("scikit-learn's digits are not integer grey levels in 0..16")
    idx = digits_split_indices(split)
    return grey[idx], target[idx].astype(np.int64)


def load_digits(split: str = "train", levels: int = 17) -> ImageDataset:
    """The 8x8 digits ``split`` with pixels in [0, levels); levels = 17 keeps the raw values."""
    check_levels(levels)
    grey, labels = digits_grey(split)
    return ImageDataset.from_grey(
        grey, labels, DIGITS_GREY_LEVELS, levels, _SIDE, _SIDE, 10, name="digits", split=split
    )
