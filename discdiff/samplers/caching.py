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
  drawn from p(x_0 | x_t). So the coins of all steps are drawn at the start, as each
  position's unmasking step (:func:`unmasking_steps`), and copied to the host once: which
  positions and rows change at which step is known before the loop, a step that unmasks
  nothing costs nothing, no step reads a device value, and a class is drawn (temperature,
  top-p, one uniform) only at the positions unmasking, from their row's cached logits. The law is
  :class:`AncestralSampler`'s (tests: the exact law by enumeration), not its draws.
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

from discdiff.categorical import process_logits, sample_inverse_cdf, uniform
from discdiff.processes.base import Process
from discdiff.samplers.ancestral import AncestralSampler
from discdiff.samplers.base import ProcessMismatch, Sampler, SamplingRun, time_for_alpha, time_grid

__all__ = [
    "CachingSampler",
    "FirstHittingSampler",
    "check_absorbing",
    "has_mask_state",
    "unmasking_steps",
]


def has_mask_state(process: Process) -> bool:
    """Whether ``process`` has an absorbing mask state (``mask_id``) on a schedule: the
    capability the unmasking samplers need (a class test would shut out user processes)."""
    return getattr(process, "mask_id", None) is not None and hasattr(process, "schedule")


def check_absorbing(sampler: Sampler, processes: dict[str, Process]) -> None:
    """Raise TypeError unless every field's process has a mask state (e.g. Absorbing)."""
    for k, p in processes.items():
        if not has_mask_state(p):
            field = "" if len(processes) == 1 else f" (field {k!r})"
            raise ProcessMismatch(
                f"{type(sampler).__name__} needs a process with a mask state (e.g. Absorbing: "
                f"train with the absorbing process), got {type(p).__name__}{field}"
            )


class _Plan:
    """When each masked position unmasks, drawn before the loop, and held on the host; and
    the uniform each will draw its class with (``noise``, in ``order``, on the device)."""

    def __init__(self, steps: dict[str, Tensor], n: int, batch: int) -> None:
        self.n = n
        self.order: dict[str, Tensor] = {}  # field -> flat positions sorted by their step
        self.starts: dict[str, list[int]] = {}  # field -> where step i begins in ``order``
        self.noise: dict[str, Tensor] = {}  # field -> one uniform per position, as ``order``
        changed = torch.zeros(n + 1, batch, dtype=torch.bool)  # row b unmasks at step i
        for k, step in steps.items():
            flat = step.reshape(-1)
            self.order[k] = torch.sort(flat, stable=True).indices
            counts = torch.bincount(flat, minlength=n + 1)
            self.starts[k] = [0, *torch.cumsum(counts, 0).tolist()]
            changed[step.reshape(batch, -1), torch.arange(batch)[:, None]] = True
        changed = changed[:n]  # (n, B)
        self.any = changed.any(1).tolist()  # (n,) Python bools
        pairs = changed.nonzero()  # (M, 2) (step, row), by step: every step's rows at once
        per_step = torch.bincount(pairs[:, 0], minlength=n).tolist()
        self._rows = list(torch.split(pairs[:, 1], per_step))

    def positions(self, k: str, i: int) -> Tensor:
        """The flat positions of field k that unmask at step i (host)."""
        return self.order[k][self.starts[k][i] : self.starts[k][i + 1]]

    def uniforms(self, k: str, i: int) -> Tensor:
        """The uniforms of those positions (a view of ``noise``)."""
        return self.noise[k][self.starts[k][i] : self.starts[k][i + 1]]

    def rows(self, i: int) -> Tensor:
        """The rows that unmask something at step i (host)."""
        return self._rows[i]

    def busy(self) -> list[int]:
        """The steps at which something unmasks, in order."""
        return [i for i, a in enumerate(self.any) if a]


class _Cache:
    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.step = 0
        self.scores: dict[str, Tensor] | None = None  # the last evaluation of every row
        self.changed: int | None = None  # the step whose rows changed since that evaluation


