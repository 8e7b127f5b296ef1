"""Losses of discrete diffusion, each returning per-example negative-ELBO terms in nats (B,).

- :func:`vlb_loss`: D3PM's variational bound L_T + sum_t L_{t-1} + L_0 for a T-step chain,
  estimated with one (stratified) step per example: L_T + T * KL(q(x_{k-1}|x_k,x_0) || p).
- :func:`hybrid_loss`: the VLB plus lambda times the cross-entropy of x_0 (D3PM's L_lambda).
- :func:`continuous_elbo`: the continuous-time ELBO (T -> infinity). For absorbing processes this
  is MDLM's weighted masked cross-entropy; for uniform and marginal processes it is the CTMC
  bound sum_{y != z} [r_p - r_q + r_q log(r_q / r_p)] between the true and the model's reverse
  jump rates (the uniform-state ELBO of UDLM), in closed form in O(K) per position.
- :func:`sundae_loss`: SUNDAE's unrolled denoising cross-entropy (not an ELBO).
- :func:`score_entropy_loss`: SEDD's denoising score entropy (an ELBO of a score model).
- :func:`dfm_loss`: discrete flow matching's generalized KL on a mixture path.

Scale: every loss is the SUM over an example's positions (nats per example, not per token),
so its size grows with the sequence length; the Trainer averages over examples and divides
by nothing else, and clips the global gradient norm at ``TrainConfig.grad_clip`` = 1.0 by
default. Divide by the token count (:func:`bits_per_token`) to compare across lengths.

Every loss takes ``(process, denoiser, x0, mask=None, ...)``: one process and a tensor for one
field, or dicts of field name -> process / tensor for several fields (added with ``weights``).
``mask`` (bool, like x0, True = position counts) marks positions that are neither noised nor
scored (padding, or tokens given as context). The denoiser is any callable
``(x_t, t[, cond]) -> logits over x_0`` of shape (B, ..., K).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from discdiff.fields import Denoiser, as_field_dict, as_mask_dict, call_denoiser, sum_positions
from discdiff.processes.base import Process
from discdiff.processes.rates import phi as _phi  # noqa: F401  (kept for callers of the old name)
from discdiff.processes.rates import rate_kl_d3pm as _rate_kl  # noqa: F401
from discdiff.processes.rates import rate_kl_mean as _rate_kl_mean  # noqa: F401

__all__ = [
    "vlb_loss",
    "hybrid_loss",
    "continuous_elbo",
    "sundae_loss",
    "elbo_kernel",
    "masked_ce_kernel",
    "score_entropy_loss",
    "dfm_loss",
    "sample_times",
    "corrupt",
    "kl_categorical",
    "bits_per_token",
]

Fields = Tensor | Mapping[str, Tensor]
_BELOW_ONE = 1.0 - 2.0**-24


# ---- shared pieces ---------------------------------------------------------------------------
def sample_times(
    batch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    stratified: bool = True,
) -> Tensor:
    """(B,) uniforms in [0, 1); stratified = one per stratum [i/B, (i+1)/B) with a shared offset.

    Stratification (a low-discrepancy sequence) keeps the estimator unbiased while lowering the
    variance of a batch mean of time-dependent terms.
    """
    u = torch.rand(
        (1,) if stratified else (batch,), generator=generator, device=device, dtype=torch.float64
    )
    if not stratified:
        return u
    return torch.remainder(u + torch.arange(batch, device=device, dtype=torch.float64) / batch, 1.0)


def corrupt(
    processes: dict[str, Process],
    x0: dict[str, Tensor],
    t: Tensor,
    masks: dict[str, Tensor],
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """x_t ~ q(x_t | x_0) per field; positions outside the mask keep their clean value."""
    out = {}
    for k, proc in processes.items():
        xt = proc.sample_marginal(x0[k], t, generator=generator)
        out[k] = torch.where(masks[k], xt, x0[k].long()) if k in masks else xt
    return out


def kl_categorical(log_q: Tensor, log_p: Tensor) -> Tensor:
    """KL(q || p) over the last dim from log-probabilities; terms with q = 0 contribute 0."""
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))
    return terms.sum(-1)


def bits_per_token(nats: Tensor, num_tokens: Tensor | int) -> Tensor:
    """Convert summed nats per example to bits per token (or per dimension/character)."""
    return nats / (math.log(2.0) * num_tokens)


def _x0_nll(logits: Tensor, x0: Tensor) -> Tensor:
    """-log softmax(logits)[x0] per position, (B, ...) (:func:`discdiff.processes.rates.x0_nll`:
    blocked, with no (B, ..., K) buffer of its own)."""
    from discdiff.processes.rates import x0_nll

    return x0_nll(logits, x0)


def _sample_steps(
    batch: int, T: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Stratified step indices k in 1..T, (B,) long."""
    return (sample_times(batch, generator, device) * T).floor().long().clamp(max=T - 1) + 1


