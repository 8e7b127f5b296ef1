"""A sample is one or more categorical fields; these helpers let one code path serve both.

Text and pixels are one field (a tensor); a molecule is several (a dict of field name -> tensor).
Losses and samplers normalise to dicts internally and hand the denoiser back the form it was
given, so single-field users never see the dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from discdiff.processes.base import Process

__all__ = ["SINGLE", "as_field_dict", "call_denoiser", "sum_positions", "Denoiser"]

#: the key used internally for a single-field sample
SINGLE = "x"

Denoiser = Callable[..., Any]


def as_field_dict(
    processes: Process | Mapping[str, Process], x: Any, name: str = "x0"
) -> tuple[dict, dict, bool]:
    """Normalise (process, tensor) or (dict, dict) to two dicts with the same keys, and a flag."""
    if isinstance(processes, Process):
        if isinstance(x, Mapping):
            raise TypeError(f"one process was given but {name} is a dict; pass a dict of processes")
        return {SINGLE: processes}, {SINGLE: x}, True
    if not isinstance(processes, Mapping) or not all(
        isinstance(p, Process) for p in processes.values()
    ):
        raise TypeError("processes must be a Process or a dict of field name -> Process")
    if not isinstance(x, Mapping):
        raise TypeError(f"a dict of processes needs {name} as a dict of field name -> tensor")
    if set(processes) != set(x):
        raise ValueError(
            f"{name} has fields {sorted(x)} but the processes have {sorted(processes)}"
        )
    return dict(processes), dict(x), False


def as_mask_dict(
    mask: Tensor | Mapping[str, Tensor] | None, x0: dict[str, Tensor], single: bool
) -> dict:
    """Per-field boolean masks (True = position counts); missing fields mean all positions."""
    if mask is None:
        return {}
    masks = {SINGLE: mask} if single and not isinstance(mask, Mapping) else dict(mask)
    for k, m in masks.items():
        if k not in x0:
            raise ValueError(f"mask names field {k!r}, which the sample does not have")
        if m.dtype != torch.bool:
            raise TypeError(f"mask for field {k!r} must be a bool tensor, got {m.dtype}")
        if m.shape != x0[k].shape:
            raise ValueError(
                f"mask for field {k!r} has shape {tuple(m.shape)}, expected {tuple(x0[k].shape)}"
            )
    return masks


def call_denoiser(
    denoiser: Denoiser,
    x_t: dict[str, Tensor],
    t: Tensor,
    cond: Any,
    single: bool,
    processes: dict[str, Process],
) -> dict[str, Tensor]:
    """Call ``denoiser(x_t, t[, cond])`` in the caller's form and check the logits' shapes."""
    arg = x_t[SINGLE] if single else x_t
    out = denoiser(arg, t) if cond is None else denoiser(arg, t, cond)
    logits = {SINGLE: out} if single else out
    if not isinstance(logits, Mapping) or set(logits) != set(x_t):
        raise ValueError(f"the denoiser must return logits for fields {sorted(x_t)}")
    for k, lg in logits.items():
        want = (*x_t[k].shape, processes[k].num_classes)
        if not isinstance(lg, Tensor) or tuple(lg.shape) != want:
            got = tuple(lg.shape) if isinstance(lg, Tensor) else type(lg).__name__
            field = "" if single else f" for field {k!r}"
            raise ValueError(f"denoiser logits{field} have shape {got}, expected {want}")
    return dict(logits)


def sum_positions(v: Tensor, mask: Tensor | None) -> Tensor:
    """Sum a per-position tensor (B, ...) over all but the batch dim, skipping masked-out positions."""
    if mask is not None:
        v = torch.where(mask, v, torch.zeros_like(v))
    return v.reshape(v.shape[0], -1).sum(1)
