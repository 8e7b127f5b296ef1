"""Noise schedules: time t in [0, 1] -> cumulative keep-probability alpha(t).

Every structured process (uniform, absorbing, marginal) depends on time only through
alpha(t) = P(x_t still equals x_0 by "keeping"), so a schedule is all that distinguishes
D3PM's discrete-time chains from MDLM/SEDD-style continuous time.

- Continuous schedules define alpha(t) for any t in [0, 1] and its derivative.
- Discrete schedules have ``num_steps = T`` and are defined on the grid t = k / T only;
  they are built from per-step betas: alpha_k = prod_{j<=k} (1 - beta_j).

All schedule arithmetic is done in float64 on per-example scalars (shape (B,)), so
1 - alpha(t) stays accurate near t = 0 and alpha(t) near t = 1.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from discdiff.checks import check_values
from discdiff.registry import Registry

__all__ = [
    "Schedule",
    "ContinuousSchedule",
    "DiscreteSchedule",
    "LogLinear",
    "CosineAlpha",
    "PolynomialKappa",
    "CosineKappa",
    "d3pm_cosine",
    "d3pm_linear",
    "absorbing_schedule",
    "SCHEDULES",
    "register_schedule",
    "make_schedule",
    "parse_schedule_spec",
    "schedule_config",
    "schedule_from_config",
]

_GRID_TOL = 1e-4


def _check_time(t: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t)
    if not torch.is_floating_point(t):
        raise TypeError(f"time must be a float tensor in [0, 1], got dtype {t.dtype}")
    if t.numel() and check_values() and not bool(((t >= 0) & (t <= 1)).all()):
        bad = t[(t < 0) | (t > 1) | t.isnan()].flatten()[0].item()
        raise ValueError(f"time must lie in [0, 1], got {bad}")
    return t.to(torch.float64)


class Schedule(ABC):
    """Maps time t in [0, 1] to alpha(t), with alpha(0) = 1 and alpha decreasing."""

    #: number of steps T of a discrete-time schedule; None for continuous time.
    num_steps: int | None = None

    @abstractmethod
    def _alpha(self, t: Tensor) -> Tensor:
        """alpha at validated float64 times."""

    def alpha(self, t: Tensor) -> Tensor:
        """Cumulative keep-probability alpha(t), float64, same shape as ``t``."""
        return self._alpha(_check_time(t)).clamp(0.0, 1.0)

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        """1 - alpha(t), float64, without the cancellation of the subtraction near t = 0 where a
        schedule gives it in closed form (a loss weighted by 1 / (1 - alpha) reads it there)."""
        return (1.0 - self.alpha(t)).clamp(0.0, 1.0)

    def alpha_ratio(
        self, s: Tensor, t: Tensor, a_s: Tensor | None = None, a_t: Tensor | None = None
    ) -> Tensor:
        """alpha(t) / alpha(s) for s <= t: the keep-probability from time s to t.

        Defined as 1 where s = t (no time passes) and as 0 where alpha(s) = 0 < t - s.
        ``a_s`` / ``a_t``: alpha(s) and alpha(t) when the caller already has them (a reverse
        step needs all three; evaluating them again is most of a step's scalar work).
        """
        a_s = self.alpha(s) if a_s is None else a_s
        a_t = self.alpha(t) if a_t is None else a_t
        alive = a_s > 0
        ratio = torch.where(alive, a_t / torch.where(alive, a_s, 1.0), 0.0).clamp_(0.0, 1.0)
        return torch.where(torch.as_tensor(s).to(ratio) == torch.as_tensor(t).to(ratio), 1.0, ratio)

    def rate(self, t: Tensor) -> Tensor:
        """beta(t) = -alpha'(t) / alpha(t), the jump intensity of continuous time (float64);
        alpha' by autograd unless the schedule gives :meth:`alpha_prime` in closed form, so a
        continuous schedule needs only ``_alpha``. Infinite where alpha(t) = 0."""
        if self.num_steps is not None:
            raise TypeError(f"{type(self).__name__} is a discrete-time schedule and has no rate")
        a = self.alpha(t)
        da = self.alpha_prime(t)
        return torch.where(a > 0, -da / a.clamp_min(1e-300), torch.full_like(a, math.inf))

    def alpha_prime(self, t: Tensor) -> Tensor:
        """d alpha / dt (float64). Subclasses give a closed form; the default differentiates."""
        t = _check_time(t).detach().requires_grad_(True)
        with torch.enable_grad():
            a = self._alpha(t)
            (g,) = torch.autograd.grad(a.sum(), t)
        return g

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class ContinuousSchedule(Schedule):
    """Base for schedules defined at every t in [0, 1]: subclass it with ``_alpha(t)`` (float64
    times in, alpha out, decreasing from 1 at t = 0); ``alpha_prime`` and ``rate`` come by
    autograd unless overridden with a closed form. Works with every loss and sampler."""

    num_steps = None


class LogLinear(ContinuousSchedule):
    """alpha(t) = 1 - (1 - alpha_min) t: the total noise sigma(t) = -log alpha(t) is log-linear.

    The MDLM/SEDD default. With alpha_min = 0 (default) the process reaches its prior exactly
    at t = 1, which the continuous-time ELBO needs for absorbing processes.
    """

    def __init__(self, alpha_min: float = 0.0) -> None:
        if not 0.0 <= alpha_min < 1.0:
            raise ValueError(f"alpha_min must be in [0, 1), got {alpha_min}")
        self.alpha_min = float(alpha_min)

    def _alpha(self, t: Tensor) -> Tensor:
        return self.alpha_min + (1.0 - self.alpha_min) * (1.0 - t)  # exact at both ends

    def inverse_alpha(self, alpha: Tensor) -> Tensor:
        """The time t with alpha(t) = ``alpha`` in closed form, float64 in [0, 1]."""
        a = alpha.double()
        return (1.0 - (a - self.alpha_min) / (1.0 - self.alpha_min)).clamp(0.0, 1.0)

    def alpha_prime(self, t: Tensor) -> Tensor:
        t = _check_time(t)
        return torch.full_like(t, -(1.0 - self.alpha_min))

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        return ((1.0 - self.alpha_min) * _check_time(t)).clamp(0.0, 1.0)


class CosineAlpha(ContinuousSchedule):
    """alpha(t) = alpha_min + (1 - alpha_min) cos(pi t / 2): slow corruption early, fast late."""

    def __init__(self, alpha_min: float = 0.0) -> None:
        if not 0.0 <= alpha_min < 1.0:
            raise ValueError(f"alpha_min must be in [0, 1), got {alpha_min}")
        self.alpha_min = float(alpha_min)

    def _alpha(self, t: Tensor) -> Tensor:
        return self.alpha_min + (1.0 - self.alpha_min) * torch.sin(
            0.5 * math.pi * (1.0 - t)
        )  # exact 0 at t=1

    def inverse_alpha(self, alpha: Tensor) -> Tensor:
        """The time t with alpha(t) = ``alpha`` in closed form, float64 in [0, 1]."""
        u = ((alpha.double() - self.alpha_min) / (1.0 - self.alpha_min)).clamp(0.0, 1.0)
        return (1.0 - torch.asin(u) * (2.0 / math.pi)).clamp(0.0, 1.0)

    def alpha_prime(self, t: Tensor) -> Tensor:
        t = _check_time(t)
        return -(1.0 - self.alpha_min) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        # 1 - cos(x) = 2 sin^2(x / 2), x = pi t / 2
        half = torch.sin(0.25 * math.pi * _check_time(t))
        return ((1.0 - self.alpha_min) * 2.0 * half * half).clamp(0.0, 1.0)


class PolynomialKappa(ContinuousSchedule):
    """Discrete flow matching's kappa_tau = tau^n (Gat et al. 2024) as a schedule: flow time
    tau = 1 - t runs from the source (tau = 0) to the data (tau = 1), and alpha(t) =
    kappa(1 - t) = (1 - t)^n. n = 1 is the linear path (the same as :class:`LogLinear`)."""

    def __init__(self, exponent: float = 1.0) -> None:
        if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or exponent <= 0:
            raise ValueError(f"exponent must be a number > 0, got {exponent!r}")
        self.exponent = float(exponent)

    def kappa(self, tau: Tensor) -> Tensor:
        """kappa at flow times tau in [0, 1] (float64)."""
        return self._alpha(1.0 - _check_time(tau))

    def _alpha(self, t: Tensor) -> Tensor:
        return (1.0 - t) ** self.exponent

    def inverse_alpha(self, alpha: Tensor) -> Tensor:
        """The time t with alpha(t) = ``alpha`` in closed form, float64 in [0, 1]."""
        return (1.0 - alpha.double().clamp(0.0, 1.0) ** (1.0 / self.exponent)).clamp(0.0, 1.0)

    def alpha_prime(self, t: Tensor) -> Tensor:
        t = _check_time(t)
        return -self.exponent * (1.0 - t) ** (self.exponent - 1.0)

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        return (-torch.expm1(self.exponent * torch.log1p(-_check_time(t)))).clamp(0.0, 1.0)


class CosineKappa(ContinuousSchedule):
    """Discrete flow matching's kappa_tau = sin^2(pi tau / 2) as a schedule, alpha(t) =
    kappa(1 - t) = cos^2(pi t / 2): slow at both ends of the path."""

    def kappa(self, tau: Tensor) -> Tensor:
        """kappa at flow times tau in [0, 1] (float64)."""
        return self._alpha(1.0 - _check_time(tau))

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * (1.0 - t)) ** 2  # exactly 0 at t = 1, 1 at t = 0

    def inverse_alpha(self, alpha: Tensor) -> Tensor:
        """The time t with alpha(t) = ``alpha`` in closed form, float64 in [0, 1]."""
        root = alpha.double().clamp(0.0, 1.0).sqrt()
        return (1.0 - torch.asin(root) * (2.0 / math.pi)).clamp(0.0, 1.0)

    def alpha_prime(self, t: Tensor) -> Tensor:
        t = _check_time(t)
        return -0.5 * math.pi * torch.sin(math.pi * t)

    def one_minus_alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * _check_time(t)).square().clamp(0.0, 1.0)


class DiscreteSchedule(Schedule):
    """A T-step schedule from per-step corruption probabilities beta_1..beta_T.

    Step k (t = k / T) keeps a token with probability 1 - beta_k, so
    alpha(k / T) = prod_{j <= k} (1 - beta_j). Times off the grid raise ValueError.
    """

    def __init__(self, betas: Tensor | list[float]) -> None:
        b = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if b.numel() < 1:
            raise ValueError("a discrete schedule needs at least one step")
        if bool((b < 0).any()) or bool((b > 1).any()) or bool(b.isnan().any()):
            raise ValueError("betas must lie in [0, 1]")
        self.num_steps = int(b.numel())
        self._betas = b
        # Cumulative products in log space keep tiny alphas accurate over many steps.
        log_keep = torch.log1p(-b.clamp(max=1.0))
        self._alphas = torch.cat(
            [torch.ones(1, dtype=torch.float64), torch.exp(torch.cumsum(log_keep, 0))]
        )
        self._alphas_on: dict[torch.device, Tensor] = {}  # per device, made once

    @property
    def betas(self) -> Tensor:
        """Per-step betas, (T,) float64."""
        return self._betas.clone()

    @property
    def alphas(self) -> Tensor:
        """alpha at k = 0..T, (T + 1,) float64."""
        return self._alphas.clone()

    def step_index(self, t: Tensor) -> Tensor:
        """Integer step k = t * T (long), checking that t lies on the grid (a read of t,
        skipped inside :func:`discdiff.checks.trusted_values`)."""
        t = _check_time(t)
        kt = t * self.num_steps
        k = torch.round(kt)
        if t.numel() and check_values() and bool(((kt - k).abs() > _GRID_TOL).any()):
            bad = t[(kt - k).abs() > _GRID_TOL].flatten()[0].item()
            raise ValueError(
                f"time {bad} is not on the grid k/{self.num_steps} of this {self.num_steps}-step schedule"
            )
        return k.long()

    def _alpha(self, t: Tensor) -> Tensor:
        k = self.step_index(t)
        if k.device not in self._alphas_on:
            self._alphas_on[k.device] = self._alphas.to(k.device)
        return self._alphas_on[k.device][k]

    def alpha_prime(self, t: Tensor) -> Tensor:
        raise TypeError("a discrete-time schedule has no derivative; use a continuous schedule")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_steps={self.num_steps})"


def d3pm_cosine(num_steps: int, s: float = 0.008) -> DiscreteSchedule:
    """The cosine schedule of Hoogeboom et al. / D3PM: alpha_k = f(k)/f(0), f = cos^2 of a ramp."""
    _check_steps(num_steps)
    k = torch.arange(num_steps + 1, dtype=torch.float64)
    f = torch.cos((k / num_steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = (f / f[0]).clamp(0.0, 1.0)
    abar[-1] = 0.0  # f(T) is cos(pi/2)^2 = 0 up to rounding: reach the prior exactly
    prev = abar[:-1]
    betas = torch.where(prev > 0, 1.0 - abar[1:] / prev.clamp_min(1e-300), torch.ones_like(prev))
    return DiscreteSchedule(betas.clamp(0.0, 1.0))


def d3pm_linear(
    num_steps: int, beta_start: float = 0.02, beta_end: float = 1.0
) -> DiscreteSchedule:
    """Per-step betas linear from ``beta_start`` to ``beta_end`` (D3PM's linear beta schedule)."""
    _check_steps(num_steps)
    if not (0.0 <= beta_start <= 1.0 and 0.0 <= beta_end <= 1.0):
        raise ValueError(f"betas must lie in [0, 1], got {beta_start}, {beta_end}")
    return DiscreteSchedule(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))


def absorbing_schedule(num_steps: int) -> DiscreteSchedule:
    """D3PM's absorbing schedule beta_k = 1 / (T - k + 1): alpha_k = 1 - k / T, all masked at T."""
    _check_steps(num_steps)
    k = torch.arange(1, num_steps + 1, dtype=torch.float64)
    return DiscreteSchedule(1.0 / (num_steps - k + 1))


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")


# ---- the registry ----------------------------------------------------------------------------
#: name -> factory(**options) -> Schedule; options are JSON values (a run saves them)
SCHEDULES: Registry[Any] = Registry("schedule")


def register_schedule(name: str, factory: Any = None, *, replace: bool = False) -> Any:
    """Register a schedule factory (a Schedule subclass or a function of JSON options).

    A user schedule that defines only ``_alpha(t)`` (a :class:`ContinuousSchedule` with an
    ``alpha_prime``) then works by name in every task config and on the command line.
    Usable as a decorator when ``factory`` is omitted.
    """
    return SCHEDULES.register(name, factory, replace=replace)


def parse_schedule_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"NAME"``, ``"NAME:VALUE"`` (the factory's first option) or ``"NAME:KEY=VALUE,..."``
    -> (name, options): how a command line names a schedule with its options
    (``--schedule kappa-poly:2``: discrete flow matching's path kappa = tau^2)."""
    name, sep, rest = spec.partition(":")
    if not sep:
        return spec, {}
    if not rest.strip():
        raise ValueError(f"schedule {spec!r}: nothing after ':' (NAME:VALUE or NAME:KEY=VALUE)")
    options: dict[str, Any] = {}
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        if not eq:
            import inspect

            params = [p for p in inspect.signature(SCHEDULES.get(name)).parameters.values()]
            if len(rest.split(",")) != 1 or not params:
                raise ValueError(f"schedule {spec!r}: write NAME:VALUE or NAME:KEY=VALUE,...")
            key, value = params[0].name, part
        try:
            number = float(value)
        except ValueError:
            raise ValueError(
                f"schedule {spec!r}: {key.strip()}={value!r} is not a number"
            ) from None
        options[key.strip()] = int(number) if number.is_integer() and "." not in value else number
    return name, options


def make_schedule(name: str | dict[str, Any] | Schedule, **options: Any) -> Schedule:
    """The schedule registered as ``name`` built with ``options`` (or from a config dict, or a
    ``"NAME:VALUE"`` / ``"NAME:KEY=VALUE,..."`` spec: :func:`parse_schedule_spec`).

    The result remembers how it was made, so :func:`schedule_config` can save it.
    """
    if isinstance(name, Schedule):
        return name
    if isinstance(name, dict):
        return schedule_from_config(name)
    if ":" in name:
        name, parsed = parse_schedule_spec(name)
        options = {**parsed, **options}
    factory = SCHEDULES.get(name)
    try:
        sched = factory(**options)
    except TypeError as err:
        raise ValueError(
            f"schedule {name!r} does not take options {sorted(options)}: {err}"
        ) from err
    if not isinstance(sched, Schedule):
        raise TypeError(
            f"schedule factory {name!r} returned {type(sched).__name__}, not a Schedule"
        )
    sched._config = {"type": name, **options}  # type: ignore[attr-defined]
    return sched


def schedule_config(schedule: Schedule) -> dict[str, Any]:
    """``{"type": name, **options}`` of a schedule built by :func:`make_schedule` (or a
    registered class built with its ``alpha_min``)."""
    cfg = getattr(schedule, "_config", None)
    if cfg is not None:
        return dict(cfg)
    name = SCHEDULES.name_of(type(schedule))
    if name is not None and hasattr(schedule, "alpha_min"):
        return {"type": name, "alpha_min": schedule.alpha_min}
    raise ValueError(
        f"{schedule!r} was not built through the schedule registry (make_schedule), so it "
        "cannot be saved by name"
    )


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """Inverse of :func:`schedule_config`."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"a schedule config needs a 'type', got {config!r}")
    options = {k: v for k, v in config.items() if k != "type"}
    return make_schedule(config["type"], **options)


register_schedule("loglinear", LogLinear)
register_schedule("cosine", CosineAlpha)
register_schedule("d3pm-cosine", d3pm_cosine)
register_schedule("d3pm-linear", d3pm_linear)
register_schedule("d3pm-absorbing", absorbing_schedule)
register_schedule("kappa-poly", PolynomialKappa)
register_schedule("kappa-cosine", CosineKappa)