def _weights(weights: Mapping[str, float] | None, keys: list[str]) -> dict[str, float]:
    w = {k: 1.0 for k in keys}
    if weights:
        unknown = set(weights) - set(keys)
        if unknown:
            raise ValueError(f"weights name unknown fields {sorted(unknown)}; fields are {keys}")
        w.update({k: float(v) for k, v in weights.items()})
    return w


def _batch_size(x0: dict[str, Tensor]) -> tuple[int, torch.device]:
    sizes = {v.shape[0] for v in x0.values()}
    if len(sizes) != 1:
        raise ValueError(f"all fields must share the batch size, got {sorted(sizes)}")
    first = next(iter(x0.values()))
    return sizes.pop(), first.device


def _common_steps(processes: dict[str, Process], num_steps: int | None) -> int:
    steps = {p.num_steps for p in processes.values()}
    if len(steps) != 1:
        raise ValueError(
            f"all fields must use the same number of steps, got {sorted(map(str, steps))}"
        )
    T = steps.pop()
    if T is None:
        if num_steps is None:
            raise ValueError("a continuous-time process needs num_steps for the discrete VLB")
        T = num_steps
    elif num_steps is not None and num_steps != T:
        raise ValueError(f"the processes have {T} steps; num_steps={num_steps} disagrees")
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"num_steps must be a positive integer, got {T!r}")
    return T


