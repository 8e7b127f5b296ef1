"""Metrics of pixel models: bits per dimension, image grids and sample-quality proxies.

The classifier here is a metric utility, like an Inception network for FID: a one-hidden-layer
MLP fit on real images in a few seconds (its own short Adam fit is part of the metric, not a
model of the library; models train through :class:`~discdiff.training.Trainer`). Its
agreement with the label a class-conditional sample was asked for is the proxy; nearest-
neighbour L2 distances to the training set, beside a held-out real baseline, catch copies.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from discdiff.datasets.images import ImageDataset, dequantize
from discdiff.files import atomic_path

if TYPE_CHECKING:
    from discdiff.tasks.pixels import PixelTask

__all__ = [
    "bits_per_dim",
    "image_grid",
    "save_grid",
    "PixelClassifier",
    "train_classifier",
    "classify",
    "label_agreement",
    "nearest_neighbour_distances",
    "sample_quality",
]

_LN2 = math.log(2.0)


@torch.no_grad()
def bits_per_dim(
    task: PixelTask,
    model: nn.Module,
    data: ImageDataset,
    *,
    batch_size: int = 100,
    limit: int | None = None,
    repeats: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[float, float, int]:
    """Negative ELBO in bits per dimension over ``data``: (mean, standard error, images).

    Each image's bound is estimated ``repeats`` times (one random time each) and averaged;
    the standard error is that of the mean over images (it includes the Monte-Carlo noise).
    ``limit`` scores the first ``limit`` images only.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    n = len(data) if limit is None else min(int(limit), len(data))
    if n < 2:
        raise ValueError(f"need at least 2 images to estimate a standard error, got {n}")
    if data.levels != task.config.levels or data.pixels.shape[1] != task.config.num_pixels:
        raise ValueError(
            f"data has {data.levels} levels and {data.pixels.shape[1]} pixels; the model expects "
            f"{task.config.levels} and {task.config.num_pixels}"
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_image = []
    try:
        for start in range(0, n, batch_size):
            x0 = data.pixels[start : min(start + batch_size, n)].to(device)  # (B, D)
            y = data.labels[start : min(start + batch_size, n)].to(device)  # (B,)
            nats = torch.zeros(x0.shape[0], dtype=torch.float64, device=device)
            for _ in range(repeats):
                nats += task.nll_terms(model, x0, y, generator).double()
            per_image.append((nats / repeats).cpu())
    finally:
        model.train(was_training)
    bpd = torch.cat(per_image) / (_LN2 * task.config.num_pixels)  # (N,)
    return float(bpd.mean()), float(bpd.std(unbiased=True) / math.sqrt(n)), n


def image_grid(
    ids: Tensor,
    levels: int,
    height: int,
    width: int,
    ncol: int | None = None,
    scale: int | None = None,
) -> np.ndarray:
    """Tile images (N, H*W) of ids into one uint8 grey array with 1-pixel grey separators.

    Pixel ids are shown at their bin centres ((i + 0.5) / levels, black = 0). Each image is
    magnified ``scale`` times (default: to at least 28 pixels) by pixel replication.
    """
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.shape[1] != height * width:
        raise ValueError(f"ids must be (N, {height * width}), got {getattr(ids, 'shape', ids)!r}")
    n = ids.shape[0]
    if n < 1:
        raise ValueError("need at least one image for a grid")
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    scale = scale or max(1, math.ceil(28 / max(height, width)))
    img = (dequantize(ids, levels) * 255).round().clamp(0, 255).to(torch.uint8)
    img = img.view(n, height, width).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    h, w, pad = height * scale, width * scale, 1
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), 128, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top : top + h, left : left + w] = img[i].numpy()
    return canvas


def save_grid(
    ids: Tensor,
    path: str | os.PathLike[str],
    levels: int,
    height: int,
    width: int,
    ncol: int | None = None,
) -> Path:
    """Write :func:`image_grid` as a PNG (Pillow); returns the path."""
    from PIL import Image

    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"grid path must end in .png, got {str(out)!r}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"folder {str(out.parent)!r} does not exist")
    img = Image.fromarray(image_grid(ids, levels, height, width, ncol), mode="L")
    with atomic_path(out) as tmp:
        img.save(tmp)
    return out


# ---------------------------------------------------------------------------------------------
# Sample-quality proxies
# ---------------------------------------------------------------------------------------------


class PixelClassifier(nn.Module):
    """A one-hidden-layer MLP on dequantised pixels (N, H*W) ids -> class logits (N, C)."""

    def __init__(self, num_pixels: int, num_labels: int, levels: int, hidden: int = 256) -> None:
        super().__init__()
        self.levels = levels
        self.net = nn.Sequential(
            nn.Linear(num_pixels, hidden), nn.ReLU(), nn.Linear(hidden, num_labels)
        )

    def forward(self, ids: Tensor) -> Tensor:
        x = dequantize(ids, self.levels) * 2 - 1  # (N, D) in (-1, 1)
        return self.net(x)  # (N, C)


