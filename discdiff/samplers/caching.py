"""Samplers for absorbing (masked) processes that exploit their structure.

- :class:`CachingSampler`: MDLM's cached ancestral sampler (Sahoo et al. 2024). Under an
  absorbing process a reverse step either unmasks some positions or changes nothing; when a row
  did not change, its denoiser output can be reused *provided the output does not depend on t*.
  For absorbing processes the exact posterior p(x_0 | x_t) is time-independent (which positions
  are masked says nothing about t given x_t), and MDLM drops time conditioning for that
  reason. So this is a requirement: the denoiser must ignore t. A denoiser that declares
  ``time_conditioned = True`` is refused unless ``allow_time_conditioned=True`` (then caching is
  an approximation). Only the rows that changed since their last evaluation are fed to the
  denoiser (rows are assumed independent, as for any per-example model in eval mode). The step
  itself is O(B L), not O(B L K): :class:`AncestralSampler`'s posterior unmasks each masked
  position with probability (alpha_s - alpha_t) / (1 - alpha_t), independently, to a class
  drawn from p(x_0 | x_t); so each position's class is drawn once per evaluation of its row
  (a candidate, independent of the unmasking coins) and a step draws only the coins. The law
  is :class:`AncestralSampler`'s (tests: the exact law by enumeration), not its draws.
- :class:`FirstHittingSampler`: Zheng et al. 2024 ("Masked diffusion models are secretly
  time-agnostic masked models and exploit inaccurate categorical sampling"). Instead of
  stepping on a time grid, jump straight to the next time at which a masked token is unmasked
  (its first-hitting time), and unmask exactly one uniformly chosen masked token there. With n
  masked tokens at time t, the next event time s solves
  1 - alpha(s) = (1 - alpha(t)) u^(1/n), u ~ U(0, 1). One call per token: at most L calls, and
  with an exact denoiser the samples follow the data joint exactly (a random-order
  autoregressive factorisation). The time only informs the denoiser (see above).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from discdiff.categorical import sample_categorical, uniform
from discdiff.processes.base import Process
from discdiff.samplers.ancestral import AncestralSampler
from discdiff.samplers.base import Sampler, SamplingRun, time_for_alpha

__all__ = ["CachingSampler", "FirstHittingSampler", "check_absorbing", "has_mask_state"]


def has_mask_state(process: Process) -> bool:
    """Whether ``process`` has an absorbing mask state (``mask_id``) on a schedule: the
    capability the unmasking samplers need (a class test would shut out user processes)."""
    return getattr(process, "mask_id", None) is not None and hasattr(process, "schedule")


def check_absorbing(sampler: Sampler, processes: dict[str, Process]) -> None:
    """Raise TypeError unless every field's process has a mask state (e.g. Absorbing)."""
    for k, p in processes.items():
        if not has_mask_state(p):
            field = "" if len(processes) == 1 else f" (field {k!r})"
            raise TypeError(
                f"{type(sampler).__name__} needs a process with a mask state (e.g. Absorbing: "
                f"train with the absorbing process), got {type(p).__name__}{field}"
            )


class _Cache:
    def __init__(self) -> None:
        self.x: dict[str, Tensor] | None = None  # the state each row was last evaluated at
        self.logp: dict[str, Tensor] | None = None
        self.candidate: dict[str, Tensor] = {}  # a class drawn from logp per position


