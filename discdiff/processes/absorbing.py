"""Absorbing (mask) transitions (D3PM absorbing, MDLM, SEDD-absorb): a corrupted token becomes [MASK]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from discdiff.processes.mixing import MixingProcess
from discdiff.schedules import Schedule

__all__ = ["Absorbing"]


class Absorbing(MixingProcess):
    """K data classes plus a mask state with id ``mask_id = K`` (K + 1 states in all).

    Qbar(t) = alpha(t) I + (1 - alpha(t)) 1 e_mask^T: once masked a token stays masked, so the
    reverse step copies unmasked tokens and only masked positions can change.
    """

    def __init__(
        self, num_classes: int, schedule: Schedule, parameterization: str = "mean"
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        limit = torch.zeros(num_classes + 1, dtype=torch.float64)
        limit[num_classes] = 1.0
        super().__init__(num_classes, limit, schedule, parameterization)
        self.mask_id = num_classes

    def rate_kl(self, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor) -> Tensor:
        """MDLM's integrand: -alpha'(t) / (1 - alpha(t)) times the x_0 cross-entropy where
        x_t is masked, (B, ...)."""
        from discdiff.processes.rates import rate_kl_masked

        return rate_kl_masked(self, x_t, x0, logits, t)

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return torch.full(tuple(shape), self.mask_id, dtype=torch.long, device=device)
