"""Image pixels as one categorical field: data + denoiser + metrics plugged into the shared loops.

An image is one field ``(B, H*W)`` of intensity ids in ``[0, levels)`` (row-major, see
:mod:`discdiff.datasets.images`). Three forward processes run on the same denoiser (a
:class:`~discdiff.nn.TransformerDenoiser` with 2-D rotary positions and a class label):

- ``"absorbing"``: :class:`~discdiff.processes.Absorbing` with the log-linear schedule,
  continuous time, trained and scored with :func:`~discdiff.losses.continuous_elbo` (MDLM);
- ``"uniform"``: :class:`~discdiff.processes.Uniform`, continuous time, the same ELBO (UDLM);
- ``"gaussian"``: D3PM's discretized-Gaussian transition on
  :class:`~discdiff.processes.Dense`, T discrete steps, trained with
  :func:`~discdiff.losses.hybrid_loss` and scored with :func:`~discdiff.losses.vlb_loss`.

Class conditioning uses a null label (id ``num_labels``): training replaces each label by the
null id with probability ``label_dropout`` (drawn from the trainer's noise generator), which
lets the samplers apply classifier-free guidance.

Metrics: negative ELBO in bits per dimension with its standard error over test images; a
sample-quality proxy (a small MLP classifier trained on real images labels class-conditional
samples; the fraction that agree with the asked label is reported); nearest-neighbour L2
distance to the training set, for samples beside a held-out real baseline (samples that were
copies of training images would sit at distance 0, far below the real baseline).

This module holds no loop of its own: training is :class:`~discdiff.training.Trainer`,
sampling is :class:`~discdiff.samplers.AncestralSampler`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from discdiff.datasets.images import (
    IMAGE_DATASETS,
    ImageDataset,
    check_levels,
    check_split,
    dequantize,
    load_images,
)
from discdiff.losses import continuous_elbo, hybrid_loss, vlb_loss
from discdiff.nn import (
    TransformerConfig,
    TransformerDenoiser,
    denoiser_config,
    denoiser_from_config,
)
from discdiff.processes import Absorbing, Dense, Process, Uniform
from discdiff.processes.gaussian import d3pm_gaussian_schedule, gaussian_step_matrices
from discdiff.samplers import AncestralSampler
from discdiff.schedules import LogLinear
from discdiff.training import TrainConfig, Trainer, load_model

__all__ = [
    "PROCESS_KINDS",
    "IMAGE_SHAPES",
    "PixelConfig",
    "PixelTask",
    "ModelOptions",
    "make_process",
    "make_denoiser",
    "model_config",
    "build_model",
    "saved_run_config",
    "check_labels",
    "load_data",
    "TorchImages",
    "train_pixels",
    "load_run",
    "bits_per_dim",
    "sample_images",
    "image_grid",
    "save_grid",
    "PixelClassifier",
    "train_classifier",
    "classify",
    "label_agreement",
    "nearest_neighbour_distances",
    "sample_quality",
]

#: the forward processes this task offers
PROCESS_KINDS = ("absorbing", "uniform", "gaussian")

#: (height, width, number of class labels) of each image data set
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (28, 28, 10),
    "fashion-mnist": (28, 28, 10),
    "digits": (8, 8, 10),
}

_LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# Configuration and the task object
# ---------------------------------------------------------------------------------------------


def _check_data(name: str) -> str:
    if name not in IMAGE_SHAPES:
        raise ValueError(
            f"unknown image data set {name!r}; expected one of {', '.join(IMAGE_DATASETS)}"
        )
    return name


@dataclass(frozen=True)
class PixelConfig:
    """What defines a pixel task: data set, quantisation, forward process and its training loss.

    timesteps, beta_start, beta_end: the discretized-Gaussian chain's T and linear betas
    (D3PM's 1e-4..0.02 over 1000 steps; only used by ``process="gaussian"``; with few levels
    these betas barely move mass, so the prior term of the bound stays large: raise beta_end).
    label_dropout: probability of replacing a training label by the null label (CFG).
    hybrid_lambda: weight of the x_0 cross-entropy in the Gaussian model's hybrid loss.
    """

    data: str = "mnist"
    levels: int = 16
    process: str = "absorbing"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    label_dropout: float = 0.1
    hybrid_lambda: float = 0.01

    def __post_init__(self) -> None:
        _check_data(self.data)
        check_levels(self.levels)
        if self.process not in PROCESS_KINDS:
            raise ValueError(
                f"process must be one of {', '.join(PROCESS_KINDS)}, got {self.process!r}"
            )
        if (
            isinstance(self.timesteps, bool)
            or not isinstance(self.timesteps, int)
            or self.timesteps < 1
        ):
            raise ValueError(f"timesteps must be a positive integer, got {self.timesteps!r}")
        if not 0.0 <= self.beta_start <= self.beta_end <= 1.0:
            raise ValueError(
                f"need 0 <= beta_start <= beta_end <= 1, got {self.beta_start}, {self.beta_end}"
            )
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if not self.hybrid_lambda >= 0.0:
            raise ValueError(f"hybrid_lambda must be >= 0, got {self.hybrid_lambda}")

    @property
    def height(self) -> int:
        return IMAGE_SHAPES[self.data][0]

    @property
    def width(self) -> int:
        return IMAGE_SHAPES[self.data][1]

    @property
    def num_labels(self) -> int:
        return IMAGE_SHAPES[self.data][2]

    @property
    def num_pixels(self) -> int:
        return self.height * self.width

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PixelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown PixelConfig keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**dict(d))


def make_process(config: PixelConfig) -> Process:
    """The forward process of ``config`` over ``levels`` intensity classes."""
    K = config.levels
    if config.process == "absorbing":
        return Absorbing(K, LogLinear())
    if config.process == "uniform":
        return Uniform(K, LogLinear())
    schedule = d3pm_gaussian_schedule(config.timesteps, config.beta_start, config.beta_end)
    # float64 keeps the T cumulative (K, K) products exact; above 64 levels float32 halves the
    # memory (2 T K^2 x 8 bytes = 1 GB at K = 256, T = 1000).
    dtype = torch.float64 if K <= 64 else torch.float32
    Q = gaussian_step_matrices(K, schedule)  # (T, K, K)
    prior = torch.full((K,), 1.0 / K, dtype=torch.float64)
    return Dense(Q.to(dtype), prior=prior.to(dtype), dtype=dtype)


class PixelTask:
    """A :class:`PixelConfig` with its process and the loss functions the trainer calls.

    Batches are ``(pixels (B, H*W) long, labels (B,) long)`` as an :class:`ImageDataset`
    yields them through the default collate.
    """

    def __init__(self, config: PixelConfig) -> None:
        if not isinstance(config, PixelConfig):
            raise TypeError(f"config must be a PixelConfig, got {type(config).__name__}")
        self.config = config
        self.process = make_process(config)

    @property
    def null_label(self) -> int:
        """The label id meaning "no label" (the denoiser's null class)."""
        return self.config.num_labels

    @property
    def discrete_time(self) -> bool:
        return self.process.num_steps is not None

    def _unpack(self, batch: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, list | tuple) or len(batch) != 2:
            raise TypeError("a pixel batch must be (pixels (B, H*W), labels (B,))")
        x0, labels = batch
        return x0, labels

    def nll_terms(
        self, model: nn.Module, x0: Tensor, labels: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """Negative ELBO in nats per image (B,): the true bound (prior and reconstruction terms)."""
        cond = {"label": labels}
        den = self.denoiser(model)
        if self.discrete_time:
            return vlb_loss(self.process, den, x0, cond=cond, generator=generator)
        return continuous_elbo(self.process, den, x0, cond=cond, boundary=True, generator=generator)

    def loss_fn(self, model: nn.Module, batch: Any, generator: torch.Generator | None) -> Tensor:
        """Training objective in nats per image (B,), with labels dropped to null at random.

        Continuous time: the ELBO without its O(t_min) boundary terms; discrete time: the hybrid
        loss. Label dropout draws from ``generator`` (the trainer's), so runs are reproducible.
        """
        x0, labels = self._unpack(batch)
        p = self.config.label_dropout
        if p > 0:
            gen_dev = generator.device if generator is not None else labels.device
            u = torch.rand(labels.shape, generator=generator, device=gen_dev)
            labels = torch.where(
                u.to(labels.device) < p, torch.full_like(labels, self.null_label), labels
            )
        cond = {"label": labels}
        den = self.denoiser(model)
        if self.discrete_time:
            return hybrid_loss(
                self.process,
                den,
                x0,
                cond=cond,
                lam=self.config.hybrid_lambda,
                generator=generator,
            )
        return continuous_elbo(
            self.process, den, x0, cond=cond, boundary=False, generator=generator
        )

    def eval_fn(self, model: nn.Module, batch: Any, generator: torch.Generator) -> Tensor:
        """Held-out negative ELBO in nats per image (B,), conditioned on the true labels."""
        x0, labels = self._unpack(batch)
        return self.nll_terms(model, x0, labels, generator)

    @staticmethod
    def denoiser(model: nn.Module) -> Callable[..., Tensor]:
        """The model as the losses and samplers call it: ``(x_t, t, cond) -> logits (B, D, K)``."""

        def call(x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
            return model(x_t, t, cond)

        return call

    @staticmethod
    def count_tokens(batch: Any) -> int:
        """Pixels in a batch (so the trainer logs nats per dimension)."""
        return int(batch[0].numel())

    def sampler(self, steps: int | None = None, guidance: float = 1.0) -> AncestralSampler:
        """Ancestral sampler with CFG over this task's null label; ``steps`` <= T in discrete time."""
        if steps is None:
            steps = min(self.process.num_steps or 100, 100)
        return AncestralSampler(steps, guidance=guidance, null_label=self.null_label)


# ---------------------------------------------------------------------------------------------
# The denoiser
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOptions:
    """Size of the transformer denoiser (the same for every process)."""

    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    cond_dim: int = 128
    patch: int = 1  # p x p pixels per transformer token (p = 2: ~4x cheaper, see TransformerConfig)


def make_denoiser(config: PixelConfig, options: ModelOptions | None = None) -> TransformerDenoiser:
    """A transformer over the H x W grid (2-D rotary), with labels and a null class."""
    if not isinstance(config, PixelConfig):
        raise TypeError(f"config must be a PixelConfig, got {type(config).__name__}")
    o = options or ModelOptions()
    cfg = TransformerConfig(
        num_states=config.levels + 1 if config.process == "absorbing" else config.levels,
        num_classes=config.levels,
        num_layers=o.num_layers,
        d_model=o.d_model,
        num_heads=o.num_heads,
        mlp_ratio=o.mlp_ratio,
        dropout=o.dropout,
        max_len=config.num_pixels,
        grid=(config.height, config.width),
        num_labels=config.num_labels,
        cond_dim=o.cond_dim,
        patch=o.patch,
    )
    return TransformerDenoiser(cfg)


def model_config(task: PixelTask, model: nn.Module) -> dict[str, Any]:
    """The JSON the run dir keeps under "model": the task config and the denoiser's config."""
    return {"task": task.config.to_dict(), "denoiser": denoiser_config(model)}


def build_model(saved: Mapping[str, Any]) -> nn.Module:
    """Rebuild the denoiser from a run's "model" entry (for :func:`discdiff.training.load_model`)."""
    if not isinstance(saved, Mapping) or "denoiser" not in saved or "task" not in saved:
        raise ValueError("this run dir was not written by the pixels task (no 'task'/'denoiser')")
    return denoiser_from_config(dict(saved["denoiser"]))


# ---------------------------------------------------------------------------------------------
# Data, training, loading
# ---------------------------------------------------------------------------------------------


def load_data(
    config: PixelConfig, split: str = "train", cache: str | os.PathLike[str] | None = None
) -> ImageDataset:
    """One split of the task's data set at its levels."""
    check_split(split)
    return load_images(config.data, split, config.levels, cache=cache)


class TorchImages(torch.utils.data.Dataset):
    """An :class:`ImageDataset` as a map-style torch ``Dataset`` of (pixels (H*W,), label ())."""

    def __init__(self, data: ImageDataset) -> None:
        self.pixels = data.pixels
        self.labels = data.labels

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.pixels[i], self.labels[i]


def train_pixels(
    task: PixelTask,
    model: nn.Module,
    train_config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    train_data: ImageDataset | None = None,
    eval_data: ImageDataset | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, float]:
    """Train ``model`` on the task with the shared :class:`Trainer`; returns its last metrics.

    ``train_data`` / ``eval_data`` default to the data set's train / valid splits.
    """
    train = train_data if train_data is not None else load_data(task.config, "train")
    valid = eval_data
    if valid is None and train_config.eval_every:
        valid = load_data(task.config, "valid")
    trainer = Trainer(
        model,
        task.loss_fn,
        TorchImages(train),
        train_config,
        run_dir,
        model_config=model_config(task, model),
        eval_data=TorchImages(valid) if valid is not None else None,
        eval_fn=task.eval_fn,
        count_tokens=task.count_tokens,
        device=device,
        progress=progress,
        tensorboard=False,
    )
    return trainer.fit(resume=resume)


def saved_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run dir's config.json ({"model": ..., "train": ...}); FileNotFoundError if absent."""
    import json

    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run dir {str(path)!r} does not exist")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{cfg} not found: {str(path)!r} is not a pixels run dir")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg} is not valid JSON: {err}") from err


def load_run(
    run_dir: str | os.PathLike[str], device: str = "cpu", use_ema: bool | None = None
) -> tuple[PixelTask, nn.Module]:
    """The task and trained denoiser (eval mode) of a run dir's latest checkpoint."""
    path = Path(run_dir)
    saved = saved_run_config(path)
    model_entry = saved.get("model")
    if not isinstance(model_entry, dict) or "task" not in model_entry:
        raise ValueError(f"{path / 'config.json'} was not written by the pixels task")
    task = PixelTask(PixelConfig.from_dict(model_entry["task"]))
    if not (path / "checkpoints").is_dir():
        raise FileNotFoundError(f"run dir {str(path)!r} has no checkpoints yet")
    model = load_model(path, build_model, use_ema=use_ema, device=device)
    return task, model


# ---------------------------------------------------------------------------------------------
# Likelihood
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Sampling and image grids
# ---------------------------------------------------------------------------------------------


def check_labels(task: PixelTask, labels: Tensor | list[int]) -> Tensor:
    """Labels as a (B,) long tensor in [0, num_labels); ValueError naming a bad one."""
    y = torch.as_tensor(labels)
    if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be a 1-D integer tensor, got {tuple(y.shape)} {y.dtype}")
    k = task.config.num_labels
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        bad = int(y[(y < 0) | (y >= k)][0])
        raise ValueError(f"label {bad} is out of range; {task.config.data} has labels 0..{k - 1}")
    return y.long()


@torch.no_grad()
def sample_images(
    task: PixelTask,
    model: nn.Module,
    labels: Tensor | list[int],
    *,
    guidance: float = 1.0,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """Draw one image per label: ids (N, H*W) in [0, levels).

    ``guidance`` is the classifier-free guidance scale (1 = the conditional model, 0 = the
    unconditional one). ``steps``: reverse steps (default min(T, 100)).
    """
    y = check_labels(task, labels)
    sampler = task.sampler(steps, guidance)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        out = _sample_batches(task, model, sampler, y, device, generator, batch_size, progress)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, task.config.num_pixels, dtype=torch.long)


def _sample_batches(
    task: PixelTask,
    model: nn.Module,
    sampler: AncestralSampler,
    y: Tensor,
    device: torch.device,
    generator: torch.Generator | None,
    batch_size: int,
    progress: bool,
) -> list[Tensor]:
    out = []
    for start in range(0, y.numel(), batch_size):
        yb = y[start : start + batch_size].to(device)
        res = sampler.sample(
            task.denoiser(model),
            task.process,
            (yb.numel(), task.config.num_pixels),
            cond={"label": yb},
            generator=generator,
            device=device,
            progress=progress,
        )
        out.append(res.samples.cpu())
    return out


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
    Image.fromarray(image_grid(ids, levels, height, width, ncol), mode="L").save(out)
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