class CachingSampler(AncestralSampler):
    """Ancestral sampling for absorbing processes that re-evaluates only rows that changed."""

    def __init__(
        self,
        steps: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
        allow_time_conditioned: bool = False,
        grid_power: float = 1.0,
    ) -> None:
        super().__init__(steps, temperature, top_p, guidance, null_label, grid_power=grid_power)
        self.allow_time_conditioned = bool(allow_time_conditioned)

    def check_processes(self, processes: dict[str, Process]) -> None:
        check_absorbing(self, processes)

    def _new_cache(self) -> _Cache:
        return _Cache()

    def _denoise(
        self, run: SamplingRun, x: dict[str, Tensor], t: Tensor, cache: Any
    ) -> dict[str, Tensor]:
        if getattr(run.denoiser, "time_conditioned", False) and not self.allow_time_conditioned:
            raise ValueError(
                "CachingSampler reuses outputs across times, so the denoiser must ignore t; this one "
                "declares time_conditioned=True (pass allow_time_conditioned=True to accept the approximation)"
            )
        from discdiff.samplers.base import _stateful

        if _stateful(run.denoiser) is not None and not self.allow_time_conditioned:
            raise ValueError(
                "CachingSampler reuses an output while x_t is unchanged, but this denoiser keeps "
                "state across calls (self-conditioning: its output moves with its previous "
                "estimate); pass allow_time_conditioned=True to accept the approximation"
            )
        if cache.x is None:
            cache.x = {k: v.clone() for k, v in x.items()}
            cache.logp = run.log_probs(x, t)
            cache.candidate = {
                k: sample_categorical(v, run.generator) for k, v in cache.logp.items()
            }
            return cache.logp
        changed = torch.zeros(run.batch, dtype=torch.bool, device=run.device)
        for k, v in x.items():
            changed |= (v != cache.x[k]).reshape(run.batch, -1).any(1)
        rows = changed.nonzero().squeeze(1)  # (B',)
        if rows.numel():
            fresh = run.log_probs(x, t, rows=rows)
            for k in x:
                cache.logp[k][rows] = fresh[k]
                cache.x[k][rows] = x[k][rows]
                cache.candidate[k][rows] = sample_categorical(fresh[k], run.generator)
        return cache.logp

    def _step(
        self,
        run: SamplingRun,
        x: dict[str, Tensor],
        logp: dict[str, Tensor],
        cache: _Cache,
        s: Tensor,
        t: Tensor,
        last: bool,
    ) -> dict[str, Tensor]:
        """Unmask each masked position with probability (alpha_s - alpha_t) / (1 - alpha_t)
        to its candidate class (the argmax at the last step with ``final="argmax"``)."""
        out = {}
        for k, proc in run.processes.items():
            a_t = proc.schedule.alpha(t).to(run.device)  # (B,) float64
            a_s = proc.schedule.alpha(s).to(run.device)
            free = 1.0 - a_t
            p = torch.where(free > 0, (a_s - a_t) / torch.where(free > 0, free, 1.0), 0.0)
            coin = uniform(x[k].shape, run.generator, run.device, torch.float64)
            p = p.view(-1, *[1] * (x[k].dim() - 1))
            reveal = (x[k] == proc.mask_id) & (coin < p)
            token = logp[k].argmax(-1) if (last and self.final == "argmax") else cache.candidate[k]
            out[k] = torch.where(reveal, token, x[k])
        return run.apply_fixed(out)


class FirstHittingSampler(Sampler):
    """Exact-order sampler for absorbing processes: one token per denoiser call (<= L calls).

    With several fields, the unmasked token is chosen uniformly among all masked positions of
    all fields; event times follow the first field's schedule.
    """

    def check_processes(self, processes: dict[str, Process]) -> None:
        check_absorbing(self, processes)

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        B, dev, gen = run.batch, run.device, run.generator
        x = run.prior()
        run.record(x)
        schedule = next(iter(run.processes.values())).schedule
        names = list(run.processes)
        sizes = [x[k][0].numel() for k in names]
        offsets = torch.tensor([0, *sizes], device=dev).cumsum(0)  # field starts in the flat order
        masked = torch.cat(
            [(x[k] == run.processes[k].mask_id).reshape(B, -1) for k in names], dim=1
        )  # (B, N)
        count = masked.sum(1)  # (B,)
        t = run.full_time(1.0)
        one_minus_alpha = 1.0 - schedule.alpha(t).to(dev)  # (B,)
        total = int(count.max()) if count.numel() else 0
        for _ in run.progress_bar(range(total), total=total):
            active = count > 0  # (B,)
            logp = run.log_probs(x, t)
            # which position: uniform over the row's masked positions
            score = uniform((B, masked.shape[1]), gen, dev).masked_fill(~masked, -1.0)  # (B, N)
            pos = score.argmax(1)  # (B,)
            # which token: a draw from the denoiser at that position, per field
            flat = {k: v.reshape(B, -1) for k, v in x.items()}
            for j, k in enumerate(names):
                local = (pos - offsets[j]).clamp(0, sizes[j] - 1)  # (B,)
                lp_k = logp[k].reshape(B, sizes[j], -1)  # (B, N_k, K)
                lp_at = lp_k[torch.arange(B, device=dev), local]  # (B, K)
                token = sample_categorical(lp_at, gen)  # (B,)
                here = active & (pos >= offsets[j]) & (pos < offsets[j + 1])
                new = flat[k].clone()
                new[here, local[here]] = token[here]
                flat[k] = new
            x = {k: flat[k].reshape(x[k].shape) for k in names}
            masked = masked.clone()
            masked[active, pos[active]] = False
            # the event time: 1 - alpha(s) = (1 - alpha(t)) u^(1/n) with n the masked count before
            u = uniform((B,), gen, dev, torch.float64)
            n = count.clamp_min(1).double()
            one_minus_alpha = torch.where(active, one_minus_alpha * u.pow(1.0 / n), one_minus_alpha)
            count = count - active.long()
            t_new = time_for_alpha(schedule, 1.0 - one_minus_alpha)
            t = torch.where(count > 0, torch.minimum(t_new, t), torch.zeros_like(t))
            run.record(x)
        return run.apply_fixed(x)

    def __repr__(self) -> str:
        return f"FirstHittingSampler({self._settings()})"