def train_classifier(
    data: ImageDataset, *, steps: int = 600, batch_size: int = 128, lr: float = 2e-3, seed: int = 0
) -> PixelClassifier:
    """Fit :class:`PixelClassifier` on real images with Adam (a few seconds on one CPU core)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = PixelClassifier(data.pixels.shape[1], data.num_labels, data.levels)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=1e-5)
    n = len(data)
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay to 0 for a stable end point
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
        loss = nn.functional.cross_entropy(clf(data.pixels[idx]), data.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


@torch.no_grad()
def classify(clf: PixelClassifier, ids: Tensor, batch_size: int = 1024) -> Tensor:
    """Predicted labels (N,) for images (N, H*W)."""
    return torch.cat(
        [clf(ids[i : i + batch_size]).argmax(-1) for i in range(0, ids.shape[0], batch_size)]
    )


def label_agreement(predicted: Tensor, asked: Tensor) -> tuple[float, float]:
    """Fraction of predictions equal to the asked labels, and its binomial standard error."""
    if predicted.shape != asked.shape or predicted.numel() == 0:
        raise ValueError(
            f"predicted and asked labels must be non-empty and alike, got {tuple(predicted.shape)}, {tuple(asked.shape)}"
        )
    p = float((predicted == asked).double().mean())
    return p, math.sqrt(p * (1 - p) / predicted.numel())


@torch.no_grad()
def nearest_neighbour_distances(
    queries: Tensor, reference: Tensor, levels: int, chunk: int = 256
) -> Tensor:
    """L2 distance (N,) from each query image to its nearest reference image.

    Images are (N, D) / (M, D) ids, compared as dequantised intensities in [0, 1], so a distance
    of 0 means an exact copy and sqrt(D) is the largest possible.
    """
    if queries.dim() != 2 or reference.dim() != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(
            f"queries and reference must be (N, D) and (M, D), got {tuple(queries.shape)}, {tuple(reference.shape)}"
        )
    ref = dequantize(reference, levels)  # (M, D)
    ref_sq = (ref * ref).sum(1)  # (M,)
    out = []
    for i in range(0, queries.shape[0], chunk):
        q = dequantize(queries[i : i + chunk], levels)  # (n, D)
        d2 = (q * q).sum(1, keepdim=True) + ref_sq[None, :] - 2 * q @ ref.T  # (n, M)
        out.append(d2.min(1).values.clamp_min(0).sqrt())
    return torch.cat(out)


def sample_quality(
    task: PixelTask,
    model: nn.Module,
    train_data: ImageDataset,
    heldout: ImageDataset,
    *,
    per_label: int = 10,
    guidance: float = 1.0,
    steps: int | None = None,
    classifier: PixelClassifier | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Label agreement and nearest-neighbour distances of class-conditional samples.

    Draws ``per_label`` samples for every label, classifies them with ``classifier`` (default:
    one trained on ``train_data``), and measures the L2 distance of each sample and of as many
    held-out real images to their nearest training image. Returns a dict with
    ``agreement``/``agreement_se``, ``classifier_accuracy`` (on ``heldout``, the ceiling),
    ``nn_samples``/``nn_heldout`` (mean distances), ``copies`` (samples at distance 0) and
    ``samples`` (N, H*W) with their ``labels``.
    """
    if isinstance(per_label, bool) or not isinstance(per_label, int) or per_label < 1:
        raise ValueError(f"per_label must be a positive integer, got {per_label!r}")
    clf = classifier if classifier is not None else train_classifier(train_data)
    asked = torch.arange(task.config.num_labels).repeat_interleave(per_label)  # (N,)
    from discdiff.tasks.pixels import sample_images

    samples = sample_images(
        task, model, asked, guidance=guidance, steps=steps, generator=generator, progress=progress
    )
    agree, agree_se = label_agreement(classify(clf, samples), asked)
    real_acc, _ = label_agreement(classify(clf, heldout.pixels), heldout.labels)
    n = samples.shape[0]
    real = heldout.pixels[:n]
    nn_s = nearest_neighbour_distances(samples, train_data.pixels, task.config.levels)
    nn_r = nearest_neighbour_distances(real, train_data.pixels, task.config.levels)
    return {
        "agreement": agree,
        "agreement_se": agree_se,
        "classifier_accuracy": real_acc,
        "nn_samples": float(nn_s.mean()),
        "nn_samples_se": float(nn_s.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "nn_heldout": float(nn_r.mean()),
        "nn_heldout_se": float(nn_r.std() / math.sqrt(real.shape[0]))
        if real.shape[0] > 1
        else float("nan"),
        "copies": int((nn_s == 0).sum()),
        "num_samples": n,
        "samples": samples,
        "labels": asked,
    }
