"""ReMDM: remasking for absorbing models (Wang et al. 2025, "Remasking discrete diffusion models
with inference-time scaling").

Ancestral sampling of a masked model never revisits a decoded token. ReMDM's reverse step from
t to s < t lets it: with alpha_t = alpha(t), alpha_s = alpha(s) and a remasking probability
sigma_t in [0, sigma_max], sigma_max = min(1, (1 - alpha_s) / alpha_t),

    decoded token x:   stays x with prob. 1 - sigma_t, is masked again with prob. sigma_t;
    masked token:      becomes v with prob. p(v | x_t) (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t),
                       stays masked with prob. (1 - alpha_s - sigma_t alpha_t) / (1 - alpha_t).

These keep the forward marginals q(x_t | x_0) of the masked process, so any admissible sigma
gives a valid sampler; sigma = 0 is exactly ancestral (MDLM) sampling. Strategies:

- ``cap``: sigma_t = min(eta, sigma_max);
- ``rescale``: sigma_t = eta * sigma_max (eta in [0, 1]);
- ``loop``: three phases on the time grid. For t > t_on the masked fraction is decoded as in
  MDLM down to alpha_on (alpha remapped linearly, 0 at t = 1, alpha_on at t_on); for
  t_off < t <= t_on alpha stays at alpha_on and each step remasks with sigma = min(eta,
  sigma_max) while unmasking as many (the "loop" that revises decoded tokens); for t <= t_off
  MDLM decodes the rest (alpha from alpha_on to 1 at t = 0).

The denoiser is told the time whose alpha under the process's schedule equals the alpha used
(the same as the grid time outside ``loop``). Fixed positions are never remasked.
"""

from __future__ import annotations

import torch
from torch import Tensor

from discdiff.categorical import sample_categorical, uniform
from discdiff.processes.base import Process
from discdiff.samplers.base import (
    Sampler,
    SamplingRun,
    _check_positive_int,
    check_grid_power,
    time_for_alpha,
    time_grid,
)
from discdiff.samplers.caching import check_absorbing

__all__ = ["ReMDMSampler", "STRATEGIES"]

STRATEGIES = ("cap", "rescale", "loop")


class ReMDMSampler(Sampler):
    """Ancestral sampling of an absorbing model with ReMDM remasking (``steps`` calls)."""

    def __init__(
        self,
        steps: int,
        strategy: str = "cap",
        eta: float = 0.02,
        t_on: float = 0.55,
        t_off: float = 0.05,
        alpha_on: float = 0.9,
        temperature: float = 1.0,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
        grid_power: float = 1.0,
    ) -> None:
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        for name, v in (("t_on", t_on), ("t_off", t_off), ("alpha_on", alpha_on)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")
        if not t_off < t_on:
            raise ValueError(f"t_off ({t_off}) must be below t_on ({t_on})")
        self.strategy = strategy
        self.eta = float(eta)
        self.t_on, self.t_off, self.alpha_on = float(t_on), float(t_off), float(alpha_on)
        self.grid_power = check_grid_power(grid_power)

    def check_processes(self, processes: dict[str, Process]) -> None:
        check_absorbing(self, processes)

    def alphas(self, schedule: object, grid: Tensor) -> Tensor:
        """alpha at each grid time, (n + 1,) float64: the schedule's, or the loop's remap."""
        if self.strategy != "loop":
            return schedule.alpha(grid)  # type: ignore[attr-defined]
        a_on, t_on, t_off = self.alpha_on, self.t_on, self.t_off
        early = (1.0 - grid) * a_on / (1.0 - t_on)  # t > t_on: 0 at t = 1 -> alpha_on
        late = 1.0 - grid * (1.0 - a_on) / t_off  # t <= t_off: alpha_on -> 1 at t = 0
        return torch.where(grid > t_on, early, torch.where(grid <= t_off, late, a_on))

    def sigmas(self, grid: Tensor, a: Tensor) -> Tensor:
        """Remasking probability of each step i (from grid[i] to grid[i + 1]), (n,) float64."""
        a_t, a_s = a[:-1], a[1:]
        cap = torch.where(a_t > 0, (1.0 - a_s) / a_t.clamp_min(1e-300), torch.ones_like(a_t))
        cap = cap.clamp(0.0, 1.0)
        if self.strategy == "cap":
            return torch.minimum(torch.full_like(cap, self.eta), cap)
        if self.strategy == "rescale":
            return self.eta * cap
        looping = (grid[:-1] <= self.t_on) & (grid[:-1] > self.t_off)
        return torch.where(looping, torch.minimum(torch.full_like(cap, self.eta), cap), 0.0)

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        gen, dev = run.generator, run.device
        schedule = next(iter(run.processes.values())).schedule
        grid = time_grid(run.processes, self.steps, self.grid_power)  # (n + 1,) 1 -> 0
        a = self.alphas(schedule, grid)  # (n + 1,)
        sig = self.sigmas(grid, a)  # (n,)
        # the time the denoiser is told: the grid's, or the one whose alpha the loop uses
        told = grid if self.strategy != "loop" else time_for_alpha(schedule, a)
        a, sig, told = a.to(dev), sig.to(dev), run.grid_times(told)  # told: (n + 1, B)
        x = run.prior()
        run.record(x)
        n = grid.numel() - 1
        for i in run.progress_bar(range(n), total=n):
            logp = run.log_probs(x, told[i])
            a_t, a_s, s = a[i], a[i + 1], sig[i]
            unmask = ((a_s - (1.0 - s) * a_t) / (1.0 - a_t).clamp_min(1e-300)).clamp(0.0, 1.0)
            out = {}
            for k, proc in run.processes.items():
                m = proc.mask_id
                masked = x[k] == m
                draw = sample_categorical(logp[k], gen)  # (B, ...) v ~ p(v | x_t)
                u = uniform(x[k].shape, gen, dev).double()
                decoded = torch.where(u < unmask, draw, torch.full_like(draw, m))
                kept = torch.where(u < s, torch.full_like(x[k], m), x[k])
                out[k] = torch.where(masked, decoded, kept)
            x = run.apply_fixed(out)
            run.record(x)
        return x