# ---- discrete time ---------------------------------------------------------------------------
def _vlb_terms(
    process: Process | Mapping[str, Process],
    denoiser: Denoiser,
    x0: Fields,
    mask: Fields | None,
    cond: Any,
    weights: Mapping[str, float] | None,
    num_steps: int | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    procs, x0d, single = as_field_dict(process, x0)
    masks = as_mask_dict(mask, x0d, single)
    w = _weights(weights, list(procs))
    B, dev = _batch_size(x0d)
    T = _common_steps(procs, num_steps)
    k = _sample_steps(B, T, generator, dev)
    # float64 times on the grid k / T for the processes (float32 rounds k / T off the grid
    # of a long schedule); the denoiser gets float32
    t = k.double() / T
    s = (k - 1).double() / T
    x_t = corrupt(procs, x0d, t, masks, generator)
    logits = call_denoiser(denoiser, x_t, t.float(), cond, single, procs)
    vlb = torch.zeros(B, dtype=torch.float32, device=dev)
    ce = torch.zeros(B, dtype=torch.float32, device=dev)
    for name, proc in procs.items():
        m = masks.get(name)
        log_q = proc.posterior_log(x_t[name], x0d[name], s, t)
        log_p = proc.posterior_log(x_t[name], logits[name], s, t)
        step_kl = sum_positions(kl_categorical(log_q, log_p), m)
        prior = sum_positions(proc.kl_prior(x0d[name]).to(step_kl.dtype), m)
        vlb = vlb + w[name] * (prior + T * step_kl)
        ce = ce + w[name] * sum_positions(_x0_nll(logits[name], x0d[name]), m)
    return vlb, ce


def vlb_loss(
    process: Process | Mapping[str, Process],
    denoiser: Denoiser,
    x0: Fields,
    mask: Fields | None = None,
    *,
    cond: Any = None,
    weights: Mapping[str, float] | None = None,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unbiased one-step estimate of D3PM's negative VLB in nats per example, (B,).

    A discrete-time process uses its own T; a continuous one is discretised on ``num_steps``.
    """
    return _vlb_terms(process, denoiser, x0, mask, cond, weights, num_steps, generator)[0]


def hybrid_loss(
    process: Process | Mapping[str, Process],
    denoiser: Denoiser,
    x0: Fields,
    mask: Fields | None = None,
    *,
    lam: float = 0.01,
    cond: Any = None,
    weights: Mapping[str, float] | None = None,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """D3PM's hybrid loss: negative VLB + lam * cross-entropy of x_0 under the denoiser, (B,)."""
    vlb, ce = _vlb_terms(process, denoiser, x0, mask, cond, weights, num_steps, generator)
    return vlb + lam * ce


# ---- continuous time -------------------------------------------------------------------------
def elbo_kernel(
    process: Process | Mapping[str, Process],
    logits: Fields,
    x0: Fields,
    x_t: Fields,
    t: Tensor,
    mask: Fields | None = None,
    *,
    t_min: float = 0.0,
    weights: Mapping[str, float] | None = None,
) -> Tensor:
    """The continuous-time ELBO's integral term from logits you computed, (B,) nats.

    For users who run the denoiser themselves: ``x_t`` drawn from ``process`` at times ``t``
    (B,) uniform on [t_min, 1], ``logits`` (B, ..., K) the denoiser's output on it. Returns
    (1 - t_min) * sum over positions of ``process.rate_kl`` (weighted over fields), the
    Monte-Carlo estimate :func:`continuous_elbo` uses (without its boundary terms).
    """
    procs, x0d, single = as_field_dict(process, x0)
    if single:
        logits, x_t = {next(iter(procs)): logits}, {next(iter(procs)): x_t}
    masks = as_mask_dict(mask, x0d, single)
    w = _weights(weights, list(procs))
    B, dev = _batch_size(x0d)
    total = torch.zeros(B, dtype=torch.float32, device=dev)
    for name, proc in procs.items():
        rate = getattr(proc, "rate_kl", None)
        if not callable(rate):
            raise TypeError(f"{proc!r} has no reverse-rate KL (rate_kl) for the continuous ELBO")
        kl = rate(x_t[name], x0d[name], logits[name], t)
        total = total + w[name] * (1.0 - t_min) * sum_positions(kl, masks.get(name))
    return total


def masked_ce_kernel(logits: Tensor, x0: Tensor, mask: Tensor | None = None) -> Tensor:
    """Summed cross-entropy of x_0 under ``logits`` (B, ..., K) over counted positions, (B,)."""
    return sum_positions(_x0_nll(logits, x0), mask)


def continuous_elbo(
    process: Process | Mapping[str, Process],
    denoiser: Denoiser,
    x0: Fields,
    mask: Fields | None = None,
    *,
    cond: Any = None,
    weights: Mapping[str, float] | None = None,
    t_min: float = 1e-3,
    boundary: bool = True,
    stratified: bool = True,
    generator: torch.Generator | None = None,
    ce_weight: float = 0.0,
) -> Tensor:
    """Monte-Carlo continuous-time negative ELBO in nats per example, (B,).

    -log p(x0) <= KL(q(x_1|x0) || pi) + int_{t_min}^1 E_q[rate KL] dt - E_q[log p(x0 | x_{t_min})].
    The integral is estimated at one (stratified) t per example. With ``boundary=True`` the prior
    KL and the reconstruction term at ``t_min`` (one more denoiser call) are added, which makes
    the estimate a true bound; training may drop them (they are O(t_min)). ``t_min`` keeps the
    estimator's variance finite (the MDLM weight 1/t diverges at 0).

    ``ce_weight`` > 0 adds that multiple of the x_0 cross-entropy at every scored position
    (D3PM's hybrid loss, in continuous time; no longer a bound). It matters for rare classes of
    a uniform or marginal process: where the model gives an uncorrupted x_t = x_0 a probability
    p near 0, the rate KL saturates and its gradient in that logit is proportional to p (the
    shipped QM9 model gave its charged atoms p < 0.001 even at t = 0.1, uncorrupted); the
    cross-entropy's gradient there is about 1.
    """
    procs, x0d, single = as_field_dict(process, x0)
    for name, proc in procs.items():
        if not callable(getattr(proc, "rate_kl", None)) or proc.num_steps is not None:
            field = "" if single else f" (field {name!r})"
            raise TypeError(
                f"continuous_elbo needs a process with a reverse-rate KL (rate_kl: uniform, "
                f"absorbing, marginal or your own) on a continuous schedule{field}, got {proc!r}; "
                "use vlb_loss for discrete time"
            )
    if not math.isfinite(ce_weight) or ce_weight < 0:
        raise ValueError(f"ce_weight must be a finite number >= 0, got {ce_weight!r}")

    def integrand(proc: Process, x_t: Tensor, x: Tensor, out: Tensor, t: Tensor) -> Tensor:
        kl = proc.rate_kl(x_t, x, out, t)
        return kl + ce_weight * _x0_nll(out, x) if ce_weight else kl

    return _continuous_bound(
        procs, denoiser, x0d, mask, single, cond, weights, t_min, boundary, stratified,
        generator, integrand, None,
    )  # fmt: skip


def score_entropy_loss(
    process: Process | Mapping[str, Process],
    denoiser: Denoiser,
    x0: Fields,
    mask: Fields | None = None,
    *,
    cond: Any = None,
    weights: Mapping[str, float] | None = None,
    t_min: float = 1e-3,
    boundary: bool = True,
    stratified: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SEDD's diffusion-weighted denoising score entropy (Lou et al. 2024), an upper bound on
    -log p(x0) in nats per example, (B,).

    The denoiser's output (B, ..., K) is read as log concrete scores (see
    :mod:`discdiff.processes.scores`); the integral over t of
    :func:`~discdiff.processes.scores.score_entropy` is estimated at one stratified t per
    example, as in :func:`continuous_elbo`. ``boundary=True`` adds the prior KL and the
    reconstruction at ``t_min`` through the scores' Tweedie x_0 distribution. Mixing processes
    (uniform, absorbing, marginal) on a continuous schedule.
    """
    from discdiff.processes.scores import has_scores, score_entropy, x0_from_scores

    procs, x0d, single = as_field_dict(process, x0)
    for name, proc in procs.items():
        if not has_scores(proc):
            field = "" if single else f" (field {name!r})"
            raise TypeError(
                f"score_entropy_loss needs a mixing process (uniform, absorbing, marginal) on a "
                f"continuous schedule{field}, got {proc!r}"
            )
    return _continuous_bound(
        procs, denoiser, x0d, mask, single, cond, weights, t_min, boundary, stratified,
        generator, score_entropy, x0_from_scores,
    )  # fmt: skip


DFM_LOSSES = ("generalized_kl", "cross_entropy")


def dfm_loss(
    process: Process | Mapping[str, Process],
    denoiser: Denoiser,
    x1: Fields,
    mask: Fields | None = None,
    *,
    kind: str = "generalized_kl",
    cond: Any = None,
    weights: Mapping[str, float] | None = None,
    t_min: float = 1e-3,
    boundary: bool = False,
    stratified: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Discrete flow matching's training loss on a mixture path (Gat et al. 2024), (B,) nats.

    The path p_tau(x | x1) = kappa_tau [x = x1] + (1 - kappa_tau) p_source(x) is a mixing
    process: its limit is the source (Absorbing: the mask, Uniform, Marginal: any prior) and
    alpha(t) = kappa(1 - t) its schedule (:class:`~discdiff.schedules.PolynomialKappa`, ...).
    ``kind="generalized_kl"``: per position
    kappa' / (1 - kappa) [[x_t = x1] - p(x_t) - [x_t != x1] log p(x1)], with p the denoiser's
    x1 prediction, whose mass on a decoded token of a mask path is carried over to it (the
    logits processing the peers apply). ``"cross_entropy"``: -log p(x1) at every scored position
    (not a bound). Time is sampled as in :func:`continuous_elbo` (diffusion time t = 1 - tau in
    [t_min, 1]).

    Which form is a bound: the integral alone (``boundary=False``, the training loss as the
    paper has it) leaves out t < t_min and the prior, so its expectation can fall below the NLL
    (-2.2e-3 nats a token at t_min = 1e-3 for kappa = tau); on a mask path it equals
    ``continuous_elbo(boundary=False)`` example by example. ``boundary=True`` adds the prior KL
    and the reconstruction at t_min (as :func:`continuous_elbo` does): an upper bound on
    -log p(x1). Finite for every t in [0, 1]: 1 - kappa is read from the schedule's closed form
    (:meth:`~discdiff.schedules.Schedule.one_minus_alpha`), a position whose integrand is 0 adds
    0 where the weight is infinite (t = 0), and 1 - p(x_t) is the sum of the other classes.
    """
    if kind not in DFM_LOSSES:
        raise ValueError(f"kind must be one of {DFM_LOSSES}, got {kind!r}")
    from discdiff.processes.scores import has_scores

    procs, x0d, single = as_field_dict(process, x1)
    for name, proc in procs.items():
        if not has_scores(proc):
            field = "" if single else f" (field {name!r})"
            raise TypeError(
                f"dfm_loss needs a mixture path: a mixing process (absorbing, uniform, marginal) "
                f"on a continuous schedule{field}, got {proc!r}"
            )
    integrand = _dfm_generalized_kl if kind == "generalized_kl" else _dfm_cross_entropy
    if boundary and kind != "generalized_kl":
        raise ValueError("boundary=True makes a bound of the generalized KL only")
    return _continuous_bound(
        procs, denoiser, x0d, mask, single, cond, weights, t_min, boundary, stratified,
        generator, integrand, None,
    )  # fmt: skip


def _dfm_generalized_kl(
    proc: Process, x_t: Tensor, x1: Tensor, logits: Tensor, t: Tensor
) -> Tensor:
    from discdiff.processes.base import expand_time

    oma = proc.schedule.one_minus_alpha(t)  # float64, no cancellation near t = 0
    rate = -proc.schedule.alpha_prime(t) / torch.where(oma > 0, oma, torch.ones_like(oma))
    rate = torch.where(oma > 0, rate, torch.full_like(rate, math.inf))
    coef = expand_time(rate.to(x_t.device), x_t).float()
    lf = logits.float()
    lse = lf.logsumexp(-1)
    K = logits.shape[-1]
    mask_id = getattr(proc, "mask_id", None)
    same = x_t == x1.long()
    xt_c = x_t.long().clamp_max(K - 1).unsqueeze(-1)
    lp_x1 = lf.gather(-1, x1.long().unsqueeze(-1)).squeeze(-1) - lse
    p_xt = (lf.gather(-1, xt_c).squeeze(-1) - lse).exp()
    p_xt = torch.where(x_t < K, p_xt, torch.zeros_like(p_xt))  # no mass on the mask state
    if mask_id is not None:  # carry-over: a decoded token of a mask path is known
        p_xt = torch.where(x_t != mask_id, torch.ones_like(p_xt), p_xt)
        stay = 1.0 - p_xt  # 0 or 1 where x_t = x1: nothing to cancel
    else:  # 1 - p(x_t) as the mass of the other classes (1 - p cancels as p -> 1)
        others = lf.scatter(-1, xt_c, -math.inf).logsumexp(-1)
        stay = (others - lse).exp()
    per = torch.where(same, stay, -p_xt - lp_x1)
    return torch.where(per == 0, torch.zeros_like(per), coef * per)  # 0 at an infinite weight


def _dfm_cross_entropy(proc: Process, x_t: Tensor, x1: Tensor, logits: Tensor, t: Tensor) -> Tensor:
    return _x0_nll(logits, x1)


def _continuous_bound(
    procs: dict[str, Process],
    denoiser: Denoiser,
    x0d: dict[str, Tensor],
    mask: Fields | None,
    single: bool,
    cond: Any,
    weights: Mapping[str, float] | None,
    t_min: float,
    boundary: bool,
    stratified: bool,
    generator: torch.Generator | None,
    integrand: Callable[..., Tensor],
    to_x0: Callable[..., Tensor] | None,
) -> Tensor:
    """The continuous-time bound with a per-position ``integrand(proc, x_t, x0, output, t)``
    (the rate KL, or the score entropy); ``to_x0(proc, x_t, output, t)`` turns the output into
    x_0 logits for the reconstruction term (None: it is x_0 logits)."""
    masks = as_mask_dict(mask, x0d, single)
    w = _weights(weights, list(procs))
    B, dev = _batch_size(x0d)
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    # the largest float32 below 1: a time that rounds to 1.0 has alpha = 0 and an infinite rate
    t = (t_min + (1.0 - t_min) * sample_times(B, generator, dev, stratified)).float()
    t = t.clamp(max=_BELOW_ONE)
    x_t = corrupt(procs, x0d, t, masks, generator)
    out = call_denoiser(denoiser, x_t, t, cond, single, procs)
    total = torch.zeros(B, dtype=torch.float32, device=dev)
    for name, proc in procs.items():
        per = integrand(proc, x_t[name], x0d[name], out[name], t)
        total = total + w[name] * (1.0 - t_min) * sum_positions(per, masks.get(name))
    if boundary:
        t0 = torch.full((B,), t_min, dtype=torch.float32, device=dev)
        zero = torch.zeros_like(t0)
        for name, proc in procs.items():
            prior = proc.kl_prior(x0d[name])
            if bool(torch.isinf(prior).any()):
                raise ValueError(
                    f"{proc!r} does not reach its prior at t = 1 (alpha(1) > 0): the ELBO is infinite"
                )
            total = total + w[name] * sum_positions(prior.float(), masks.get(name))
        if t_min > 0:
            x_0 = corrupt(procs, x0d, t0, masks, generator)
            rec = call_denoiser(denoiser, x_0, t0, cond, single, procs)
            for name, proc in procs.items():
                logits = rec[name] if to_x0 is None else to_x0(proc, x_0[name], rec[name], t0)
                lp = proc.posterior_log(x_0[name], logits, zero, t0)
                nll = -lp.gather(-1, x0d[name].long().unsqueeze(-1)).squeeze(-1)
                total = total + w[name] * sum_positions(nll, masks.get(name))
    return total


# ---- SUNDAE ----------------------------------------------------------------------------------
def sundae_loss(
    process: Process | Mapping[str, Process],
    denoiser: Denoiser,
    x0: Fields,
    mask: Fields | None = None,
    *,
    unroll_steps: int = 2,
    cond: Any = None,
    weights: Mapping[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SUNDAE's unrolled denoising loss (Savinov et al. 2022), nats per example, (B,).

    Corrupt x0 with the process at a uniform random time, then unroll: each step the denoiser
    predicts x0, the cross-entropy against the true x0 is taken over all scored positions, and a
    sample from its prediction (no gradient through sampling) is fed back in. The mean over the
    ``unroll_steps`` steps is returned. Not a likelihood bound.
    """
    if not isinstance(unroll_steps, int) or unroll_steps < 1:
        raise ValueError(f"unroll_steps must be a positive integer, got {unroll_steps!r}")
    from discdiff.processes.base import has_uniform_noise

    procs, x0d, single = as_field_dict(process, x0)
    for name, proc in procs.items():  # the same check as SundaeSampler's
        if not has_uniform_noise(proc):
            field = "" if single else f" (field {name!r})"
            raise TypeError(
                f"sundae_loss needs a Uniform process (uniform noise, no mask state), "
                f"got {type(proc).__name__}{field}"
            )
    masks = as_mask_dict(mask, x0d, single)
    w = _weights(weights, list(procs))
    B, dev = _batch_size(x0d)
    if any(p.num_steps is not None for p in procs.values()):  # discrete time: a grid point
        T = _common_steps(procs, None)
        t = _sample_steps(B, T, generator, dev).double() / T  # on the grid, in float64
    else:
        t = sample_times(B, generator, dev)
    x_t = corrupt(procs, x0d, t, masks, generator)
    t = t.float()  # what the denoiser sees
    total = torch.zeros(B, dtype=torch.float32, device=dev)
    for _ in range(unroll_steps):
        logits = call_denoiser(denoiser, x_t, t, cond, single, procs)
        nxt = {}
        for name, lg in logits.items():
            total = total + w[name] * sum_positions(_x0_nll(lg, x0d[name]), masks.get(name))
            with torch.no_grad():
                flat = torch.softmax(lg.detach().float(), -1).reshape(-1, lg.shape[-1])
                draw = torch.multinomial(flat, 1, generator=generator).reshape(lg.shape[:-1])
            m = masks.get(name)
            nxt[name] = torch.where(m, draw, x0d[name].long()) if m is not None else draw
        x_t = nxt
    return total / unroll_steps
