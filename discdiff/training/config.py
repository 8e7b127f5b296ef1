"""Training configuration (a frozen dataclass saved as JSON) and the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from discdiff.training.device import PRECISIONS

__all__ = ["TrainConfig", "lr_at"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's math (saved as JSON in the run dir).

    steps: optimizer steps in total. batch_size: examples per optimizer step over all ranks and
    accumulation micro-steps (must divide by world_size * grad_accum in Dataset mode).
    lr: peak learning rate, reached after ``warmup_steps`` of linear warm-up, then cosine decay
    to ``min_lr`` (None = lr / 10) at ``steps``. weight_decay: AdamW decay, applied to
    parameters with 2 or more dimensions only (not biases or norm gains). grad_clip: max global
    gradient norm (None = off). ema_decay: EMA of weights (None = off). precision: "auto"
    (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16". compile: ``torch.compile`` the model.
    eval_every / ckpt_every / log_every: periods in steps (0 = never; a checkpoint and a log row
    are always written at the last step). eval_batches: global batches per evaluation
    (None = the whole eval set). keep_checkpoints: how many newest checkpoints to keep.
    skip_nonfinite: skip up to this many batches whose loss or gradient is not finite (0 = stop
    at the first, naming its step); skipping reads the loss back every step.
    """

    steps: int = 10_000
    batch_size: int = 64
    lr: float = 3e-4
    min_lr: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    ema_decay: float | None = None
    precision: str = "auto"
    compile: bool = False
    eval_every: int = 0
    eval_batches: int | None = None
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    skip_nonfinite: int = 0
    data_on_device: bool | None = None
    time_budget: float | None = None
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            low = 0 if allow_zero else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"TrainConfig.{name} must be an int >= {low}, got {value!r}")

        for name in ("steps", "batch_size", "grad_accum", "keep_checkpoints", "log_every"):
            positive_int(name)
        for name in ("warmup_steps", "eval_every", "ckpt_every", "seed", "skip_nonfinite"):
            positive_int(name, allow_zero=True)
        if self.eval_batches is not None:
            positive_int("eval_batches")
        for name in ("lr", "eps"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"TrainConfig.{name} must be a finite float > 0, got {value!r}")
        if self.min_lr is not None and not (0 <= self.min_lr <= self.lr):
            raise ValueError(
                f"TrainConfig.min_lr must lie in [0, lr={self.lr}], got {self.min_lr!r}"
            )
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, int | float) or not 0 <= wd < math.inf:
            raise ValueError(f"TrainConfig.weight_decay must be a finite number >= 0, got {wd!r}")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
            raise ValueError(f"TrainConfig.betas must be two floats in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if self.grad_clip is not None and not 0 < self.grad_clip < math.inf:
            raise ValueError(
                f"TrainConfig.grad_clip must be a finite number > 0 or None, got {self.grad_clip!r}"
            )
        if self.ema_decay is not None and not (0 <= self.ema_decay < 1):
            raise ValueError(
                f"TrainConfig.ema_decay must lie in [0, 1) or be None, got {self.ema_decay!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if self.data_on_device is not None and not isinstance(self.data_on_device, bool):
            raise ValueError(
                f"TrainConfig.data_on_device must be a bool or None, got {self.data_on_device!r}"
            )
        tb = self.time_budget
        if tb is not None and (
            isinstance(tb, bool) or not isinstance(tb, int | float) or not 0 < tb < math.inf
        ):
            raise ValueError(f"TrainConfig.time_budget must be a finite number > 0, got {tb!r}")
        for name in ("compile", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def final_lr(self) -> float:
        """The learning rate the cosine decay ends at."""
        return self.lr / 10 if self.min_lr is None else float(self.min_lr)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able field values."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig field(s) {unknown}; expected some of {sorted(known)}"
            )
        kwargs = dict(data)
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(**kwargs)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine decay.

    Warm-up: lr * (step + 1) / warmup_steps for step < warmup_steps (never 0 at step 0).
    Decay: final_lr + (lr - final_lr) * (1 + cos(pi * p)) / 2 with
    p = (step - warmup_steps) / (steps - warmup_steps), clamped to [0, 1].
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = config.steps - config.warmup_steps
    if decay_steps <= 0:
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return config.final_lr + 0.5 * (config.lr - config.final_lr) * (
        1 + math.cos(math.pi * progress)
    )
