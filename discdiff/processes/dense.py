"""Dense transitions: any row-stochastic step matrices Q_1..Q_T (D3PM's general form).

This is the research escape hatch (e.g. D3PM's discretized Gaussian for ordinal data) and the
brute-force reference that every structured process is tested against: it builds the explicit
S x S matrices, multiplies them step by step, and applies Bayes' rule with an explicit sum.
Convention: q(x_k = j | x_{k-1} = i) = Q_k[i, j] (rows are "from").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from discdiff.checks import check_values
from discdiff.processes.base import Process, check_ids, check_time
from discdiff.schedules import DiscreteSchedule

__all__ = ["Dense"]


def _log(x: Tensor) -> Tensor:
    """log that is -inf at 0 with a zero (not NaN) gradient there: exact zeros are common here."""
    pos = x > 0
    return torch.where(
        pos, torch.log(torch.where(pos, x, torch.ones_like(x))), torch.full_like(x, -torch.inf)
    )


def _logsumexp(x: Tensor, dim: int) -> Tensor:
    """logsumexp that is -inf (with a zero gradient, not NaN) where every term is -inf."""
    m = x.detach().amax(dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m.squeeze(dim) + _log(torch.exp(x - m).sum(dim))


_ROW_TOL = 1e-6


class Dense(Process):
    """Discrete-time process from explicit step matrices ``Q`` of shape (T, S, S).

    ``num_classes`` (default S) says which leading states clean data can take (K <= S); the
    ``prior`` pi defaults to the mean of the rows of Qbar_T over those classes.
    """

    def __init__(
        self,
        step_matrices: Tensor,
        num_classes: int | None = None,
        prior: Tensor | None = None,
        dtype: torch.dtype = torch.float64,
        parameterization: str = "mean",
    ) -> None:
        from discdiff.processes.mixing import PARAMETERIZATIONS

        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        self.parameterization = parameterization
        Q = torch.as_tensor(step_matrices)
        if Q.dim() == 2:
            Q = Q.unsqueeze(0)
        if Q.dim() != 3 or Q.shape[1] != Q.shape[2]:
            raise ValueError(f"step matrices must have shape (T, S, S), got {tuple(Q.shape)}")
        Q = Q.to(dtype)
        if not bool(torch.isfinite(Q).all()) or bool((Q < 0).any()):
            raise ValueError("step matrices must be finite and non-negative")
        sums = Q.sum(-1)
        off = (sums - 1).abs()
        if bool((off > _ROW_TOL).any()):
            k, i = (off > _ROW_TOL).nonzero()[0].tolist()
            raise ValueError(
                f"row {i} of step matrix {k + 1} sums to {sums[k, i].item():.8g}, not 1"
            )
        self.num_steps = int(Q.shape[0])
        self.num_states = int(Q.shape[1])
        self.num_classes = self.num_states if num_classes is None else int(num_classes)
        if not 1 <= self.num_classes <= self.num_states:
            raise ValueError(f"num_classes must be in [1, {self.num_states}], got {num_classes}")
        self._Q = Q
        self._Qbar = torch.empty(self.num_steps + 1, self.num_states, self.num_states, dtype=dtype)
        self._Qbar[0] = torch.eye(self.num_states, dtype=dtype)  # (T + 1, S, S); Qbar_0 = I
        for k in range(self.num_steps):
            torch.matmul(self._Qbar[k], Q[k], out=self._Qbar[k + 1])
        self._device_cache: dict[torch.device, Tensor] = {}
        if prior is None:
            pi = self._Qbar[-1, : self.num_classes].mean(0)
        else:
            pi = torch.as_tensor(prior, dtype=dtype).flatten()
            if (
                pi.numel() != self.num_states
                or bool((pi < 0).any())
                or abs(float(pi.sum()) - 1) > 1e-6
            ):
                raise ValueError(f"prior must be a probability vector of length {self.num_states}")
        self._prior = pi
        self._span_cache: dict[tuple[int, int], Tensor] = {}
        self._tiny: Tensor | None = None

    @classmethod
    def from_process(cls, process: Process, num_steps: int | None = None) -> Dense:
        """The dense twin of a structured process: step matrices from its schedule.

        Q_k = a_k I + (1 - a_k) 1 m^T with a_k = alpha(k/T) / alpha((k-1)/T). A continuous
        schedule is evaluated on the grid k / ``num_steps``.
        """
        from discdiff.processes.mixing import MixingProcess

        if not isinstance(process, MixingProcess):
            raise TypeError(
                f"from_process needs a structured process, got {type(process).__name__}"
            )
        T = num_steps if num_steps is not None else process.num_steps
        if T is None:
            raise ValueError("a continuous-time process needs num_steps for its dense twin")
        if process.num_steps is not None and T != process.num_steps:
            raise ValueError(f"the process has {process.num_steps} steps, not {T}")
        grid = torch.arange(T + 1, dtype=torch.float64) / T
        a = process.schedule.alpha_ratio(grid[:-1], grid[1:])  # (T,)
        m = process.limit
        eye = torch.eye(process.num_states, dtype=torch.float64)
        Q = a[:, None, None] * eye + (1 - a)[:, None, None] * m[None, None, :]
        return cls(
            Q, num_classes=process.num_classes, prior=m, parameterization=process.parameterization
        )

    # ---- matrices ------------------------------------------------------------------------
    @property
    def step_matrices(self) -> Tensor:
        """Q_1..Q_T, (T, S, S)."""
        return self._Q.clone()

    def cumulative(self, k: int) -> Tensor:
        """Qbar_k = Q_1 ... Q_k, (S, S)."""
        return self._Qbar[k].clone()

    def _qbar_on(self, device: torch.device) -> Tensor:
        if device.type == "cpu":
            return self._Qbar
        if device not in self._device_cache:
            self._device_cache[device] = self._Qbar.to(device)
        return self._device_cache[device]

    def span(self, j: int, k: int) -> Tensor:
        """Q_{j+1} ... Q_k: the transition from step j to step k >= j, (S, S)."""
        if k == j + 1:
            return self._Q[j]
        if (j, k) not in self._span_cache:
            out = torch.eye(self.num_states, dtype=self._Q.dtype)
            for i in range(j, k):
                out = out @ self._Q[i]
            self._span_cache[(j, k)] = out
        return self._span_cache[(j, k)]

    def _steps(self, t: Tensor | float, batch: int, name: str = "t") -> Tensor:
        t = check_time(t, batch, name)
        grid = self.__dict__.get("_grid")
        if grid is None:  # made once: building a schedule validates its betas by reading them
            grid = self.__dict__["_grid"] = DiscreteSchedule([0.0] * self.num_steps)
        return grid.step_index(t)

    # ---- forward -------------------------------------------------------------------------
    def _marginal_probs(self, x0: Tensor, k: Tensor) -> Tensor:
        Qbar = self._qbar_on(x0.device)
        if self._x0_is_ids(x0):
            kk = k.view(-1, *([1] * (x0.dim() - 1)))
            return Qbar[kk, x0.long()]  # (..., S)
        p = torch.softmax(x0.to(self._Q.dtype), dim=-1)
        p = torch.nn.functional.pad(p, (0, self.num_states - self.num_classes))
        flat = p.reshape(p.shape[0], -1, self.num_states)  # (B, N, S)
        return torch.bmm(flat, Qbar[k]).reshape(*p.shape[:-1], self.num_states)

    def marginal_log(self, x0: Tensor, t: Tensor | float) -> Tensor:
        k = self._steps(t, x0.shape[0])
        return _log(self._marginal_probs(x0, k))

    def sample_marginal(
        self, x0: Tensor, t: Tensor | float, generator: torch.Generator | None = None
    ) -> Tensor:
        x0 = check_ids(x0, self.num_classes, "x0")
        probs = self._marginal_probs(x0, self._steps(t, x0.shape[0]))
        flat = probs.reshape(-1, self.num_states).float()
        return torch.multinomial(flat, 1, generator=generator).reshape(x0.shape)

    # ---- reverse -------------------------------------------------------------------------
    def posterior_log(
        self, x_t: Tensor, x0: Tensor, s: Tensor | float, t: Tensor | float
    ) -> Tensor:
        """Bayes' rule with explicit sums over the dense matrices (see Process.posterior_log).

        Logits with parameterization "mean" give sum_x0 p(x0) q(x_s | x_t, x0) over the x0 with
        q(x_t | x0) > 0; with "d3pm" they give D3PM's eq. 4.
        """
        x_t = check_ids(x_t, self.num_states, "x_t")
        B = x_t.shape[0]
        ks, kt = self._steps(s, B, "s"), self._steps(t, B, "t")
        if check_values() and bool((ks > kt).any()):
            raise ValueError("posterior needs s <= t for every example")
        spans = [self.span(int(a), int(b)).to(x_t.device) for a, b in zip(ks, kt, strict=True)]
        fwd = torch.stack([sp[:, x_t[i]].movedim(0, -1) for i, sp in enumerate(spans)])  # (..., S)
        if self._x0_is_ids(x0) or self.parameterization == "d3pm":
            joint = self._marginal_probs(x0, ks).to(self._Q.dtype) * fwd
            return _log(joint) - _log(joint.sum(-1, keepdim=True))
        # sum_x0 p(x0) q(x_s = y | x_t, x0). Fast form: p(x0) / q(x_t | x0) times q(x_s | x0) by one
        # (K, S) matmul per example. With a narrow kernel (the discretized Gaussian's first steps)
        # q(x_t | x0) reaches 1e-310 for far x0 and that ratio overflows (NaN rows) or carries a
        # denormal's error; those examples take the exact log-space form instead (~K x slower).
        log_p0 = torch.log_softmax(x0.to(self._Q.dtype), -1)  # (B, ..., K)
        log_fwd = _log(fwd)  # (B, ..., S): log q(x_t | x_s = y)
        tiny = self._tiny_on(x_t.device)
        exact = tiny[ks] | tiny[kt]  # (B,)
        out = torch.empty_like(log_fwd)
        for rows, fn in ((~exact, self._mean_fast), (exact, self._mean_exact)):
            idx = rows.nonzero().squeeze(1)
            if idx.numel():
                out[idx] = fn(log_p0[idx], x_t[idx], log_fwd[idx], ks[idx], kt[idx])
        return out - torch.logsumexp(out, -1, keepdim=True)  # rounding (and infeasible x0)

    def _tiny_on(self, device: torch.device) -> Tensor:
        """(T + 1,) bool: Qbar_k has positive entries below 1e-150 (ratios of them overflow)."""
        if self._tiny is None:
            Q = self._Qbar
            self._tiny = ((Q > 0) & (Q < 1e-150)).flatten(1).any(1)
        return self._tiny.to(device)

    def _mean_fast(
        self, log_p0: Tensor, x_t: Tensor, log_fwd: Tensor, ks: Tensor, kt: Tensor
    ) -> Tensor:
        """Unnormalised log sum_x0 p(x0) q(x_s | x0) q(x_t | x_s) / q(x_t | x0), (B, ..., S)."""
        K, B = self.num_classes, x_t.shape[0]
        Qbar = self._qbar_on(x_t.device)
        lik = (
            Qbar[kt][:, :K]
            .gather(  # (B, ..., K): q(x_t | x0)
                2, x_t.reshape(B, 1, -1).expand(B, K, -1)
            )
            .transpose(1, 2)
            .reshape(*log_p0.shape)
        )
        w = torch.where(lik > 0, log_p0.exp() / torch.where(lik > 0, lik, 1.0), 0.0)
        mix = torch.bmm(w.reshape(B, -1, K), Qbar[ks][:, :K])  # (B, N, S)
        return _log(mix.reshape(log_fwd.shape)) + log_fwd

    def _mean_exact(
        self, log_p0: Tensor, x_t: Tensor, log_fwd: Tensor, ks: Tensor, kt: Tensor
    ) -> Tensor:
        """The same sum with each x0's posterior q(x_s | x_t, x0) normalised in log space."""
        K, S, B = self.num_classes, self.num_states, x_t.shape[0]
        log_qs = _log(self._qbar_on(x_t.device)[ks][:, :K])  # (B, K, S): log q(x_s = y | x0)
        lp0 = log_p0.reshape(B, -1, K)
        lf = log_fwd.reshape(B, -1, S)
        out = torch.empty(B, lp0.shape[1], S, dtype=lp0.dtype, device=lp0.device)
        step = max(1, (1 << 22) // (B * K * S))  # positions per chunk: <= 4M terms
        for j in range(0, lp0.shape[1], step):
            joint = log_qs[:, None] + lf[:, j : j + step, None, :]  # (B, n, K, S)
            norm = _logsumexp(joint, dim=-1).unsqueeze(-1)  # (B, n, K, 1): log q(x_t | x0)
            post = torch.where(
                torch.isfinite(norm), joint - norm, torch.full_like(joint, -torch.inf)
            )  # log q(x_s | x_t, x0); -inf rows for x0 that cannot give x_t
            out[:, j : j + step] = _logsumexp(lp0[:, j : j + step, :, None] + post, dim=2)
        return out.reshape(log_fwd.shape)

    # ---- prior ---------------------------------------------------------------------------
    def prior_log_probs(self) -> Tensor:
        return torch.log(self._prior)

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        n = 1
        for d in shape:
            n *= int(d)
        out = torch.multinomial(
            self._prior.float(), max(n, 1), replacement=True, generator=generator
        )
        return out[:n].reshape(tuple(shape)).to(device)

    def kl_prior(self, x0: Tensor) -> Tensor:
        x0 = check_ids(x0, self.num_classes, "x0")
        q = self._qbar_on(x0.device)[-1][x0]  # (..., S)
        pi = self._prior.to(x0.device)
        terms = torch.where(q > 0, q * (torch.log(q) - torch.log(pi)), torch.zeros_like(q))
        return terms.sum(-1)

    def __repr__(self) -> str:
        return f"Dense(num_steps={self.num_steps}, num_states={self.num_states}, num_classes={self.num_classes})"
