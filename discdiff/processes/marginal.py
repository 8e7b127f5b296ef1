"""Marginal transitions (DiGress): a corrupted token is redrawn from the data's class frequencies."""

from __future__ import annotations

import torch
from torch import Tensor

from discdiff.processes.mixing import MixingProcess
from discdiff.schedules import Schedule

__all__ = ["Marginal"]


class Marginal(MixingProcess):
    """Qbar(t) = alpha(t) I + (1 - alpha(t)) 1 m^T with m a given prior over the K classes.

    DiGress shows that the data marginals make the prior close to the data, which helps graphs.
    """

    def __init__(
        self, prior: Tensor | list[float], schedule: Schedule, parameterization: str = "mean"
    ) -> None:
        m = torch.as_tensor(prior, dtype=torch.float64).flatten()
        if m.numel() < 1:
            raise ValueError("the prior needs at least one class")
        if bool((m < 0).any()) or not bool(torch.isfinite(m).all()):
            raise ValueError("prior probabilities must be finite and non-negative")
        total = float(m.sum())
        if abs(total - 1.0) > 1e-4:
            raise ValueError(f"prior probabilities must sum to 1, got {total:.6g}")
        super().__init__(int(m.numel()), m / total, schedule, parameterization)

    @classmethod
    def from_data(
        cls,
        x: Tensor,
        num_classes: int,
        schedule: Schedule,
        mask: Tensor | None = None,
        smoothing: float = 0.0,
        parameterization: str = "mean",
    ) -> Marginal:
        """Prior = class frequencies of ids ``x`` (positions where ``mask`` is True), plus smoothing."""
        if torch.is_floating_point(x):
            raise TypeError(f"x must hold integer ids, got dtype {x.dtype}")
        vals = x[mask] if mask is not None else x.flatten()
        counts = torch.bincount(vals.long().flatten().cpu(), minlength=num_classes).double()
        if counts.numel() > num_classes:
            raise ValueError(f"x has id {counts.numel() - 1} outside [0, {num_classes})")
        counts = counts + smoothing
        if float(counts.sum()) <= 0:
            raise ValueError("no counted positions: cannot estimate a prior")
        return cls(counts / counts.sum(), schedule, parameterization)
