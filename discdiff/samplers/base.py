"""What every sampler shares: settings, one sampling call's context, time grids, CFG.

A :class:`Sampler` holds its settings; ``sample(denoiser, processes, shape, ...)`` builds a
:class:`SamplingRun` (the fields, device, generator, fixed positions, call counter) and hands it
to the subclass's ``_sample``. Internally every sample is a dict of fields (see
:mod:`discdiff.fields`); the result is given back in the caller's form.

Classifier-free guidance (``guidance = w != 1``): the denoiser is called twice per step, with
``cond`` and with ``cond`` whose ``"label"`` is replaced by the null label, and the per-position
log-probabilities are combined as ``log p_u + w (log p_c - log p_u)`` (the standard form, Ho &
Salimans 2022), then renormalised. So w = 0 is the unconditional model, w = 1 the conditional
one (a single call), w > 1 pushes towards the label. Both calls are counted.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from discdiff.categorical import process_logits
from discdiff.checks import trusted_values
from discdiff.fields import SINGLE, call_denoiser
from discdiff.processes.base import Process, check_ids
from discdiff.samplers.grid import (  # re-exported: the samplers import them from here
    MAX_STEPS,  # noqa: F401
    _check_positive_int,  # noqa: F401
    check_grid_power,  # noqa: F401
    common_num_steps,  # noqa: F401
    time_for_alpha,
    time_grid,
)

__all__ = [
    "SampleResult",
    "Sampler",
    "ProcessMismatch",
    "SamplingRun",
    "time_grid",
    "time_for_alpha",
    "default_device",
]

Fields = Tensor | dict[str, Tensor]


class ProcessMismatch(TypeError, ValueError):
    """A sampler asked to run on a process it cannot serve (first-hitting on uniform noise,
    SUNDAE on a mask state): a choice the user made, so the command line reports it in one line
    with exit 2, while a plain TypeError is a bug. A TypeError, for callers that catch those."""


@dataclass
class SampleResult:
    """What a sampler returns.

    samples: ids (B, ...) for one field, or a dict field -> ids for several.
    num_calls: denoiser invocations made (a CFG step makes two).
    trajectory: the state after every step (first entry: the starting noise), if asked for.
    rows_evaluated: batch rows fed through the denoiser over all calls; equals
        num_calls * B unless a sampler evaluates only some rows (the caching sampler).
    """

    samples: Fields
    num_calls: int
    trajectory: list[Fields] | None = None
    rows_evaluated: int = 0


def default_device(denoiser: Any) -> torch.device:
    """The device of the denoiser's parameters if it has any, else CPU."""
    params = getattr(denoiser, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def select_rows(obj: Any, rows: Tensor, batch: int) -> Any:
    """Rows ``rows`` of every tensor in ``obj`` whose first dim is the batch (dicts recursed)."""
    if isinstance(obj, Tensor):
        return obj.index_select(0, rows) if obj.dim() >= 1 and obj.shape[0] == batch else obj
    if isinstance(obj, Mapping):
        return {k: select_rows(v, rows, batch) for k, v in obj.items()}
    return obj


class SamplingRun:
    """One call of ``Sampler.sample``: fields, device, generator, fixed positions, counters."""

    def __init__(
        self,
        sampler: Sampler,
        denoiser: Callable[..., Any],
        processes: Process | Mapping[str, Process],
        shape: Sequence[int] | Mapping[str, Sequence[int]],
        cond: Any,
        fixed: Any,
        generator: torch.Generator | None,
        device: torch.device | str | None,
        return_trajectory: bool,
        progress: bool,
    ) -> None:
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable, got {type(denoiser).__name__}")
        self.sampler = sampler
        self.denoiser = denoiser
        if isinstance(processes, Process):
            if isinstance(shape, Mapping):
                raise TypeError(
                    "one process was given but shape is a dict; pass a dict of processes"
                )
            self.single = True
            self.processes: dict[str, Process] = {SINGLE: processes}
            shapes = {SINGLE: shape}
        else:
            if (
                not isinstance(processes, Mapping)
                or not processes
                or not all(isinstance(p, Process) for p in processes.values())
            ):
                raise TypeError(
                    "processes must be a Process or a non-empty dict of field name -> Process"
                )
            if not isinstance(shape, Mapping) or set(shape) != set(processes):
                raise ValueError(f"shape must be a dict with the fields {sorted(processes)}")
            self.single = False
            self.processes = dict(processes)
            shapes = dict(shape)
        self.shapes: dict[str, tuple[int, ...]] = {}
        for k, shp in shapes.items():
            try:
                shp = tuple(int(d) for d in shp)
            except TypeError as e:
                raise TypeError(
                    f"shape for field {k!r} must be a tuple of ints, got {shp!r}"
                ) from e
            if len(shp) < 1 or any(d < 1 for d in shp):
                raise ValueError(
                    f"shape for field {k!r} must be (B, ...) with sizes >= 1, got {shp}"
                )
            self.shapes[k] = shp
        batches = {s[0] for s in self.shapes.values()}
        if len(batches) != 1:
            raise ValueError(f"all fields must share the batch size, got {sorted(batches)}")
        self.batch = batches.pop()
        self.device = torch.device(device) if device is not None else default_device(denoiser)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        self.cond = cond
        self.fixed = self._fixed_dict(fixed)
        self.num_calls = 0
        self.rows_evaluated = 0
        self.call_checks: list[Tensor] = []  # per denoiser call: not finite if its logits broke
        self.trajectory: list[dict[str, Tensor]] | None = [] if return_trajectory else None
        self.progress = progress
        self._uncond = self._null_cond() if sampler.guidance != 1.0 else None

    # ---- inputs ---------------------------------------------------------------------------
    def _fixed_dict(self, fixed: Any) -> dict[str, tuple[Tensor, Tensor]]:
        if fixed is None:
            return {}
        if self.single and not isinstance(fixed, Mapping):
            fixed = {SINGLE: fixed}
        if not isinstance(fixed, Mapping):
            raise TypeError("fixed must be (values, mask), or a dict field -> (values, mask)")
        out = {}
        for k, pair in fixed.items():
            if k not in self.processes:
                raise ValueError(
                    f"fixed names field {k!r}; the fields are {sorted(self.processes)}"
                )
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"fixed for field {k!r} must be a pair (values, mask)")
            values, mask = pair
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"the fixed mask for field {k!r} must be a bool tensor")
            if tuple(mask.shape) != self.shapes[k]:
                raise ValueError(
                    f"the fixed mask for field {k!r} has shape {tuple(mask.shape)}, expected {self.shapes[k]}"
                )
            values = check_ids(
                values, self.processes[k].num_classes, f"fixed values of field {k!r}"
            )
            if tuple(values.shape) != self.shapes[k]:
                raise ValueError(
                    f"fixed values for field {k!r} have shape {tuple(values.shape)}, expected {self.shapes[k]}"
                )
            out[k] = (values.to(self.device), mask.to(self.device))
        return out

    def _null_cond(self) -> Any:
        cond = self.cond
        if not isinstance(cond, Mapping) or "label" not in cond:
            raise ValueError(
                f"guidance={self.sampler.guidance} needs cond as a dict with a 'label'"
            )
        null = self.sampler.null_label
        if null is None:
            null = cond.get("null_label")
        if null is None:
            raise ValueError(
                "guidance needs a null label: pass null_label to the sampler or cond['null_label']"
            )
        label = cond["label"]
        null_t = torch.as_tensor(null, dtype=label.dtype, device=label.device)
        return {**cond, "label": torch.zeros_like(label) + null_t}

    # ---- state ----------------------------------------------------------------------------
    def prior(self) -> dict[str, Tensor]:
        """x_1 ~ prior for every field, fixed positions set: the starting state."""
        gen_dev = self.generator.device if self.generator is not None else self.device
        x = {
            k: p.prior_sample(self.shapes[k], generator=self.generator, device=gen_dev).to(
                self.device
            )
            for k, p in self.processes.items()
        }
        return self.apply_fixed(x)

    def apply_fixed(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Overwrite the given positions with their values (never changed, seen as given)."""
        out = dict(x)
        for k, (values, mask) in self.fixed.items():
            out[k] = torch.where(mask, values, x[k])
        return out

    def free_mask(self, k: str) -> Tensor | None:
        """True where field ``k`` is free to change (not fixed), or None when nothing is fixed."""
        return ~self.fixed[k][1] if k in self.fixed else None

    def record(self, x: dict[str, Tensor]) -> None:
        """Append the state to the trajectory, if one was asked for."""
        if self.trajectory is not None:
            self.trajectory.append(self.unwrap({k: v.clone() for k, v in x.items()}))

    def unwrap(self, x: dict[str, Tensor]) -> Fields:
        """The caller's form: a tensor for a single field, else the dict."""
        return x[SINGLE] if self.single else x

    def progress_bar(self, iterable: Iterable[Any], total: int | None = None) -> Iterable[Any]:
        """``iterable`` wrapped in tqdm when progress was asked for."""
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=type(self.sampler).__name__, leave=False)

    # ---- the model ------------------------------------------------------------------------
    def _call(
        self,
        x: dict[str, Tensor],
        t: Tensor,
        cond: Any,
        rows: Tensor | None,
        normalise: bool = True,
    ) -> dict[str, Tensor]:
        if rows is not None:  # index_select: a few us a call cheaper than x[rows] on CPU
            x = {k: v.index_select(0, rows) for k, v in x.items()}
            t = t.index_select(0, rows)
            cond = select_rows(cond, rows, self.batch)
        self.num_calls += 1
        self.rows_evaluated += int(t.shape[0])
        if isinstance(cond, Mapping) and "null_label" in cond:  # a sampler setting, not model input
            cond = {k: v for k, v in cond.items() if k != "null_label"}
        out = call_denoiser(self.denoiser, x, t.float(), cond, self.single, self.processes)
        # tracked on the device and read once, at the end of sampling: a class may be ruled
        # out with -inf, but NaN or +inf anywhere (both survive the max) or a position with no
        # finite logit is broken, and the float64 sum of the positions' maxima (no overflow
        # from float32 values) is finite exactly when none is (two small kernels a call)
        check = None
        for v in out.values():
            c = v.amax(-1).sum(dtype=torch.float64)
            check = c if check is None else check + c
        self.call_checks.append(check)
        if not normalise:
            return {k: v.float() for k, v in out.items()}
        return {k: torch.log_softmax(v.float(), dim=-1) for k, v in out.items()}

    def check_finite(self) -> None:
        """Raise ValueError naming the first denoiser call whose logits were NaN or +inf (or
        -inf for every class of a position)."""
        if not self.call_checks:
            return
        bad = (~torch.stack(self.call_checks).isfinite()).nonzero()
        if bad.numel():
            first = int(bad[0, 0]) + 1
            raise ValueError(
                f"the denoiser returned NaN or +inf logits (or -inf for every class of a "
                f"position) at call {first} of {self.num_calls} "
                f"({type(self.sampler).__name__}); its weights or inputs are broken"
            )

    @torch.no_grad()
    def log_probs(
        self, x: dict[str, Tensor], t: Tensor, rows: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The denoiser's x_0 log-probabilities per field after guidance, temperature and top-p.

        x: fields (B, ...); t: (B,) float64; rows: optional index of the rows to evaluate
        (the output then has those rows only). Returns field -> (B', ..., K).
        """
        w = self.sampler.guidance
        lp = self._call(x, t, self.cond, rows)
        if self._uncond is not None:
            lu = self._call(x, t, self._uncond, rows)
            lp = {k: torch.log_softmax(lu[k] + w * (lp[k] - lu[k]), dim=-1) for k in lp}
        s = self.sampler
        if s.temperature == 1.0 and s.top_p == 1.0:  # already normalised: no third pass
            return lp
        return {k: process_logits(v, s.temperature, s.top_p) for k, v in lp.items()}

    @torch.no_grad()
    def scores(
        self, x: dict[str, Tensor], t: Tensor, rows: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The x_0 logits after guidance, before temperature and top-p: log-probabilities up to
        a constant per position (not normalised without guidance). For a sampler that draws
        at a few positions of many: :func:`discdiff.categorical.process_logits` on those."""
        if self._uncond is None:
            return self._call(x, t, self.cond, rows, normalise=False)
        w = self.sampler.guidance
        lp = self._call(x, t, self.cond, rows)
        lu = self._call(x, t, self._uncond, rows)
        return {k: lu[k] + w * (lp[k] - lu[k]) for k in lp}

    def full_time(self, t: float) -> Tensor:
        """A scalar time as a (B,) float64 tensor on the device."""
        return torch.full((self.batch,), float(t), dtype=torch.float64, device=self.device)

    def grid_times(self, grid: Tensor) -> Tensor:
        """Every grid time as a (B,) row, (n + 1, B) float64 on the device: made once, so
        that a step takes row i (a view) instead of reading grid[i] back to the host."""
        return grid.to(self.device, torch.float64)[:, None].expand(grid.numel(), self.batch)


class Sampler(ABC):
    """Base of all samplers: temperature, top-p and classifier-free guidance settings.

    temperature: divides the x_0 logits (0 = argmax: the most likely class, deterministic);
    top_p: nucleus filtering of the x_0
    logits; guidance: CFG scale w (1 = off; see the module docstring); null_label: the label
    id meaning "no label" for CFG (default: ``cond["null_label"]``).
    """

    def __init__(
        self,
        temperature: float = 1.0,
        top_p: float = 1.0,
        guidance: float = 1.0,
        null_label: int | None = None,
    ) -> None:
        if (
            not isinstance(temperature, (int, float))
            or isinstance(temperature, bool)
            or not math.isfinite(temperature)
            or temperature < 0
        ):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
            raise ValueError(
                f"guidance must be a finite number >= 0 (0 = unconditional, 1 = off), "
                f"got {guidance!r}"
            )
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.guidance = float(guidance)
        self.null_label = null_label

    def check_processes(self, processes: dict[str, Process]) -> None:
        """Raise if this sampler cannot serve these processes (subclasses restrict)."""
        return None

    def sample(
        self,
        denoiser: Callable[..., Any],
        processes: Process | Mapping[str, Process],
        shape: Sequence[int] | Mapping[str, Sequence[int]],
        cond: Any = None,
        fixed: Any = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        return_trajectory: bool = False,
        progress: bool = False,
    ) -> SampleResult:
        """Draw a batch of samples of ``shape`` (B, ...) (a dict of shapes for several fields).

        cond: passed to the denoiser untouched. fixed: ``(values, mask)`` (or a dict per field)
        with mask True where the value is given: those positions hold their value from the
        start, are seen by the denoiser as given, and never change. Randomness comes only
        from ``generator``.
        """
        run = SamplingRun(
            self,
            denoiser,
            processes,
            shape,
            cond,
            fixed,
            generator,
            device,
            return_trajectory,
            progress,
        )
        self.check_processes(run.processes)
        was_training = getattr(denoiser, "training", None)
        if was_training:
            denoiser.eval()
        stateful = _stateful(denoiser)  # e.g. self-conditioning: feeds back the last estimate
        if stateful is not None:
            stateful.begin_sampling()
        try:
            with torch.no_grad(), trusted_values():  # inputs checked above: no per-step syncs
                x = self._sample(run)
            run.check_finite()
        finally:
            if stateful is not None:
                stateful.end_sampling()
            if was_training:
                denoiser.train()
        return SampleResult(
            samples=run.unwrap(x),
            num_calls=run.num_calls,
            trajectory=run.trajectory,
            rows_evaluated=run.rows_evaluated,
        )

    @abstractmethod
    def _sample(self, run: SamplingRun) -> dict[str, Tensor]:
        """Run the sampler; returns the final fields."""

    # ---- configs --------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON settings ``{"type": registered name or import path, **constructor options}``."""
        import inspect

        from discdiff.registry import import_path
        from discdiff.samplers.registry import SAMPLERS

        name = SAMPLERS.name_of(type(self)) or import_path(type(self))
        out: dict[str, Any] = {"type": name}
        for key in inspect.signature(type(self).__init__).parameters:
            if key != "self" and hasattr(self, key):
                value = getattr(self, key)
                if hasattr(value, "config") and callable(value.config):
                    value = value.config()  # a setting that is an object (a constraint)
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sampler:
        """Inverse of :meth:`config` (called on ``Sampler`` or on the class itself)."""
        from discdiff.samplers.registry import SAMPLERS

        if not isinstance(config, Mapping) or "type" not in config:
            raise ValueError(f"a sampler config needs a 'type', got {config!r}")
        target = SAMPLERS.get(str(config["type"]))
        if not (isinstance(target, type) and issubclass(target, Sampler)):
            raise TypeError(f"{config['type']!r} does not name a Sampler subclass")
        if cls is not Sampler and not issubclass(target, cls):
            raise TypeError(f"config names {target.__name__}, not a {cls.__name__}")
        return target(**{k: v for k, v in config.items() if k != "type"})

    def _settings(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._settings()})"


def _stateful(denoiser: Any) -> Any:
    """The first object down a chain of wrappers (``.denoiser``) that keeps state across the
    calls of one sampling run (it has ``begin_sampling`` / ``end_sampling``), or None."""
    for _ in range(8):
        if denoiser is None:
            return None
        if callable(getattr(denoiser, "begin_sampling", None)):
            return denoiser
        denoiser = getattr(denoiser, "denoiser", None)
    return None


def flatten_fields(x: dict[str, Tensor]) -> Tensor:
    """Concatenate the fields' positions, (B, N_total) (a field's positions stay contiguous)."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in x.values()], dim=1)


def unflatten_fields(flat: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`flatten_fields`: split (B, N_total) back into fields shaped like ``like``."""
    out, start = {}, 0
    for k, v in like.items():
        n = v[0].numel()
        out[k] = flat[:, start : start + n].reshape(v.shape)
        start += n
    return out
