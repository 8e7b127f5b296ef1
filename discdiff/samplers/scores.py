"""Samplers for score models (SEDD) and rate-based sampling of any mixing-process model.

A score model's output is read as log concrete scores (:mod:`discdiff.processes.scores`).
:class:`ScoresAsX0` turns it into x_0 logits by the exact Tweedie inversion, so every sampler
(and temperature, top-p, guidance) serves score models; both samplers here take
``output="x0"`` (default: an x_0-predicting model, as every task presents its model, a
score-entropy text model included) or ``"scores"`` (a raw score network).

- :class:`TweedieSampler`: the Tweedie denoiser's reverse step, x_s ~ sum_x0 p(x0 | x_t)
  q(x_s | x_t, x0), i.e. ancestral sampling with the x_0 law the scores imply. With exact
  scores each position's step is exact at any step size (its marginal given x_t); the joint law
  of a step is the product of those marginals, so it is exact only as the steps shrink (for
  p(00) = p(11) = 1/2, one step from the prior gives P(x0 != x1) = 1/2, not 0).
- :class:`TauLeapingSampler`: Euler tau-leaping of the reverse CTMC. From t to s each position
  jumps from z to y != z with probability Lambda m(z) s_y, Lambda = int_s^t beta = log(alpha_s /
  alpha_t), and stays otherwise (the jump probabilities renormalised where they exceed one);
  the last step to s = 0 is the Tweedie step, which decodes every position. Its error is O(step):
  the output law converges to the model's as the steps grow.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from discdiff.categorical import one_hot, sample_categorical
from discdiff.fields import SINGLE
from discdiff.processes.base import Process, expand_time
from discdiff.processes.scores import has_scores, scores_from_x0, x0_from_scores
from discdiff.samplers.ancestral import AncestralSampler
from discdiff.samplers.base import (
    ProcessMismatch,
    Sampler,
    SampleResult,
    SamplingRun,
    _check_positive_int,
    check_grid_power,
    time_grid,
)

__all__ = ["ScoresAsX0", "TweedieSampler", "TauLeapingSampler", "OUTPUTS"]

OUTPUTS = ("scores", "x0")


#: below this alpha a score carries (almost) no information on x_0 (absorbing: at alpha = 0
#: every ratio to a token is 0), so the scores are read at the time where alpha reaches it
MIN_ALPHA = 1e-3


class ScoresAsX0:
    """``denoiser`` whose output (log concrete scores) is returned as x_0 logits (Tweedie).

    Where alpha(t) < :data:`MIN_ALPHA` (t near 1) the denoiser is asked, and inverted, at the
    time where alpha = MIN_ALPHA: at alpha = 0 the scores of an absorbing process are all 0
    and say nothing of x_0 (SEDD's schedules stop short of alpha = 0 for the same reason)."""

    def __init__(self, denoiser: Any, processes: Process | dict[str, Process]) -> None:
        self.denoiser = denoiser
        self.processes = processes
        self._cap: dict[int, Tensor] = {}

    def _time(self, proc: Process, t: Tensor) -> Tensor:
        from discdiff.samplers.base import time_for_alpha

        key = id(proc.schedule)
        if key not in self._cap:
            self._cap[key] = time_for_alpha(proc.schedule, torch.tensor([MIN_ALPHA]))
        cap = self._cap[key].to(t.device).to(t.dtype)
        return torch.minimum(t, cap)

    def __call__(self, x_t: Any, t: Tensor, cond: Any = None) -> Any:
        procs = self.processes
        first = procs if isinstance(procs, Process) else next(iter(procs.values()))
        t = self._time(first, t)  # one time for all fields: the denoiser sees one t
        out = self.denoiser(x_t, t) if cond is None else self.denoiser(x_t, t, cond)
        if isinstance(procs, Process):
            return x0_from_scores(procs, x_t, out, t)
        return {k: x0_from_scores(p, x_t[k], out[k], t) for k, p in procs.items()}

    def parameters(self) -> Any:
        params = getattr(self.denoiser, "parameters", None)
        return params() if callable(params) else iter(())

    @property
    def training(self) -> bool:
        return bool(getattr(self.denoiser, "training", False))

    def eval(self) -> ScoresAsX0:
        getattr(self.denoiser, "eval", lambda: None)()
        return self

    def train(self, mode: bool = True) -> ScoresAsX0:
        getattr(self.denoiser, "train", lambda mode=True: None)(mode)
        return self


def _check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    return output


def _check_mixing(sampler: Sampler, processes: dict[str, Process]) -> None:
    for k, p in processes.items():
        if not has_scores(p):
            field = "" if list(processes) == [SINGLE] else f" (field {k!r})"
            raise ProcessMismatch(
                f"{type(sampler).__name__} needs a mixing process (uniform, absorbing, marginal) "
                f"on a continuous schedule{field}, got {type(p).__name__}"
            )


class TweedieSampler(AncestralSampler):
    """Ancestral sampling through the x_0 law of a score model's Tweedie inversion: exact per
    position at any step size, in the joint law only as the steps shrink (see the module)."""

    def __init__(
        self,
        steps: int,
        output: str = "x0",
        temperature: float = 1.0,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
        final: str = "sample",
        grid_power: float = 1.0,
    ) -> None:
        super().__init__(steps, temperature, top_p, guidance, null_label, final, grid_power)
        self.output = _check_output(output)

    def check_processes(self, processes: dict[str, Process]) -> None:
        _check_mixing(self, processes)

    def sample(
        self, denoiser: Any, processes: Any, shape: Any, *args: Any, **kw: Any
    ) -> SampleResult:
        if self.output == "scores":
            denoiser = ScoresAsX0(denoiser, processes)
        return super().sample(denoiser, processes, shape, *args, **kw)


class TauLeapingSampler(Sampler):
    """Euler tau-leaping of the reverse CTMC from the model's concrete scores (``steps`` calls)."""

    def __init__(
        self,
        steps: int,
        output: str = "x0",
        temperature: float = 1.0,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
        grid_power: float = 1.0,
    ) -> None:
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        self.output = _check_output(output)
        self.grid_power = check_grid_power(grid_power)

    def check_processes(self, processes: dict[str, Process]) -> None:
        _check_mixing(self, processes)

    def sample(
        self, denoiser: Any, processes: Any, shape: Any, *args: Any, **kw: Any
    ) -> SampleResult:
        if self.output == "scores":
            denoiser = ScoresAsX0(denoiser, processes)
        return super().sample(denoiser, processes, shape, *args, **kw)

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        gen = run.generator
        grid = time_grid(run.processes, self.steps, self.grid_power)  # (n + 1,) 1 -> 0
        x = run.prior()
        run.record(x)
        n = grid.numel() - 1
        times = run.grid_times(grid)  # (n + 1, B)
        for i in run.progress_bar(range(n), total=n):
            t, s = times[i], times[i + 1]
            logp = run.log_probs(x, t)
            out = {}
            for k, proc in run.processes.items():
                if i == n - 1:  # to s = 0: the Tweedie step decodes every position
                    out[k] = sample_categorical(proc.posterior_log(x[k], logp[k], s, t), gen)
                    continue
                out[k] = self._leap(proc, x[k], logp[k], s, t, gen)
            x = run.apply_fixed(out)
            run.record(x)
        return x

    @staticmethod
    def _leap(proc: Process, x: Tensor, logp: Tensor, s: Tensor, t: Tensor, gen: Any) -> Tensor:
        """One Euler step of every position: P(z -> y) = Lambda m(z) s_y, y != z."""
        K, S = proc.num_classes, proc.num_states
        a_t, a_s = proc.schedule.alpha(t), proc.schedule.alpha(s)
        lam = torch.log(a_s / a_t.clamp_min(1e-300))  # (B,) integrated rate
        lam = torch.where(a_t > 0, lam, torch.full_like(lam, torch.inf))
        scores = scores_from_x0(proc, x, logp, t).exp()  # (B, .., K); entry z is 1
        m_z = proc.limit_on(x.device).float()[x]  # (B, ..)
        jump = expand_time(lam.float().to(x.device), x).unsqueeze(-1) * m_z.unsqueeze(-1) * scores
        zhot = one_hot(x.long(), K, torch.bool)
        jump = torch.where(zhot, torch.zeros_like(jump), jump)
        jump = torch.nan_to_num(jump, nan=0.0, posinf=1e30)
        total = jump.sum(-1, keepdim=True)
        scale = torch.where(total > 1, 1.0 / total.clamp_min(1e-30), torch.ones_like(total))
        jump = jump * scale  # (B, .., K)
        stay = (1.0 - jump.sum(-1, keepdim=True)).clamp_min(0.0)
        probs = torch.zeros(*x.shape, S, device=x.device)
        probs[..., :K] = jump
        probs = probs.scatter_add(-1, x.long().unsqueeze(-1), stay)
        return sample_categorical(torch.log(probs), gen)
