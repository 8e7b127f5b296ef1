"""Ancestral sampling for any process: x_1 ~ prior, then x_s ~ p(x_s | x_t) down a time grid.

The reverse step is the process's own x0-parameterised posterior (``process.posterior``), so
one loop serves uniform, absorbing, marginal and dense processes, discrete or continuous time,
and a step may skip any number of grid points (``steps`` < T). The last step goes to s = 0:
for absorbing processes it unmasks everything; for the others it is the process's posterior at
s = 0, a distribution over x_0 (with the "mean" parameterization: the prediction itself), which
is sampled (``final="sample"``) or replaced by its argmax (``final="argmax"``).

What the denoiser's logits mean is the process's business (its ``parameterization``: the
posterior mean, exact for true conditionals, or D3PM's eq. 4), so the sampler never converts.
Positions are drawn independently given x_t, so with few steps a non-absorbing process pays a
factorisation error; it vanishes as the step size goes to 0.

``constraint`` (:class:`~discdiff.constraints.Constraint`, supplied by a task): at the
steps it applies to, x_0 is drawn explicitly through it (from the normalised prediction) and
x_s ~ q(x_s | x_t, x_0); a subclass that keeps :meth:`_reverse_step` applies it too.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from discdiff.constraints import Constraint, as_constraint
from discdiff.samplers.base import (
    Sampler,
    SamplingRun,
    _check_positive_int,
    check_grid_power,
    time_grid,
)

__all__ = ["AncestralSampler"]

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
        final: str = "sample",
        grid_power: float = 1.0,
        constraint: Constraint | dict[str, Any] | None = None,
    ) -> None:
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        self.grid_power = check_grid_power(grid_power)
        if final not in _FINALS:
            raise ValueError(f"final must be one of {_FINALS}, got {final!r}")
        self.final = final
        self.constraint = as_constraint(constraint)
        if self.constraint is not None and final == "argmax":
            raise ValueError("a constraint draws the sample; final='argmax' cannot apply it")

    def check_processes(self, processes: dict[str, Any]) -> None:
        super().check_processes(processes)
        if self.constraint is not None:
            self.constraint.check_processes(processes)

    # ---- hooks for subclasses -------------------------------------------------------------
    def _new_cache(self, run: SamplingRun, grid: Tensor, x: dict[str, Tensor]) -> Any:
        """What a subclass keeps across steps, made once from the grid and the prior's x."""
        return None

    def _denoise(
        self, run: SamplingRun, x: dict[str, Tensor], t: Tensor, cache: Any
    ) -> dict[str, Tensor]:
        """x_0 logits for the whole batch at time t (B,): log-probabilities up to a constant per
        position (the processes' posteriors and draws normalise them, so no pass is spent on
        it here); normalised when temperature or top-p act on them."""
        if self.temperature == 1.0 and self.top_p == 1.0:
            return run.scores(x, t)
        return run.log_probs(x, t)

    # ---- the loop -------------------------------------------------------------------------
    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        grid = time_grid(run.processes, self.steps, self.grid_power)  # (n + 1,) from 1 to 0
        x = run.prior()
        run.record(x)
        cache = self._new_cache(run, grid, x)
        n = grid.numel() - 1
        # every step's (B,) times made at once: row i is a view (no allocation per step)
        times = run.grid_times(grid)
        for i in run.progress_bar(range(n), total=n):
            t, s = times[i], times[i + 1]
            logp = self._denoise(run, x, t, cache)
            x = self._step(run, x, logp, cache, s, t, last=i == n - 1)
            run.record(x)
        return x

    def _step(
        self,
        run: SamplingRun,
        x: dict[str, Tensor],
        logp: dict[str, Tensor],
        cache: Any,
        s: Tensor,
        t: Tensor,
        last: bool,
    ) -> dict[str, Tensor]:
        """One reverse step; a subclass whose step reads its cache overrides this."""
        return self._reverse_step(run, x, logp, s, t, last)

    def _reverse_step(
        self,
        run: SamplingRun,
        x: dict[str, Tensor],
        logp: dict[str, Tensor],
        s: Tensor,
        t: Tensor,
        last: bool,
    ) -> dict[str, Tensor]:
        """Draw x_s ~ p(x_s | x_t) for every field (the process's own draw, or the argmax of
        its posterior at the last step with ``final="argmax"``); through the constraint where
        it applies: x_0 drawn under it, then x_s ~ q(x_s | x_t, x_0)."""
        out = {}
        if self.constraint is not None and self.constraint.applies(last):
            x0 = self.constraint.draw(logp, run.fixed, run.generator, last)
            for k, proc in run.processes.items():
                out[k] = x0[k] if last else proc.sample_posterior(x[k], x0[k], s, t, run.generator)
            return run.apply_fixed(out)
        for k, proc in run.processes.items():
            if last and self.final == "argmax":
                out[k] = proc.posterior_log(x[k], logp[k], s, t).argmax(-1)  # (B, ...)
            else:
                out[k] = proc.sample_posterior(x[k], logp[k], s, t, run.generator)
        return run.apply_fixed(out)
