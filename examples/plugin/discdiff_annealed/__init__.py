"""A minimal discdiff plug-in: one sampler, registered as "annealed".

Ancestral sampling whose temperature moves linearly from ``start`` (at t = 1) to ``end``
(at t = 0): diverse early choices, confident late ones. Installed with pip, it appears in
``discdiff text sample --sampler annealed`` (and pixels, molecules), in ``--help``, and in
the conformance suite, with no change to discdiff.
"""

from __future__ import annotations

import torch

import discdiff
from discdiff.samplers import AncestralSampler


class AnnealedSampler(AncestralSampler):
    """Ancestral sampling with the temperature annealed from ``start`` to ``end``."""

    def __init__(
        self,
        steps: int = 64,
        start: float = 1.0,
        end: float = 0.5,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
        grid_power: float = 1.0,
    ) -> None:
        super().__init__(
            steps, top_p=top_p, guidance=guidance, null_label=null_label, grid_power=grid_power
        )
        if not (start > 0 and end > 0):
            raise ValueError(f"start and end temperatures must be > 0, got {start}, {end}")
        self.start, self.end = float(start), float(end)

    def _denoise(self, run, x, t, cache):
        logp = run.log_probs(x, t)  # (B, ..., K) at temperature 1
        tau = (self.end + (self.start - self.end) * t).float()  # (B,)
        return {
            k: torch.log_softmax(v / tau.reshape(-1, *([1] * (v.dim() - 1))), dim=-1)
            for k, v in logp.items()
        }


discdiff.register_sampler("annealed", AnnealedSampler)
