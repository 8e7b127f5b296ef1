"""SUNDAE sampling (Savinov et al. 2022, "Step-unrolled denoising autoencoders") for uniform noise.

Start from uniform noise. Each step the denoiser predicts every position; a proposal is drawn
from the prediction at the sampler's temperature, and a random proportion of the positions is
replaced by the proposal. The proportion is a fixed fraction, or annealed linearly from
``proportion[0]`` to ``proportion[1]``. With ``early_stop`` a row stops once ``patience``
steps in a row leave it unchanged (the updated sequence equals the previous one); sampling ends
when every row has stopped, saving denoiser calls. One unchanged step is weak evidence when only
a proportion rho of the positions could change in it (at rho = 0.3, 29 of 32 rows froze by step
25, far from converged), so the default patience is ceil(3 / rho) steps (a position the model
would still change survives that many steps with probability about e^-3), and 1 for argmax
decoding, a deterministic map whose fixed point is final. Whether all have stopped is read every ``STOP_CHECK_EVERY``
steps, not every step (each read waits for the device); stopped rows stay frozen meanwhile,
so the samples are those of a check after every step, at up to 7 calls more.

Argmax-unrolled decoding (``argmax=True``, the paper's deterministic decoder): every step
replaces all positions by the prediction's argmax, so the chain is a deterministic map of its
start; ``starts`` chains from independent uniform starts run per sample, and the one the model
scores best, sum_i log p(x_i | x) at its final state (one more call), is returned.

The denoiser is given the times of the even grid from 1 towards 0 (one per step), so a model
trained with a time input sees decreasing noise levels; a SUNDAE network is told none.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from discdiff.categorical import sample_categorical, uniform
from discdiff.processes.base import Process, has_uniform_noise
from discdiff.samplers.base import (
    ProcessMismatch,
    Sampler,
    SamplingRun,
    _check_positive_int,
    time_grid,
)

__all__ = ["SundaeSampler", "has_uniform_noise"]  # the capability now lives on processes.base

STOP_CHECK_EVERY = 8  # steps between reads of "has every row stopped?"


class SundaeSampler(Sampler):
    """Iterative unrolled denoising from uniform noise, ``steps`` calls at most."""

    def __init__(
        self,
        steps: int,
        proportion: float | tuple[float, float] = 0.8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        argmax: bool = False,
        early_stop: bool = True,
        starts: int = 1,
        guidance: float = 1.0,
        null_label: int | None = None,
        patience: int | None = None,
    ) -> None:
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        pair = proportion if isinstance(proportion, (tuple, list)) else (proportion, proportion)
        if len(pair) != 2 or not all(isinstance(p, (int, float)) and 0.0 < p <= 1.0 for p in pair):
            raise ValueError(
                f"proportion must be in (0, 1] or a pair (start, end) of such, got {proportion!r}"
            )
        self.proportion = (float(pair[0]), float(pair[1]))
        self.argmax = bool(argmax)
        if self.argmax:
            ignored = [
                name
                for name, value, neutral in (
                    ("proportion", self.proportion, (0.8, 0.8)),
                    ("temperature", self.temperature, 1.0),
                    ("top_p", self.top_p, 1.0),
                )
                if value != neutral
            ]
            if ignored:
                raise ValueError(
                    f"argmax-unrolled decoding replaces every position by the argmax: "
                    f"{', '.join(ignored)} would be ignored; drop them or argmax"
                )
        self.patience = None if patience is None else _check_positive_int(patience, "patience")
        self._patience = (
            self.patience
            if self.patience is not None
            else 1
            if self.argmax
            else math.ceil(3.0 / min(self.proportion))
        )
        self.early_stop = bool(early_stop)
        self.starts = _check_positive_int(starts, "starts")
        if self.starts > 1 and not self.argmax:
            raise ValueError("starts > 1 ranks argmax-unrolled chains: it needs argmax=True")

    def check_processes(self, processes: dict[str, Process]) -> None:
        for k, p in processes.items():
            if not has_uniform_noise(p):
                field = "" if len(processes) == 1 else f" (field {k!r})"
                raise ProcessMismatch(
                    f"SundaeSampler needs a Uniform process (uniform noise, no mask state), "
                    f"got {type(p).__name__}{field}"
                )

    def proportion_at(self, j: int) -> float:
        """The fraction of positions updated at step j (linear from start to end)."""
        a, b = self.proportion
        return a if self.steps == 1 else a + (b - a) * j / (self.steps - 1)

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        if self.starts == 1:
            return self._chains(run)
        return self._best_of(run)

    def _chains(self, run: SamplingRun) -> dict[str, Tensor]:
        B, dev, gen = run.batch, run.device, run.generator
        grid = time_grid(run.processes, self.steps)  # (steps + 1,)
        x = run.prior()
        run.record(x)
        times = run.grid_times(grid)  # (steps + 1, B)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        streak = torch.zeros(B, dtype=torch.long, device=dev)  # unchanged steps in a row
        for j in run.progress_bar(range(self.steps), total=self.steps):
            logp = run.log_probs(x, times[j])
            if self.argmax:
                proposal = {k: lp.argmax(-1) for k, lp in logp.items()}
            else:
                proposal = {k: sample_categorical(lp, gen) for k, lp in logp.items()}
            proposal = run.apply_fixed(proposal)
            rho = 1.0 if self.argmax else self.proportion_at(j)
            new = {}
            same = torch.ones(B, dtype=torch.bool, device=dev)
            for k in x:
                keep = done.reshape(B, *([1] * (x[k].dim() - 1)))
                if rho < 1.0:
                    update = (uniform(x[k].shape, gen, dev) < rho) & ~keep  # (B, ...)
                else:
                    update = ~keep.expand_as(x[k])
                new[k] = torch.where(update, proposal[k], x[k])
                same &= (new[k] == x[k]).reshape(B, -1).all(1)
            x = new
            run.record(x)
            if self.early_stop:
                streak = torch.where(same, streak + 1, torch.zeros_like(streak))
                done |= streak >= self._patience
                if (j + 1) % STOP_CHECK_EVERY == 0 and bool(done.all()):
                    break
        return x

    def _best_of(self, run: SamplingRun) -> dict[str, Tensor]:
        """``starts`` argmax chains per sample, the best by the model's own final score."""
        B, n = run.batch, self.starts
        wide = SamplingRun(
            self,
            run.denoiser,
            run.processes,
            {k: (B * n, *shape[1:]) for k, shape in run.shapes.items()},
            _repeat(run.cond, B, n),
            {k: (v.repeat_interleave(n, 0), m.repeat_interleave(n, 0)) for k, (v, m) in run.fixed.items()},
            run.generator,
            run.device,
            False,
            run.progress,
        )  # fmt: skip
        wide.single = run.single  # call the denoiser in the caller's form
        x = self._chains(wide)
        logp = wide.log_probs(x, wide.full_time(0.0))
        score = sum(
            lp.gather(-1, x[k].unsqueeze(-1)).squeeze(-1).reshape(B * n, -1).sum(1)
            for k, lp in logp.items()
        )  # (B n,) sum_i log p(x_i | x)
        best = score.reshape(B, n).argmax(1)  # (B,)
        rows = torch.arange(B, device=best.device) * n + best
        run.num_calls += wide.num_calls
        run.rows_evaluated += wide.rows_evaluated
        run.call_checks.extend(wide.call_checks)
        out = {k: v[rows] for k, v in x.items()}
        run.record(out)
        return out


def _repeat(cond: object, batch: int, n: int) -> object:
    """``cond`` with every batch-sized tensor's rows repeated ``n`` times (dicts recursed)."""
    if isinstance(cond, Tensor):
        return cond.repeat_interleave(n, 0) if cond.dim() and cond.shape[0] == batch else cond
    if isinstance(cond, dict):
        return {k: _repeat(v, batch, n) for k, v in cond.items()}
    return cond
