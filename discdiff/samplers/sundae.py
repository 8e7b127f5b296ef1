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
decoding, a deterministic map whose fixed point is final. Early stop is on by default for argmax
decoding only: sampling at the default temperature 0.6 and proportion 0.3 (a 4 x 128 Shakespeare
model, 64 samples judged by an autoregressive model) it changes the judge's bits per character
by +0.022, -0.022 and +0.031 at 100 steps (three seeds) for 9% fewer row evaluations, but costs
0.133 at 300 steps (for 49% fewer); stopping when the full proposal (every position drawn)
equals the row cost more (0.16-0.38 bits: the rows the model is surest of are ones the judge
scores worse). Sampling is not stopped unless asked. Whether all have stopped is read every ``STOP_CHECK_EVERY``
steps, not every step (each read waits for the device); stopped rows stay frozen meanwhile,
so the samples are those of a check after every step, at up to 7 calls more. From each read on
only the rows still moving are given to the denoiser (``rows_evaluated`` counts them), so a
stopped row costs nothing even while others go on.

Argmax-unrolled decoding (``argmax=True``, the paper's deterministic decoder): every step
replaces positions by the prediction's argmax, all of them, or with a ``proportion`` rho the
ceil(rho L) most confident of those whose argmax differs from the current token (updating by
confidence: the surest changes first, a deterministic map still); ``starts`` chains from
independent uniform starts run per sample, and the one a ``scorer`` rates best is returned. The
default scorer is the model's own sum_i log p(x_i | x) at the final state (one more call), which
can prefer a degenerate fixed point (all spaces: every position predicts its neighbours); a
task passes a better one (the text task: the model's ELBO, a true likelihood bound).

The denoiser is given the times of the even grid from 1 towards 0 (one per step), so a model
trained with a time input sees decreasing noise levels; a SUNDAE network is told none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

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
#: the defaults of stochastic sampling: on Shakespeare (a 4 x 128 model of 600 steps, 64
#: samples, 100 steps, judged by an autoregressive model of the same size) generative
#: perplexity 10.1 at (0.6, 0.3) against 46.0 at the former (1.0, 0.8), unigram entropy 2.54
#: against 2.73 nats (benchmarks/results/sundae_defaults.txt)
DEFAULT_TEMPERATURE, DEFAULT_PROPORTION = 0.6, 0.3


class SundaeSampler(Sampler):
    """Iterative unrolled denoising from uniform noise, ``steps`` calls at most."""

    def __init__(
        self,
        steps: int,
        proportion: float | tuple[float, float] | None = None,
        temperature: float | None = None,
        top_p: float = 1.0,
        argmax: bool = False,
        early_stop: bool | None = None,
        starts: int = 1,
        guidance: float = 1.0,
        null_label: int | None = None,
        patience: int | None = None,
        scorer: Callable[[Any, Any], Tensor] | None = None,
    ) -> None:
        if temperature is None:  # the paper samples at a low temperature
            temperature = 1.0 if argmax else DEFAULT_TEMPERATURE
        super().__init__(temperature, top_p, guidance, null_label)
        self.steps = _check_positive_int(steps, "steps")
        #: None: every position with argmax, DEFAULT_PROPORTION when sampling (recorded as given)
        self._proportion_given = proportion is not None
        if proportion is None:
            proportion = 1.0 if argmax else DEFAULT_PROPORTION
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
                    ("temperature", self.temperature, 1.0),
                    ("top_p", self.top_p, 1.0),
                )
                if value != neutral
            ]
            if ignored:
                raise ValueError(
                    f"argmax-unrolled decoding takes the argmax of the prediction: "
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
        #: None: on for argmax decoding (a fixed point is final), off for sampling (measured:
        #: no row set converges at the default temperature, and late stops cost bits)
        self.early_stop = bool(self.argmax if early_stop is None else early_stop)
        self.starts = _check_positive_int(starts, "starts")
        if self.starts > 1 and not self.argmax:
            raise ValueError("starts > 1 ranks argmax-unrolled chains: it needs argmax=True")
        if scorer is not None and not callable(scorer):
            raise TypeError(f"scorer must be callable (x, cond) -> (B,), got {scorer!r}")
        #: (fields, cond) -> (B,) scores, higher better, that rank the chains of ``starts``
        self.scorer = scorer

    def config(self) -> dict[str, Any]:
        """As :meth:`Sampler.config`, with the proportion as given (None: the default for the
        decoding) and no scorer (a function, not a setting)."""
        out = super().config()
        out.pop("scorer", None)
        if not self._proportion_given:
            out["proportion"] = None
        return out

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
        moving: Tensor | None = None  # the rows still evaluated (None: all)
        for j in run.progress_bar(range(self.steps), total=self.steps):
            logp = run.log_probs(x, times[j], rows=moving)  # (B' ...) rows of ``moving``
            if self.argmax:
                best = {k: lp.max(-1) for k, lp in logp.items()}
                proposal = {k: b.indices for k, b in best.items()}
                conf = {k: b.values for k, b in best.items()}
            else:
                proposal = {k: sample_categorical(lp, gen) for k, lp in logp.items()}
            if moving is not None:  # stopped rows propose themselves, with no confidence
                proposal = {k: x[k].index_copy(0, moving, v) for k, v in proposal.items()}
                if self.argmax:
                    conf = {k: torch.full(x[k].shape, float("-inf"), device=dev)
                            .index_copy(0, moving, v) for k, v in conf.items()}  # fmt: skip
            proposal = run.apply_fixed(proposal)
            rho = self.proportion_at(j)
            new = {}
            same = torch.ones(B, dtype=torch.bool, device=dev)
            for k in x:
                keep = done.reshape(B, *([1] * (x[k].dim() - 1)))
                if rho < 1.0 and self.argmax:  # the surest ceil(rho n) changes of each row
                    update = _surest(conf[k], proposal[k] != x[k], rho) & ~keep
                elif rho < 1.0:
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
                if (j + 1) % STOP_CHECK_EVERY == 0:  # one read: stop, or evaluate fewer rows
                    left = (~done).nonzero().squeeze(1)
                    if left.numel() == 0:
                        break
                    moving = left if left.numel() < B else None
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
        if self.scorer is not None:
            fields = next(iter(x.values())) if run.single else x
            score = self.scorer(fields, wide.cond).reshape(B * n)  # (B n,)
        else:
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


def _surest(confidence: Tensor, changes: Tensor, rho: float) -> Tensor:
    """(B, ...) bool: each row's ceil(rho n) positions of highest ``confidence`` among those
    that ``changes`` (fewer where fewer change)."""
    B = confidence.shape[0]
    flat = confidence.reshape(B, -1).masked_fill(~changes.reshape(B, -1), float("-inf"))
    k = max(1, math.ceil(rho * flat.shape[1]))
    top = flat.topk(k, dim=1).indices  # (B, k)
    pick = torch.zeros_like(flat, dtype=torch.bool).scatter(1, top, True)
    return (pick & changes.reshape(B, -1)).reshape(changes.shape)


def _repeat(cond: object, batch: int, n: int) -> object:
    """``cond`` with every batch-sized tensor's rows repeated ``n`` times (dicts recursed)."""
    if isinstance(cond, Tensor):
        return cond.repeat_interleave(n, 0) if cond.dim() and cond.shape[0] == batch else cond
    if isinstance(cond, dict):
        return {k: _repeat(v, batch, n) for k, v in cond.items()}
    return cond
