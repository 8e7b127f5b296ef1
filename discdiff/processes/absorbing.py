"""Absorbing (mask) transitions (D3PM absorbing, MDLM, SEDD-absorb): a corrupted token becomes [MASK]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from discdiff.processes.base import expand_time
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

    def _mean_log(
        self, x_t: Tensor, logits: Tensor, a_s: Tensor, a_t: Tensor, ratio: Tensor
    ) -> Tensor:
        """The posterior mean in closed form, O(K) with one (..., K + 1) output: a masked x_t
        unmasks to k with probability (a_s - a_t) / (1 - a_t) p(k) and stays masked with
        (1 - a_s) / (1 - a_t); an unmasked one (or a mask at a_t = 1, which no x_0 explains)
        stays put. Equal to the mixing form (tests compare them) at a fraction of its passes,
        and without a host sync."""
        at = expand_time(a_t, x_t)  # (B, 1, ...) float64
        as_ = expand_time(a_s, x_t)
        free = 1.0 - at
        masked = (x_t == self.mask_id) & (free > 0)  # (...)
        safe = torch.where(free > 0, free, torch.ones_like(free))
        log_unmask = (torch.log(as_ - at) - torch.log(safe)).float().unsqueeze(-1)  # (B, 1.., 1)
        log_stay = (torch.log1p(-as_) - torch.log(safe)).float()
        K = self.num_classes
        z = x_t.unsqueeze(-1)
        if logits.requires_grad:  # a loss differentiates through it: no in-place work
            body = torch.cat(
                [
                    torch.log_softmax(logits.float(), dim=-1) + log_unmask,
                    log_stay.expand_as(x_t).unsqueeze(-1),
                ],
                dim=-1,
            )
            point = torch.full_like(body, -torch.inf).scatter(-1, z, 0.0)
            return torch.where(masked.unsqueeze(-1), body, point)
        out = torch.empty(*x_t.shape, K + 1, dtype=torch.float32, device=x_t.device)
        out[..., :K] = torch.log_softmax(logits.float(), dim=-1).add_(log_unmask)
        out[..., K] = log_stay.expand_as(x_t)
        out.masked_fill_(~masked.unsqueeze(-1), -torch.inf)
        keep = torch.where(
            masked.unsqueeze(-1), out.gather(-1, z), torch.zeros_like(z, dtype=out.dtype)
        )
        return out.scatter_(-1, z, keep)

    def sample_posterior(
        self,
        x_t: Tensor,
        x0: Tensor,
        s: Tensor | float,
        t: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The reverse step's draw with two uniforms per position instead of one Gumbel per state.

        A masked x_t unmasks with probability (a_s - a_t) / (1 - a_t) (one coin), and then to k
        with probability p(k) = softmax(logits)[k]
        (:func:`~discdiff.categorical.sample_inverse_cdf`); every other position stays put. Same law as
        :meth:`posterior` for the posterior-mean logits (for absorbing processes D3PM's form is
        the same); ids x_0 and the d3pm parameterization take the generic draw.
        """
        if not torch.is_floating_point(x0) or self.parameterization != "mean":
            return super().sample_posterior(x_t, x0, s, t, generator)
        from discdiff.categorical import sample_inverse_cdf, uniform

        x_t, _, s, t = self._reverse_inputs(x_t, x0, s, t)
        dev = x_t.device
        a_s = expand_time(self.schedule.alpha(s).to(dev), x_t)  # (B, 1..) float64
        a_t = expand_time(self.schedule.alpha(t).to(dev), x_t)
        free = 1.0 - a_t
        unmask_p = (a_s - a_t) / torch.where(free > 0, free, torch.ones_like(free))
        coin = uniform(x_t.shape, generator, dev, torch.float64)
        unmask = (x_t == self.mask_id) & (free > 0) & (coin < unmask_p)  # (...)
        return torch.where(unmask, sample_inverse_cdf(x0, generator), x_t)

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        return torch.full(tuple(shape), self.mask_id, dtype=torch.long, device=device)
