"""Ancestral sampling for any process: x_1 ~ prior, then x_s ~ p(x_s | x_t) down a time grid.

The reverse step is the process's own x0-parameterised posterior (``process.posterior``), so
one loop serves uniform, absorbing, marginal and dense processes, discrete or continuous time,
and a step may skip any number of grid points (``steps`` < T). The last step goes to s = 0:
for absorbing processes it unmasks everything; for the others it is the posterior at s = 0,
p(x_0 = y | x_t) proportional to p~(y) q(x_t | y) (``final="sample"``), or its argmax
(``final="argmax"``).

What the denoiser's logits mean (``prediction``):
- ``"d3pm"`` (default): logits p~(x_0 | x_t) plugged into the posterior formula as D3PM eq. 4
  and UDLM do, p(x_s | x_t) ~ sum_x0 q(x_t | x_s) q(x_s | x_0) p~(x_0). This is the
  parameterisation that :func:`discdiff.losses.vlb_loss` and ``continuous_elbo`` fit.
- ``"posterior"``: logits are the Bayes posterior log p(x_0 | x_t) (what plain cross-entropy
  training or an exact oracle gives). The exact reverse step is then
  sum_x0 q(x_s | x_t, x_0) p(x_0 | x_t), which equals the D3PM formula applied to
  p(x_0 | x_t) / q(x_t | x_0); the sampler makes that correction (O(K) per position).
For absorbing processes the two coincide (q(x_t = mask | x_0) does not depend on x_0).
Positions are drawn independently given x_t, so with few steps a non-absorbing process pays a
factorisation error; it vanishes as the step size goes to 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from discdiff.categorical import sample_categorical
from discdiff.samplers.base import (
    Sampler,
    SamplingRun,
    _check_positive_int,
    time_grid,
    x_t_log_likelihood,
)

__all__ = ["AncestralSampler"]

_PREDICTIONS = ("d3pm", "posterior")
_FINALS = ("sample", "argmax")


class AncestralSampler(Sampler):
    """Reverse the process on ``steps`` grid steps from t = 1 to t = 0 (one call per step)."""

    def __init__(
        self,
        steps: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
        prediction: str = "d3pm",
        final: str = "sample",
    ) -> None:
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        if prediction not in _PREDICTIONS:
            raise ValueError(f"prediction must be one of {_PREDICTIONS}, got {prediction!r}")
        if final not in _FINALS:
            raise ValueError(f"final must be one of {_FINALS}, got {final!r}")
        self.prediction = prediction
        self.final = final

    # ---- hooks for subclasses -------------------------------------------------------------
    def _new_cache(self) -> Any:
        return None

    def _denoise(
        self, run: SamplingRun, x: dict[str, Tensor], t: Tensor, cache: Any
    ) -> dict[str, Tensor]:
        """x_0 log-probabilities for the whole batch at time t (B,)."""
        return run.log_probs(x, t)

    # ---- the loop -------------------------------------------------------------------------
    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        grid = time_grid(run.processes, self.steps)  # (n + 1,) from 1 to 0
        x = run.prior()
        run.record(x)
        cache = self._new_cache()
        n = grid.numel() - 1
        for i in run.progress_bar(range(n), total=n):
            t, s = run.full_time(grid[i]), run.full_time(grid[i + 1])
            logp = self._denoise(run, x, t, cache)
            x = self._reverse_step(run, x, logp, s, t, last=i == n - 1)
            run.record(x)
        return x

    def _reverse_step(
        self,
        run: SamplingRun,
        x: dict[str, Tensor],
        logp: dict[str, Tensor],
        s: Tensor,
        t: Tensor,
        last: bool,
    ) -> dict[str, Tensor]:
        """Draw x_s ~ p(x_s | x_t) for every field (one Gumbel per state and position)."""
        out = {}
        for k, proc in run.processes.items():
            lp = logp[k]  # (B, ..., K)
            if self.prediction == "posterior":
                ll = x_t_log_likelihood(proc, x[k], t)  # (B, ..., K) log q(x_t | x_0)
                adj = torch.where(torch.isneginf(ll), torch.full_like(lp, -torch.inf), lp - ll)
                none_left = torch.isneginf(adj).all(-1, keepdim=True)  # guard: keep lp there
                lp = torch.where(none_left, lp, adj)
            post = proc.posterior_log(x[k], lp, s, t)  # (B, ..., S)
            draw = sample_categorical(post, run.generator)  # (B, ...)
            out[k] = post.argmax(-1) if (last and self.final == "argmax") else draw
        return run.apply_fixed(out)
