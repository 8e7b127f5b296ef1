"""The text task's names for the spine's functions: a sampler by name, train, load a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from discdiff.samplers import Sampler
from discdiff.samplers import make_sampler as _make_sampler
from discdiff.training import TrainConfig

__all__ = ["make_sampler", "train_text", "load_text_run"]


def make_sampler(name: str, steps: int = 256, temperature: float = 1.0, **options: Any) -> Sampler:
    """A registered sampler by name (:func:`discdiff.samplers.make_sampler`), ``steps`` and
    ``temperature`` first; first-hitting ignores ``steps`` (one call per masked token)."""
    return _make_sampler(name, steps=steps, temperature=temperature, **options)


def train_text(
    task: Any,
    model: nn.Module,
    train_config: TrainConfig,
    run_dir: Any,
    *,
    loss_fn: Callable[[nn.Module, Any, torch.Generator], Tensor] | None = None,
    eval_fn: Callable[[nn.Module, Any, torch.Generator], Tensor] | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, float]:
    """:func:`discdiff.tasks.runs.train` for a text task (eval on "val")."""
    from discdiff.tasks import runs

    return runs.train(
        task,
        model,
        train_config,
        run_dir,
        resume=resume,
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        device=device,
        progress=progress,
        tensorboard=True,
    )


def load_text_run(
    run_dir: Any, device: str = "cpu", use_ema: bool | None = None
) -> tuple[Any, nn.Module]:
    """(task, model in eval mode) of a text run dir (:func:`discdiff.tasks.runs.load_run`)."""
    from discdiff.tasks import runs
    from discdiff.tasks.text import TextTask

    task, model = runs.load_run(run_dir, device=device, use_ema=use_ema)
    if not isinstance(task, TextTask):
        raise ValueError(f"{str(run_dir)!r} is a {task.name} run, not a text run")
    return task, model
