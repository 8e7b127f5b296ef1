"""Uniform transitions (D3PM uniform, multinomial diffusion): a corrupted token is redrawn uniformly."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from discdiff.processes.mixing import MixingProcess
from discdiff.schedules import Schedule

__all__ = ["Uniform"]


class Uniform(MixingProcess):
    """Qbar(t) = alpha(t) I + (1 - alpha(t)) 11^T / K over K states; the prior is uniform."""

    def __init__(
        self, num_classes: int, schedule: Schedule, parameterization: str = "mean"
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        super().__init__(
            num_classes,
            torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64),
            schedule,
            parameterization,
        )

    def rate_kl(self, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor) -> Tensor:
        """The reverse-rate KL; for the posterior-mean parameterisation in the closed form of
        :func:`discdiff.processes.rates.rate_kl_uniform` (O(K): one softmax and one log1p pass)."""
        if self.parameterization != "mean":
            return super().rate_kl(x_t, x0, logits, t)
        from discdiff.processes.rates import rate_kl_uniform

        return rate_kl_uniform(self, x_t, x0, logits, t)

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return torch.randint(0, self.num_classes, tuple(shape), generator=generator, device=device)
