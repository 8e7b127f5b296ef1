"""The closed form shared by uniform, absorbing and marginal processes.

Qbar(t) = alpha(t) I + (1 - alpha(t)) 1 m^T over S states, with m the limit distribution
(uniform, the mask one-hot, or data marginals). The family is closed under composition, so the
transition from time s to time t is the same form with keep-probability a = alpha(t)/alpha(s).
Everything is O(S) per element: no S x S matrix is ever built.

Reverse step (x0-parameterised, D3PM eq. 4) for x_t = z and a distribution p over x_0:
    marg_s(y) = alpha_s p(y) + (1 - alpha_s) m(y)
    fwd(y)    = q(x_t = z | x_s = y) = a [y = z] + (1 - a) m(z)
    post(y)   = marg_s(y) fwd(y) / N,    N = (1 - a) m(z) + a marg_s(z)
N has a closed form because sum_y marg_s(y) = 1, so no normalising sum over S is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from discdiff.checks import check_values
from discdiff.processes.base import Process, check_ids, check_time, expand_time
from discdiff.schedules import Schedule

__all__ = ["MixingProcess", "PARAMETERIZATIONS"]

#: how logits over x_0 become a reverse step (see MixingProcess)
PARAMETERIZATIONS = ("mean", "d3pm")


def _logaddexp(a: Tensor, b: Tensor) -> Tensor:
    """torch.logaddexp whose gradient stays finite where both inputs are -inf (result -inf)."""
    both = torch.isneginf(a) & torch.isneginf(b)
    if check_values() and not bool(both.any()):  # a shortcut that reads values: not in a loop
        return torch.logaddexp(a, b)
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    out = torch.logaddexp(torch.where(both, zero, a), torch.where(both, zero, b))
    return torch.where(both, torch.full_like(out, -torch.inf), out)


def _stay_where(out: Tensor, rows: Tensor, z: Tensor) -> Tensor:
    """Replace the distributions at ``rows`` (bool (...)) by a point mass on x_t."""
    if check_values() and not bool(rows.any()):  # a shortcut that reads values: not in a loop
        return out
    point = torch.full_like(out, -torch.inf).scatter(-1, z, 0.0)
    return torch.where(rows.unsqueeze(-1), point, out)


class MixingProcess(Process):
    """Process with Qbar(t) = alpha(t) I + (1 - alpha(t)) 1 m^T; subclasses fix m.

    ``parameterization`` says how predicted x_0 logits become the reverse step p(x_s | x_t):
    - "mean" (default): the posterior mean sum_x0 p(x0 | x_t) q(x_s | x_t, x0). Exact whenever the
      logits are the true conditionals, so the continuous-time ELBO of an exact denoiser equals
      the log-likelihood for every process (the reverse rates are SEDD's concrete-score ratios).
    - "d3pm": D3PM's eq. 4, p proportional to q(x_t | x_s) sum_x0 q(x_s | x0) p(x0 | x_t), i.e.
      plugging probabilities into the one-hot posterior formula (also multinomial diffusion's).
    Both coincide for absorbing processes (MDLM's SUBS reverse step).
    """

    def __init__(
        self, num_classes: int, limit: Tensor, schedule: Schedule, parameterization: str = "mean"
    ) -> None:
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        self.parameterization = parameterization
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a discdiff Schedule, got {type(schedule).__name__}")
        limit = torch.as_tensor(limit, dtype=torch.float64).flatten()
        self.num_classes = num_classes
        self.num_states = int(limit.numel())
        self.schedule = schedule
        self.num_steps = schedule.num_steps
        self._m = limit
        self._log_m = torch.log(limit)
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._cdf_cache: dict[torch.device, Tensor] = {}

    # ---- continuous-time ELBO ---------------------------------------------------------------
    def rate_kl(self, x_t: Tensor, x0: Tensor, logits: Tensor, t: Tensor) -> Tensor:
        """KL between the true and the model's reverse jump rates at time t, (B, ...) nats/unit t.

        x_t, x0: ids (B, ...); logits: (B, ..., K) over x_0; t: (B,). The integrand of the
        continuous-time ELBO (the uniform-state bound of UDLM for this parameterization).
        """
        from discdiff.processes.rates import rate_kl_d3pm, rate_kl_mean

        fn = rate_kl_mean if self.parameterization == "mean" else rate_kl_d3pm
        return fn(self, x_t, x0, logits, t)

    # ---- helpers -------------------------------------------------------------------------
    @property
    def limit(self) -> Tensor:
        """The limit distribution m (S,), float64: where every token ends up at alpha = 0."""
        return self._m.clone()

    def limit_on(self, device: torch.device | str) -> Tensor:
        """m (S,) float64 on ``device``, made once per device: the hot paths' copy (moving
        ``limit`` there at each call is a host-to-device copy, which waits for the device)."""
        return self._m_on(torch.device(device))[0]

    def _m_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._cache:
            self._cache[device] = (self._m.to(device), self._log_m.to(device))
        return self._cache[device]

    def _cdf_m_on(self, device: torch.device) -> Tensor:
        """m's cumulative sum (S,) float64 on ``device``, made once."""
        if device not in self._cdf_cache:
            self._cdf_cache[device] = self._m_on(device)[0].cumsum(0)
        return self._cdf_cache[device]

    def _alpha(self, t: Tensor | float, batch: int, device: torch.device) -> Tensor:
        t = check_time(t, batch)
        return self.schedule.alpha(t).to(device)

    def _check_xt(self, x_t: Tensor) -> Tensor:
        return check_ids(x_t, self.num_states, "x_t")

    # ---- forward -------------------------------------------------------------------------
    def marginal_log(self, x0: Tensor, t: Tensor | float) -> Tensor:
        is_ids = self._x0_is_ids(x0)
        a = self._alpha(t, x0.shape[0], x0.device)
        return self._marginal_log_ids(x0.long(), a) if is_ids else self._marginal_log_logits(x0, a)

    def _marginal_log_ids(
        self, x0: Tensor, a: Tensor, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        m, log_m = self._m_on(x0.device)
        a_ = expand_time(a, x0)  # (B, 1, ..., 1) float64
        out = torch.empty(*x0.shape, self.num_states, dtype=dtype, device=x0.device)
        out.copy_((torch.log1p(-a_).unsqueeze(-1) + log_m).to(dtype).expand_as(out))
        at_x0 = torch.log(a_ + (1.0 - a_) * m[x0])  # (...) float64
        out.scatter_(-1, x0.unsqueeze(-1), at_x0.unsqueeze(-1).to(dtype))
        return out

    def _marginal_log_logits(self, logits: Tensor, a: Tensor) -> Tensor:
        _, log_m = self._m_on(logits.device)
        lp = torch.log_softmax(logits.float(), dim=-1)
        if self.num_states > self.num_classes:
            pad = lp.new_full((*lp.shape[:-1], self.num_states - self.num_classes), -torch.inf)
            lp = torch.cat([lp, pad], dim=-1)
        a_ = expand_time(a, logits[..., 0]).unsqueeze(-1)  # (B, 1, ..., 1)
        keep = torch.log(a_).float()
        move = (torch.log1p(-a_) + log_m).float()
        return _logaddexp(lp + keep, move.expand_as(lp))

    def sample_marginal(
        self, x0: Tensor, t: Tensor | float, generator: torch.Generator | None = None
    ) -> Tensor:
        x0 = check_ids(x0, self.num_classes, "x0")
        a = self._alpha(t, x0.shape[0], x0.device)
        u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        noise = self.prior_sample(x0.shape, generator=generator, device=x0.device)
        return torch.where(u < expand_time(a, x0), x0, noise)

    # ---- reverse -------------------------------------------------------------------------
    def _reverse_inputs(
        self, x_t: Tensor, x0: Tensor, s: Tensor | float, t: Tensor | float
    ) -> tuple[Tensor, bool, Tensor, Tensor]:
        """(x_t, whether x0 is ids, s, t (B,)) checked for a reverse step: one-line errors."""
        x_t = self._check_xt(x_t)
        is_ids = self._x0_is_ids(x0)
        want = tuple(x_t.shape) if is_ids else (*x_t.shape, self.num_classes)
        if tuple(x0.shape) != want:
            raise ValueError(
                f"x0 has shape {tuple(x0.shape)} but x_t of shape {tuple(x_t.shape)} needs {want}"
            )
        batch = x_t.shape[0]
        s, t = check_time(s, batch, "s"), check_time(t, batch, "t")
        if check_values() and bool((s > t).any()):
            raise ValueError("posterior needs s <= t for every example")
        return x_t, is_ids, s, t

    def posterior_log(
        self, x_t: Tensor, x0: Tensor, s: Tensor | float, t: Tensor | float
    ) -> Tensor:
        x_t, is_ids, s, t = self._reverse_inputs(x_t, x0, s, t)
        dev = x_t.device
        a_s, a_t = self.schedule.alpha(s), self.schedule.alpha(t)
        ratio = self.schedule.alpha_ratio(s, t, a_s, a_t).to(dev)
        a_s = a_s.to(dev)
        if is_ids or self.parameterization == "d3pm":
            return self._bayes_log(x_t, x0, is_ids, a_s, ratio)
        return self._mean_log(x_t, x0, a_s, a_t.to(dev), ratio)

    def sample_posterior(
        self,
        x_t: Tensor,
        x0: Tensor,
        s: Tensor | float,
        t: Tensor | float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The posterior-mean reverse step drawn as a three-part mixture, without its (..., S) law.

        With z = x_t, C = (1 - r) m(z) and D = C + r (r = alpha_t / alpha_s) the forward odds of
        z from y != z and from z, c0 = (1 - alpha_t) m(z), c1 = c0 + alpha_t and W = (1 - p(z)) /
        c0 + p(z) / c1, the posterior of :meth:`posterior_log` is, up to one constant,
        C alpha_s p(y) / c0 + C (1 - alpha_s) W m(y) for y != z and D (alpha_s p(z) / c1 +
        (1 - alpha_s) W m(z)) at z: the model's p without z, the limit m without z, or z
        itself. One coin picks the part (float64 masses) and one inverse-CDF uniform the class
        in it: one softmax and one cumulative sum over the classes, where the full posterior
        and its Gumbel-max draw take about twenty passes. Ids x_0 and the d3pm
        parameterization take the generic draw.
        """
        mixture = self.parameterization == "mean" and self.num_states == self.num_classes
        if not torch.is_floating_point(x0) or not mixture:
            return super().sample_posterior(x_t, x0, s, t, generator)
        from discdiff.categorical import uniform

        x_t, _, s, t = self._reverse_inputs(x_t, x0, s, t)
        dev = x_t.device
        alpha_s, alpha_t = self.schedule.alpha(s), self.schedule.alpha(t)
        r = expand_time(self.schedule.alpha_ratio(s, t, alpha_s, alpha_t).to(dev), x_t)
        a_s = expand_time(alpha_s.to(dev), x_t)  # (B, 1..) float64
        a_t = expand_time(alpha_t.to(dev), x_t)
        m, _ = self._m_on(dev)
        z = x_t.unsqueeze(-1)
        m_z = m[x_t]  # (...) float64
        c0 = (1.0 - a_t) * m_z
        only_z = c0 <= 0  # no x_0 other than z explains x_t: the reverse step keeps z
        c0 = torch.where(only_z, torch.ones_like(c0), c0)
        c1 = c0 + a_t
        p = torch.softmax(x0.float(), dim=-1)  # (..., K)
        pz = p.gather(-1, z).squeeze(-1).double()
        cdf = p.scatter_(-1, z, 0.0).cumsum_(-1)  # p without z, cumulated
        rest = cdf[..., -1].double()  # 1 - p(z) as a sum: exact where p(z) rounds to 1
        W = rest / c0 + pz / c1
        C = (1.0 - r) * m_z
        mass_p = C * a_s * rest / c0
        b_s = 1.0 - a_s  # (B, 1..)
        mass_pm = mass_p + C * b_s * W * (1.0 - m_z)  # p's part, then the limit's
        mass_z = (C + r) * (a_s * pz / c1 + b_s * m_z * W)
        coin = uniform(x_t.shape, generator, dev, torch.float64) * (mass_pm + mass_z)
        u = uniform(x_t.shape, generator, dev, torch.float32)
        from_p = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1), right=True)
        from_p = from_p.squeeze(-1).clamp_max_(self.num_classes - 1)
        # from m without z: a uniform over [0, 1 - m(z)), stepped over z's interval of m's CDF
        cdf_m = self._cdf_m_on(dev)  # (S,)
        v = uniform(x_t.shape, generator, dev, torch.float64) * (1.0 - m_z)
        v = v + torch.where(v >= cdf_m[x_t] - m_z, m_z, 0.0)
        from_m = torch.searchsorted(cdf_m, v.contiguous(), right=True).clamp_max_(
            self.num_states - 1
        )
        y = torch.where(coin < mass_p, from_p, torch.where(coin < mass_pm, from_m, x_t))
        return torch.where(only_z, x_t, y)

    def _fwd_logs(self, x_t: Tensor, ratio: Tensor) -> tuple[Tensor, Tensor]:
        """log q(x_t = z | x_s = y) for y != z and for y = z, each (...) float64."""
        m, _ = self._m_on(x_t.device)
        a_ = expand_time(ratio, x_t)
        fwd_other = (1.0 - a_) * m[x_t]
        return torch.log(fwd_other), torch.log(fwd_other + a_)

    def _bayes_log(
        self, x_t: Tensor, x0: Tensor, is_ids: bool, a_s: Tensor, ratio: Tensor
    ) -> Tensor:
        """Bayes' rule with marg_s from ids (exact) or from softmax(logits) (D3PM eq. 4)."""
        lm = (
            self._marginal_log_ids(x0.long(), a_s) if is_ids else self._marginal_log_logits(x0, a_s)
        )
        a_ = expand_time(ratio, x_t)  # (B, 1, ..., 1) float64
        z = x_t.unsqueeze(-1)
        log_fwd_other, log_fwd_self = self._fwd_logs(x_t, ratio)
        lm_z = lm.gather(-1, z).squeeze(-1)
        log_norm = _logaddexp(log_fwd_other, torch.log(a_) + lm_z.double())
        impossible = torch.isneginf(log_norm)  # x_t cannot arise from this x0: stay put
        log_norm = torch.where(impossible, torch.zeros_like(log_norm), log_norm)
        shift = (log_fwd_other - log_norm).to(lm.dtype).unsqueeze(-1)
        at_z = (lm_z.double() + log_fwd_self - log_norm).to(lm.dtype).unsqueeze(-1)
        if is_ids:  # nothing needs gradients: work in place, one (..., S) tensor in all
            out = lm.add_(shift).scatter_(-1, z, at_z)
        else:
            out = (lm + shift).scatter(-1, z, at_z)
        return _stay_where(out, impossible, z)

    def _mean_log(
        self, x_t: Tensor, logits: Tensor, a_s: Tensor, a_t: Tensor, ratio: Tensor
    ) -> Tensor:
        """sum_x0 softmax(logits)[x0] q(x_s | x_t, x0), over the x0 that could have produced x_t.

        With c(x0) = q(x_t = z | x0) (c1 if x0 = z, else c0) and w(x0) = p(x0) / c(x0):
        sum_x0 w(x0) marg_x0(y) = alpha_s w(y) + (1 - alpha_s) m(y) W,  W = sum_x0 w(x0),
        so the mixture of S-vectors costs O(S), like the Bayes form.
        """
        m, log_m = self._m_on(x_t.device)
        z = x_t.unsqueeze(-1)
        lp = torch.log_softmax(logits.float(), dim=-1)
        if self.num_states > self.num_classes:
            pad = lp.new_full((*lp.shape[:-1], self.num_states - self.num_classes), -torch.inf)
            lp = torch.cat([lp, pad], dim=-1)
        at = expand_time(a_t, x_t)
        c0 = (1.0 - at) * m[x_t]  # (...) float64
        only_z = c0 <= 0  # no x0 other than z explains x_t: the reverse step keeps z
        log_c0 = torch.log(torch.where(only_z, torch.ones_like(c0), c0)).float().unsqueeze(-1)
        log_c1 = torch.log(c0 + at).float().unsqueeze(-1)
        lp_z = lp.gather(-1, z)
        # log(1 - p(z)) as the log-sum of the other classes: exact and with finite gradients
        # where p(z) rounds to 1 in float32 (log1mexp(0) = -inf would make them NaN)
        log1m_pz = torch.logsumexp(lp.scatter(-1, z, -torch.inf), dim=-1, keepdim=True)
        log_W = _logaddexp(log1m_pz - log_c0, lp_z - log_c1)  # (..., 1)
        as_ = expand_time(a_s, x_t).unsqueeze(-1)
        log_w = (lp - log_c0).scatter(-1, z, lp_z - log_c1)
        mix = _logaddexp(
            torch.log(as_).float() + log_w,
            ((torch.log1p(-as_) + log_m).float() + log_W).expand_as(log_w),
        )
        log_fwd_other, log_fwd_self = self._fwd_logs(x_t, ratio)
        fwd = (
            log_fwd_other.float()
            .unsqueeze(-1)
            .expand_as(mix)
            .scatter(-1, z, log_fwd_self.float().unsqueeze(-1))
        )
        out = mix + fwd
        out = out - torch.logsumexp(out, dim=-1, keepdim=True)
        return _stay_where(out, only_z, z)

    # ---- prior ---------------------------------------------------------------------------
    def prior_log_probs(self) -> Tensor:
        return self._log_m.clone()

    def kl_prior(self, x0: Tensor) -> Tensor:
        x0 = check_ids(x0, self.num_classes, "x0")
        m, _ = self._m_on(x0.device)
        a1 = float(self.schedule.alpha(torch.ones(1, dtype=torch.float64)))
        m0 = m[x0]
        q0 = a1 + (1.0 - a1) * m0  # q(x_1 = x_0 | x_0)
        # y != x0 all carry the ratio q/m = 1 - a1; y = x0 carries q0 / m0.
        rest = (1.0 - m0) * ((1.0 - a1) * math.log(1.0 - a1) if a1 < 1.0 else 0.0)
        at_x0 = torch.where(q0 > 0, q0 * (torch.log(q0) - torch.log(m0)), torch.zeros_like(q0))
        return (rest + at_x0).float()

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        m, _ = self._m_on(torch.device(device) if device is not None else torch.device("cpu"))
        n = 1
        for d in shape:
            n *= int(d)
        if n == 0:
            return torch.empty(tuple(shape), dtype=torch.long, device=device)
        return torch.multinomial(m.float(), n, replacement=True, generator=generator).reshape(
            tuple(shape)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, schedule={self.schedule!r})"
