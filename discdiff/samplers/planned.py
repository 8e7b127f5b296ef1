"""Planned unmasking for absorbing models: which positions to decode next, and (P2) which
decoded ones to revise.

Each of ``steps`` steps predicts every position, draws a candidate token at each masked one,
and scores positions; after step i exactly floor(N (1 - kappa(i / steps))) of a row's N free
positions are masked, the lowest-scored ones (kappa: ``"linear"`` r, or ``"cosine"``
1 - cos(pi r / 2); the last step decodes all). A masked position that is not among them takes
its candidate. Orders (the score of a masked position):

- ``confidence``: log p(candidate) (MaskGIT's; Chang et al. 2022);
- ``margin``: p(top class) - p(second class) of the prediction;
- ``entropy``: minus the prediction's entropy (sure positions first);
- ``random``: a uniform random score (with ``steps`` = N this is exact one-token-at-a-time
  sampling in a random order, as ancestral sampling is in the limit).

Self-planning (P2, Peng et al. 2025): with ``eta > 0`` (confidence order) decoded positions
compete too, scored by eta * log p(current token | x) from the same denoiser call, so a
decoded token the model no longer believes is masked again and re-drawn later; eta = 0 never
revisits a decoded token (larger eta revises more). P2's reference scores a fresh draw at a
decoded position; with a carry-over model that draw is the current token, and scoring the
current token is what the planner means for any model. Fixed positions are never masked.
The denoiser is told the time whose alpha matches the fraction of positions still masked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from discdiff.categorical import sample_categorical, uniform
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

__all__ = ["PlannedSampler", "ORDERS"]

ORDERS = ("confidence", "margin", "entropy", "random")
_KAPPAS = ("linear", "cosine")


class PlannedSampler(Sampler):
    """Decode the best-scored masked positions each step (confidence, margin, entropy or
    random order); ``eta > 0`` lets the model remask decoded tokens it doubts (P2)."""

    def __init__(
        self,
        steps: int,
        order: str = "confidence",
        eta: float = 0.0,
        kappa: str = "linear",
        temperature: float = 1.0,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
    ) -> None:
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if kappa not in _KAPPAS:
            raise ValueError(f"kappa must be one of {_KAPPAS}, got {kappa!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0:
            raise ValueError(f"eta must be a number >= 0, got {eta!r}")
        if eta > 0 and order != "confidence":
            raise ValueError(
                "self-planning (eta > 0) ranks decoded tokens by eta * log p: it needs "
                f"order='confidence', got {order!r}"
            )
        self.order, self.eta, self.kappa = order, float(eta), kappa

    def check_processes(self, processes: dict[str, Process]) -> None:
        check_absorbing(self, processes)

    def unmasked_fraction(self, r: float) -> float:
        """kappa(r): the fraction of free positions decoded after progress r in [0, 1]."""
        return r if self.kappa == "linear" else 1.0 - math.cos(0.5 * math.pi * r)

    def _scores(self, lp: Tensor, cand: Tensor, gen: object) -> Tensor:
        """Scores of masked positions (their candidates), and of decoded ones under P2."""
        if self.order == "confidence":
            return lp.gather(-1, cand.unsqueeze(-1)).squeeze(-1)
        if self.order == "margin":
            top = lp.exp().topk(min(2, lp.shape[-1]), dim=-1).values  # (B, ..., 2)
            return top[..., 0] - (top[..., 1] if top.shape[-1] > 1 else 0.0)
        if self.order == "entropy":
            p = lp.exp()
            return (p * lp.clamp_min(-1e30)).sum(-1)  # -H
        return uniform(cand.shape, gen, cand.device)  # type: ignore[arg-type]

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        dev, gen = run.device, run.generator
        x = run.prior()
        run.record(x)
        schedule = next(iter(run.processes.values())).schedule
        free = flatten_fields(
            {
                k: run.free_mask(k) if k in run.fixed else torch.ones_like(v, dtype=torch.bool)
                for k, v in x.items()
            }
        )  # fmt: skip  (B, N)
        mask_ids = {k: p.mask_id for k, p in run.processes.items()}
        total = free.sum(1)  # (B,) N: free positions of each row
        for j in run.progress_bar(range(self.steps), total=self.steps):
            masked = flatten_fields({k: x[k] == m for k, m in mask_ids.items()})  # (B, N)
            frac = masked.sum(1).double() / total.clamp_min(1).double()
            logp = run.log_probs(x, time_for_alpha(schedule, 1.0 - frac))
            cand, score, keep = {}, {}, {}
            for k, lp in logp.items():
                c = sample_categorical(lp, gen)  # (B, ...)
                cand[k] = c
                score[k] = self._scores(lp, c, gen)
                if self.eta > 0:
                    cur = x[k].clamp_max(lp.shape[-1] - 1)  # masked ids are not scored here
                    keep[k] = self.eta * lp.gather(-1, cur.unsqueeze(-1)).squeeze(-1)
            s = flatten_fields(score)  # (B, N)
            if self.eta > 0:
                s = torch.where(masked, s, flatten_fields(keep))
            else:
                s = s.masked_fill(~masked, torch.inf)  # decoded tokens stay
            s = s.masked_fill(~free, torch.inf)  # fixed positions are never masked
            r = (j + 1) / self.steps
            target = torch.floor(total.double() * (1.0 - self.unmasked_fraction(r))).long()
            if j == self.steps - 1:
                target = torch.zeros_like(target)
            order = s.argsort(dim=1, stable=True)  # (B, N) lowest first
            rank = torch.empty_like(order).scatter_(
                1, order, torch.arange(order.shape[1], device=dev).expand_as(order)
            )
            to_mask = rank < target.unsqueeze(1)  # (B, N) the `target` lowest-scored
            flat_x, flat_c = flatten_fields(x), flatten_fields(cand)
            mask_flat = flatten_fields({k: torch.full_like(x[k], m) for k, m in mask_ids.items()})
            new = torch.where(masked & ~to_mask, flat_c, flat_x)  # decode the rest
            new = torch.where(to_mask, mask_flat, new)
            x = run.apply_fixed(unflatten_fields(new, x))
            run.record(x)
        return x
