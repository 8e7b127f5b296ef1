"""SUNDAE sampling (Savinov et al. 2022, "Step-unrolled denoising autoencoders") for uniform noise.

Start from uniform noise. Each step the denoiser predicts every position; a proposal is drawn
from the prediction at the sampler's temperature (or taken as its argmax: argmax-unrolled
decoding), and a random proportion of the positions is replaced by the proposal. The proportion
is a fixed fraction, or annealed linearly from ``proportion[0]`` to ``proportion[1]``. With
``early_stop`` a row stops when its proposal equals its current state (a fixed point of the
update); sampling ends when every row has stopped, saving denoiser calls.
The denoiser is given the times of the even grid from 1 towards 0 (one per step), so a model
trained with a time input sees decreasing noise levels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from discdiff.categorical import sample_categorical, uniform
from discdiff.processes.base import Process
from discdiff.samplers.base import Sampler, SamplingRun, _check_positive_int, time_grid

__all__ = ["SundaeSampler", "has_uniform_noise"]


def has_uniform_noise(process: Process) -> bool:
    """Whether ``process`` corrupts towards the uniform distribution over its classes (no mask
    state): the capability SUNDAE's sampler and loss assume (Uniform, or any process alike)."""
    limit = getattr(process, "limit", None)
    if not isinstance(limit, Tensor) or getattr(process, "mask_id", None) is not None:
        return False
    K = process.num_classes
    return process.num_states == K and bool(torch.allclose(limit, torch.full_like(limit, 1 / K)))


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
        guidance: float = 1.0,
        null_label: int | None = None,
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
        self.early_stop = bool(early_stop)

    def check_processes(self, processes: dict[str, Process]) -> None:
        for k, p in processes.items():
            if not has_uniform_noise(p):
                field = "" if len(processes) == 1 else f" (field {k!r})"
                raise TypeError(
                    f"SundaeSampler needs a Uniform process (uniform noise, no mask state), "
                    f"got {type(p).__name__}{field}"
                )

    def proportion_at(self, j: int) -> float:
        """The fraction of positions updated at step j (linear from start to end)."""
        a, b = self.proportion
        return a if self.steps == 1 else a + (b - a) * j / (self.steps - 1)

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        B, dev, gen = run.batch, run.device, run.generator
        grid = time_grid(run.processes, self.steps)  # (steps + 1,)
        x = run.prior()
        run.record(x)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        for j in run.progress_bar(range(self.steps), total=self.steps):
            logp = run.log_probs(x, run.full_time(grid[j]))
            proposal = {}
            for k, lp in logp.items():
                draw = sample_categorical(lp, gen)  # (B, ...)
                proposal[k] = lp.argmax(-1) if self.argmax else draw
            proposal = run.apply_fixed(proposal)
            same = torch.ones(B, dtype=torch.bool, device=dev)
            for k in x:
                same &= (proposal[k] == x[k]).reshape(B, -1).all(1)
            if self.early_stop:
                done |= same
            rho = self.proportion_at(j)
            new = {}
            for k in x:
                update = uniform(x[k].shape, gen, dev) < rho  # (B, ...)
                update &= ~done.reshape(B, *([1] * (x[k].dim() - 1)))
                new[k] = torch.where(update, proposal[k], x[k])
            x = new
            run.record(x)
            if self.early_stop and bool(done.all()):
                break
        return x
