"""What a training step returns, and the shapes a loss function may return."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

__all__ = ["StepResult", "split_loss", "check_per_example"]


@dataclass
class StepResult:
    """One optimizer step: mean loss (device scalar), gradient norm before clipping (or None),
    examples and tokens seen, and the mean of each named metric (device scalars)."""

    loss: Tensor
    grad_norm: Tensor | None
    items: int
    tokens: int | Tensor
    metrics: dict[str, Tensor]


def split_loss(values: object, name: str) -> tuple[Tensor, dict[str, Tensor]]:
    """A loss function's output as (per-example loss (B,), named per-example metrics).

    A loss may return the (B,) tensor alone, or a dict with ``"loss"`` (B,) and other (B,)
    tensors, which the Trainer averages and logs as ``train_<name>`` / ``eval_<name>``.
    """
    if isinstance(values, Mapping):
        if "loss" not in values:
            raise ValueError(f"{name} returned a dict without 'loss': {sorted(values)}")
        named = {}
        for key, v in values.items():
            if key == "loss":
                continue
            if not isinstance(v, Tensor) or v.dim() != 1:
                raise ValueError(f"{name}'s metric {key!r} must be a (B,) tensor")
            named[key] = v
        return check_per_example(values["loss"], name), named
    return check_per_example(values, name), {}


def check_per_example(values: object, name: str) -> Tensor:
    if not isinstance(values, Tensor):
        raise TypeError(
            f"{name} must return a tensor of per-example losses, got {type(values).__name__}"
        )
    if values.dim() != 1:
        raise ValueError(
            f"{name} must return per-example losses of shape (B,), got shape {tuple(values.shape)}"
        )
    return values
