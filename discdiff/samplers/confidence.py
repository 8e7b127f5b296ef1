"""MaskGIT-style confidence decoding for absorbing processes (Chang et al. 2022).

Start fully masked (except fixed positions). Each step: predict every masked position, draw a
candidate token from the (temperature / top-p controlled) prediction, score it by its
log-probability, and unmask the most confident candidates so that the number still masked
follows the schedule M * gamma((j + 1) / steps), gamma(r) = cos(pi r / 2) ("cosine") or
1 - r ("linear"), M the row's initial number of masked positions. Unmasked tokens are never
remasked; at least one token is unmasked per step while any remain; the last step unmasks all.
``choice_noise`` adds MaskGIT's annealed Gumbel randomness to the confidences (scale
choice_noise * (1 - (j + 1) / steps)); 0 ranks by confidence alone.
The denoiser is told the time whose alpha matches the fraction still masked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from discdiff.categorical import gumbel, sample_categorical
from discdiff.processes.base import Process
from discdiff.samplers.base import (
    Sampler,
    SamplingRun,
    _check_positive_int,
    flatten_fields,
    time_for_alpha,
    unflatten_fields,
)
from discdiff.samplers.caching import check_absorbing

__all__ = ["ConfidenceSampler"]

_SCHEDULES = ("cosine", "linear")


class ConfidenceSampler(Sampler):
    """Unmask the k most confident masked positions per step, k from a cosine/linear schedule."""

    def __init__(
        self,
        steps: int,
        schedule: str = "cosine",
        temperature: float = 1.0,
        top_p: float = 1.0,
        choice_noise: float = 0.0,
        guidance: float = 1.0,
        null_label: int | None = None,
    ) -> None:
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
        if not isinstance(choice_noise, (int, float)) or choice_noise < 0:
            raise ValueError(f"choice_noise must be a number >= 0, got {choice_noise!r}")
        self.schedule = schedule
        self.choice_noise = float(choice_noise)

    def check_processes(self, processes: dict[str, Process]) -> None:
        check_absorbing(self, processes)

    def masked_fraction(self, r: float) -> float:
        """gamma(r): the fraction of the initially masked positions still masked at progress r."""
        return math.cos(0.5 * math.pi * r) if self.schedule == "cosine" else 1.0 - r

    def steps_needed(self, initial: int) -> int:
        """The steps after which a row with ``initial`` masked positions has none left (the
        loop's own count, in the same float64 arithmetic): the sampler stops there."""
        left = initial
        for j in range(self.steps):
            if left == 0:
                return j
            r = (j + 1) / self.steps
            target = 0 if j == self.steps - 1 else math.floor(initial * self.masked_fraction(r))
            left -= min(left, max(left - target, 1))
        return self.steps

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        dev, gen = run.device, run.generator
        x = run.prior()
        run.record(x)
        schedule = next(iter(run.processes.values())).schedule
        masked = flatten_fields({k: x[k] == p.mask_id for k, p in run.processes.items()})  # (B, N)
        initial = masked.sum(1)  # (B,) M
        # how many steps the rows need follows from M alone: read once, not once per step
        needed = max((self.steps_needed(m) for m in set(initial.tolist())), default=0)
        for j in run.progress_bar(range(self.steps), total=self.steps):
            if j >= needed:
                break
            left = masked.sum(1)  # (B,)
            frac = left.double() / initial.clamp_min(1).double()  # fraction still masked
            t = time_for_alpha(schedule, 1.0 - frac)  # (B,)
            logp = run.log_probs(x, t)
            cand, conf = {}, {}
            for k, lp in logp.items():
                c = sample_categorical(lp, gen)  # (B, ...)
                cand[k] = c
                conf[k] = lp.gather(-1, c.unsqueeze(-1)).squeeze(-1)  # (B, ...) log-prob
            cand_f, conf_f = flatten_fields(cand), flatten_fields(conf)  # (B, N)
            r = (j + 1) / self.steps
            if self.choice_noise > 0:
                conf_f = conf_f + self.choice_noise * (1.0 - r) * gumbel(conf_f.shape, gen, dev)
            conf_f = conf_f.masked_fill(~masked, -torch.inf)
            target = torch.floor(initial.double() * self.masked_fraction(r)).long()  # (B,)
            if j == self.steps - 1:
                target = torch.zeros_like(target)
            k_unmask = (left - target).clamp_min(0)
            k_unmask = torch.maximum(k_unmask, (left > 0).long())  # progress every step
            order = conf_f.argsort(dim=1, descending=True, stable=True)  # (B, N)
            rank = torch.empty_like(order).scatter_(
                1, order, torch.arange(order.shape[1], device=dev).expand_as(order)
            )
            unmask = masked & (rank < k_unmask.unsqueeze(1))  # (B, N)
            flat = torch.where(unmask, cand_f, flatten_fields(x))
            x = run.apply_fixed(unflatten_fields(flat, x))
            masked = masked & ~unmask
            run.record(x)
        return x
