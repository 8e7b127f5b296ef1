"""Image pixels as one categorical field: data + denoiser + metrics plugged into the shared loops.

An image is one field ``(B, H*W)`` of intensity ids in ``[0, levels)`` (row-major, see
:mod:`discdiff.datasets.images`). Three forward processes run on the same denoiser (a
:class:`~discdiff.nn.TransformerDenoiser` with 2-D rotary positions and a class label):

- ``"absorbing"``: :class:`~discdiff.processes.Absorbing` with the log-linear schedule,
  continuous time, trained and scored with :func:`~discdiff.losses.continuous_elbo` (MDLM);
- ``"uniform"``: :class:`~discdiff.processes.Uniform`, continuous time, the same ELBO (UDLM);
  a continuous-time process trains on any registered objective (``objective``: score entropy,
  DFM, a newcomer's), scored with that objective's bound;
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

This module holds no loop of its own: training is :class:`~discdiff.training.Trainer` through
the spine (:mod:`discdiff.tasks.runs`), sampling any registered sampler (ancestral by default).
The config and the denoiser's options live in :mod:`discdiff.tasks.pixels.config`, the
metrics in :mod:`discdiff.tasks.pixels.metrics`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from discdiff.datasets.images import (
    ImageDataset,
    check_split,
    load_images,
)
from discdiff.losses import hybrid_loss, vlb_loss
from discdiff.nn import TransformerDenoiser
from discdiff.samplers import Sampler
from discdiff.tasks.base import Task, register_task, task_objective, x0_denoiser
from discdiff.tasks.pixels.config import (
    IMAGE_SHAPES,
    PROCESS_KINDS,
    ModelOptions,
    PixelConfig,
    build_model,
    make_denoiser,
    make_process,
    model_config,
    pixel_processes,
)
from discdiff.tasks.pixels.metrics import (
    PixelClassifier,
    bits_per_dim,
    classify,
    image_grid,
    label_agreement,
    nearest_neighbour_distances,
    sample_quality,
    save_grid,
    train_classifier,
)
from discdiff.tasks.probes import check_sample_count

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
    "check_labels",
    "load_data",
    "ImageDataset",
    "TorchImages",
    "pixel_processes",
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


@register_task("pixels")
class PixelTask(Task):
    """A :class:`PixelConfig` with its process and the loss functions the trainer calls.

    Batches are ``(pixels (B, H*W) long, labels (B,) long)`` as an :class:`ImageDataset`
    yields them through the default collate.
    """

    config_class = PixelConfig
    unit = "bits/dim"
    splits = ("train", "val", "valid", "test")
    #: the pixel task's training defaults (flags override; --resume keeps the run's)
    default_denoiser: ClassVar[str] = "transformer"
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 5000,
        "batch_size": 64,
        "lr": 5e-4,
        "warmup_steps": 0,
    }

    def __init__(self, config: PixelConfig) -> None:
        if not isinstance(config, PixelConfig):
            raise TypeError(f"config must be a PixelConfig, got {type(config).__name__}")
        self.config = config
        self.process = make_process(config)
        self.processes = {"pixels": self.process}
        self.objective = task_objective(config, self.process)
        self._data: dict[str, TorchImages] = {}

    @classmethod
    def example(cls, folder: Path) -> tuple[PixelTask, dict[str, Any]]:
        """scikit-learn's 8x8 digits at 4 levels (no download)."""
        task = cls(PixelConfig(data="digits", levels=4, process="absorbing"))
        return task, {"num_layers": 1, "d_model": 32, "num_heads": 2, "cond_dim": 32}

    # ---- the spine's pieces ---------------------------------------------------------------
    def denoiser_fields(self) -> dict[str, Any]:
        """Input ids, output levels, pixels per image, the (H, W) grid and the label count."""
        c = self.config
        return {
            "num_states": self.process.num_states,
            "num_classes": c.levels,
            "max_len": c.num_pixels,
            "grid": (c.height, c.width),
            "num_labels": c.num_labels,
        }

    def build_denoiser(self, **sizes: Any) -> TransformerDenoiser:
        """The 2-D transformer of :func:`make_denoiser` with ``ModelOptions(**sizes)``."""
        return make_denoiser(self.config, ModelOptions(**sizes), self.process.num_states)

    def check_model(self, model: nn.Module) -> None:
        cfg = getattr(model, "config", None)
        if (
            cfg is not None
            and getattr(cfg, "num_classes", self.config.levels) != self.config.levels
        ):
            raise ValueError(
                f"the denoiser predicts {cfg.num_classes} levels; the task has {self.config.levels}"
            )

    def attach_data(
        self, train: ImageDataset | None = None, val: ImageDataset | None = None
    ) -> None:
        """Images to train (and hold out) on instead of the data set's train / valid splits
        (a subset, or images of your own of the same shape and levels)."""
        if train is not None:
            self._data["train"] = TorchImages(train)
        if val is not None:
            self._data["valid"] = TorchImages(val)

    def dataset(self, split: str) -> TorchImages:
        """One split as a torch Dataset ("val" is the data set's "valid" split)."""
        split = "valid" if split == "val" else split
        if split not in self._data:
            self._data[split] = TorchImages(load_data(self.config, split))
        return self._data[split]

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator | None) -> Tensor:
        """The training objective (:meth:`loss_fn`)."""
        return self.loss_fn(model, batch, generator)

    def nll(self, model: nn.Module, batch: Any, generator: torch.Generator | None) -> Tensor:
        """The held-out bound (:meth:`eval_fn`)."""
        return self.eval_fn(model, batch, generator)

    def units(self, batch: Any) -> Tensor:
        """Pixels per image, (B,): the denominator of bits per dimension."""
        x0, _ = self._unpack(batch)
        return torch.full((x0.shape[0],), float(self.config.num_pixels), dtype=torch.float64)

    def sample(
        self,
        model: nn.Module,
        n: int,
        sampler: Sampler,
        *,
        generator: torch.Generator | None = None,
        progress: bool = False,
        labels: Tensor | list[int] | None = None,
        batch_size: int = 256,
        **conditioning: Any,
    ) -> Tensor:
        """``n`` images (n, H*W) ids with any sampler; ``labels`` (n,) default: cycle 0..C-1."""
        if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
            self.check_sample_count(n)
        if conditioning:
            raise ValueError(f"pixel samples take labels only, not {sorted(conditioning)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"-n must be >= 1, got {n}")
        y = torch.arange(n) % self.config.num_labels if labels is None else labels
        y = check_labels(self, y)
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        try:
            out = _sample_batches(self, model, sampler, y, device, generator, batch_size, progress)
        finally:
            model.train(was)
        return torch.cat(out)

    def check_sample_count(self, n: int) -> None:
        """Refuse ``n`` images that cannot fit in memory, in one line, before any work: each
        keeps its ids twice (the batches, then their concatenation) and its label."""
        check_sample_count(n, 16 * self.config.num_pixels + 16, "images")

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
        return self.objective.evaluate(
            self.process, den, x0, None, cond=cond, generator=generator, config=self.config
        )

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
        return self.objective.loss(
            self.process, den, x0, None, cond=cond, generator=generator, boundary=False,
            config=self.config,
        )  # fmt: skip

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

    def sampler_defaults(self) -> dict[str, Any]:
        """Reverse steps: min(T, 100) (at most T in discrete time)."""
        return {"steps": min(self.process.num_steps or 100, 100)}


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
    sampler = task.make_sampler("ancestral", steps=steps, guidance=guidance)
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
    sampler: Sampler,
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
            x0_denoiser(task.denoiser(model), task.objective, task.process),
            task.process,
            (yb.numel(), task.config.num_pixels),
            cond={"label": yb},
            generator=generator,
            device=device,
            progress=progress,
        )
        out.append(res.samples.cpu())
    return out