def unmasking_steps(alpha: Tensor, v: Tensor) -> Tensor:
    """The reverse step at which a masked position unmasks, for uniforms ``v`` (any shape).

    alpha: (n + 1,) keep-probabilities on the grid t_0 = 1 > ... > t_n = 0. Ancestral sampling
    unmasks a masked position at step i with probability (alpha_{i+1} - alpha_i) / (1 -
    alpha_i), so it is still masked after step i with probability S_i = (1 - alpha_{i+1}) /
    (1 - alpha_0); its step is the number of i with S_i > v (all by the last, where S = 0).
    """
    n = alpha.numel() - 1
    free = 1.0 - alpha[0]
    alive = torch.where(free > 0, (1.0 - alpha[1:]) / torch.where(free > 0, free, 1.0), 0.0)
    alive = alive.clamp(0.0, 1.0).to(v.device, torch.float64)  # (n,) non-increasing
    below = torch.searchsorted(alive.flip(0).contiguous(), v.reshape(-1).contiguous(), right=True)
    return (n - below).clamp(max=n - 1).reshape(v.shape)


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

    def _new_cache(self, run: SamplingRun, grid: Tensor, x: dict[str, Tensor]) -> _Cache:
        """Each masked position's unmasking step, drawn up front (the coins of every step at
        once: the same law) and copied to the host once, the run's only device read. The
        denoiser is checked here, once: reusing its outputs needs one that ignores t and keeps
        no state across calls."""
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
        n = grid.numel() - 1
        steps = {}
        for k, proc in run.processes.items():
            v = uniform(x[k].shape, run.generator, run.device, torch.float64)
            step = unmasking_steps(proc.schedule.alpha(grid), v)
            steps[k] = torch.where(x[k] == proc.mask_id, step, n).cpu()  # given: never
        plan = _Plan(steps, n, run.batch)
        for k in run.processes:  # every class draw's uniform at once, not one draw a step
            plan.noise[k] = uniform((plan.starts[k][n],), run.generator, run.device)
        return _Cache(plan)

    def _denoise(
        self, run: SamplingRun, x: dict[str, Tensor], t: Tensor, cache: Any
    ) -> dict[str, Tensor]:
        if cache.scores is None:  # a copy: the rows are overwritten in place later, and a
            # denoiser may hand out the same buffer each call (CUDA graphs, a test's fixed output)
            cache.scores = {k: v.clone() for k, v in run.scores(x, t).items()}
        elif cache.changed is not None:  # re-evaluate the rows changed since the last call
            rows = cache.plan.rows(cache.changed).to(run.device, non_blocking=True)
            fresh = run.scores(x, t, rows=rows)
            for k in x:
                cache.scores[k].index_copy_(0, rows, fresh[k])
        cache.changed = None
        return cache.scores

    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        """The ancestral loop over only the steps at which something unmasks (the others
        change nothing and call nothing); with a trajectory asked for, over every step."""
        if run.trajectory is not None:
            return super()._sample(run)
        grid = time_grid(run.processes, self.steps, self.grid_power)  # (n + 1,) from 1 to 0
        x = run.prior()
        cache = self._new_cache(run, grid, x)
        n = grid.numel() - 1
        busy = cache.plan.busy()
        at = torch.tensor(busy, dtype=torch.long)
        # every busy step's (B,) times at once, in the float32 the denoiser is given
        ts = grid.float()[torch.stack([at, at + 1])].to(run.device)  # (2, M)
        ts = ts[..., None].repeat(1, 1, run.batch)  # (2, M, B)
        t_at, s_at = ts[0].unbind(0), ts[1].unbind(0)  # views, split once
        for j in run.progress_bar(range(len(busy)), total=len(busy)):
            i = cache.step = busy[j]
            logp = self._denoise(run, x, t_at[j], cache)
            x = self._step(run, x, logp, cache, s_at[j], t_at[j], last=i == n - 1)
        return x

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
        """Unmask the positions whose step this is, each to a class drawn from its row's
        current prediction (the argmax at the last step with ``final="argmax"``); only those
        positions' K scores are read, and a step that unmasks nothing does no work."""
        plan, i = cache.plan, cache.step
        cache.step += 1
        if not plan.any[i]:
            return x
        cache.changed = i
        out = dict(x)
        for k in run.processes:
            at = plan.positions(k, i).to(run.device, non_blocking=True)  # (M,)
            if not at.numel():
                continue
            scores = logp[k].reshape(-1, logp[k].shape[-1]).index_select(0, at)  # (M, K)
            if last and self.final == "argmax":
                token = scores.argmax(-1)
            else:
                if self.temperature != 1.0 or self.top_p != 1.0:
                    scores = process_logits(scores, self.temperature, self.top_p)
                token = sample_inverse_cdf(scores, u=plan.uniforms(k, i))
            out[k] = x[k].reshape(-1).scatter(0, at, token).reshape(x[k].shape)
        return out


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
            # (scatter and where throughout: a boolean-mask index would be a host sync per step)
            flat = {k: v.reshape(B, -1) for k, v in x.items()}
            for j, k in enumerate(names):
                local = (pos - offsets[j]).clamp(0, sizes[j] - 1).unsqueeze(1)  # (B, 1)
                lp_k = logp[k].reshape(B, sizes[j], -1)  # (B, N_k, K)
                lp_at = lp_k.gather(1, local.unsqueeze(2).expand(-1, -1, lp_k.shape[2]))
                token = sample_inverse_cdf(lp_at.squeeze(1), gen)  # (B,)
                here = active & (pos >= offsets[j]) & (pos < offsets[j + 1])  # (B,)
                old = flat[k].gather(1, local).squeeze(1)
                value = torch.where(here, token.to(old.dtype), old)
                flat[k] = flat[k].scatter(1, local, value.unsqueeze(1))
            x = {k: flat[k].reshape(x[k].shape) for k in names}
            at = pos.unsqueeze(1)  # (B, 1)
            masked = masked.scatter(1, at, masked.gather(1, at) & ~active.unsqueeze(1))
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
