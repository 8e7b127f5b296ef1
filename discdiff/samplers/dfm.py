"""Discrete flow matching's Euler solver on a mixture path (Gat et al. 2024).

Flow time tau = 1 - t runs from the source (the process's limit: mask, uniform or a prior) to
the data, kappa_tau = alpha(t). Each of ``steps`` steps from tau to tau + h: draw x1 ~
p(x1 | x_tau) at every position (the denoiser; a decoded token of a mask path is its own x1),
form the conditional velocity

    u(y) = kappa' / (1 - kappa) [y = x1]
           + c kappa' / (kappa (1 - kappa)) [(1 - kappa) p_source(y) + kappa [y = x1]]

(the second line, with c = ``div_free``, is the divergence-free corrector term: it leaves the
path's marginals unchanged and lets decoded tokens move again, e.g. be masked anew), set
u(x_tau) = 0, and jump with probability 1 - exp(-h sum_y u(y)) to y ~ u. The last step takes
x1 itself. First order in h: the law converges to the model's as the steps grow.
"""

from __future__ import annotations

import torch
from torch import Tensor

from discdiff.categorical import one_hot, sample_categorical, uniform
from discdiff.processes.base import Process, expand_time
from discdiff.samplers.base import (
    Sampler,
    SamplingRun,
    _check_positive_int,
    check_grid_power,
    time_grid,
)
from discdiff.samplers.scores import _check_mixing

__all__ = ["DFMEulerSampler"]


class DFMEulerSampler(Sampler):
    """Euler steps of the mixture path's probability velocity (``steps`` calls)."""

    def __init__(
        self,
        steps: int,
        div_free: float = 0.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
        grid_power: float = 1.0,
    ) -> None:
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        if isinstance(div_free, bool) or not isinstance(div_free, (int, float)) or div_free < 0:
            raise ValueError(f"div_free must be a number >= 0, got {div_free!r}")
        self.div_free = float(div_free)
        self.grid_power = check_grid_power(grid_power)

    def check_processes(self, processes: dict[str, Process]) -> None:
        _check_mixing(self, processes)

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        gen = run.generator
        grid = time_grid(run.processes, self.steps, self.grid_power)  # diffusion t: 1 -> 0
        x = run.prior()
        run.record(x)
        n = grid.numel() - 1
        times = run.grid_times(grid)  # (n + 1, B)
        for i in run.progress_bar(range(n), total=n):
            t, s = times[i], times[i + 1]
            logp = run.log_probs(x, t)
            out = {}
            for k, proc in run.processes.items():
                x1 = sample_categorical(logp[k], gen)  # (B, ..)
                mask_id = getattr(proc, "mask_id", None)
                if mask_id is not None:
                    x1 = torch.where(x[k] != mask_id, x[k], x1)  # carry-over
                if i == n - 1:
                    out[k] = x1
                    continue
                out[k] = self._jump(proc, x[k], x1, t, s, gen)
            x = run.apply_fixed(out)
            run.record(x)
        return x

    def _jump(self, proc: Process, x: Tensor, x1: Tensor, t: Tensor, s: Tensor, gen) -> Tensor:  # noqa: ANN001
        S = proc.num_states
        kappa = proc.schedule.alpha(t)  # (B,) float64
        dkappa = -proc.schedule.alpha_prime(t)  # d kappa / d tau
        h = (t - s).double()
        coef = torch.where(kappa < 1, dkappa / (1.0 - kappa).clamp_min(1e-300), 0.0)
        onehot1 = one_hot(x1.long(), S, torch.float64)  # (B, .., S)
        u = expand_time(coef, x).unsqueeze(-1) * onehot1
        if self.div_free > 0:
            inside = (kappa > 0) & (kappa < 1)
            c = torch.where(
                inside, self.div_free * dkappa / (kappa * (1.0 - kappa)).clamp_min(1e-300), 0.0
            )
            src = proc.limit_on(x.device)  # (S,)
            k_ = expand_time(kappa, x).unsqueeze(-1)
            u = u + expand_time(c, x).unsqueeze(-1) * ((1.0 - k_) * src + k_ * onehot1)
        here = one_hot(x.long(), S, torch.bool)
        u = torch.where(here, torch.zeros_like(u), u)
        intensity = u.sum(-1)  # (B, ..)
        jump = uniform(x.shape, gen, x.device).double() < -torch.expm1(
            -expand_time(h, x) * intensity
        )
        target = sample_categorical(torch.log(u.float().clamp_min(0.0)), gen)
        return torch.where(jump & (intensity > 0), target, x)
