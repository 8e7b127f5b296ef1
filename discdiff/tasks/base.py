"""The Task interface: what text, pixels, molecules (and a user's own task) plug into the spine.

A task is data + denoiser + metrics. It says which categorical fields a sample has and their
processes, builds its default denoiser, gives its data splits, its training loss and its
bound, scores a split in its own unit with a standard error, and samples. Everything around
it (the run directory, train / resume / load / evaluate / sample, the CLI's shared options) is
written once in :mod:`discdiff.tasks.runs` and works for any registered task.

Minimal task (see ``examples/dna_task.py`` for a complete one)::

    @register_task("dna")
    class DNATask(Task):
        config_class = DNAConfig                       # frozen dataclass: to_dict / from_dict
        unit = "bits/base"
        def __init__(self, config): self.config = config; self.processes = {...}
        def build_denoiser(self, **sizes): ...         # a registered denoiser
        def dataset(self, split): ...                  # a Dataset of batches' items
        def loss(self, model, batch, generator): ...   # (B,) nats, training
        def nll(self, model, batch, generator): ...    # (B,) nats, a true bound
        def units(self, batch): ...                    # (B,) denominators of ``unit``
        def sample(self, model, n, sampler, **kw): ... # the task's samples
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from discdiff.nn import config_for_task, denoiser_classes, denoiser_config, denoiser_from_config
from discdiff.objectives import Objective, objective
from discdiff.processes import Process
from discdiff.registry import Registry
from discdiff.samplers import Sampler
from discdiff.tasks.probes import (  # noqa: F401  (re-exported: they were defined here)
    check_denoiser_calls,
    check_model_size,
    check_parameter_bytes,
    continuous_schedules,
    count_parameters_of,
    process_problem,
    usable_processes,
)

__all__ = [
    "Task",
    "TaskConfig",
    "Evaluation",
    "TASKS",
    "register_task",
    "sampler_names",
    "TASK_FILE",
    "ratio_se",
    "check_int",
    "check_model_size",
    "process_problem",
    "usable_processes",
    "continuous_schedules",
    "task_objective",
    "x0_denoiser",
]

TASK_FILE = "task.json"
#: the key of task.json (and of a run's model entry) that names the task
TASK_TYPE = "task_type"
_LN2 = math.log(2.0)

#: name -> Task subclass
TASKS: Registry[type] = Registry("task")


def register_task(name: str, cls: type | None = None, *, replace: bool = False) -> Any:
    """Register a :class:`Task` subclass (decorator when ``cls`` is omitted); sets ``cls.name``."""
    if cls is None:
        return lambda c: register_task(name, c, replace=replace)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task needs a Task subclass, got {cls!r}")
    TASKS.register(name, cls, replace=replace)
    if not cls.__dict__.get("name"):
        cls.name = name
    return cls


def sampler_names() -> list[str]:
    """The registered samplers' names, plug-ins included (what ``--sampler`` lists)."""
    from discdiff.samplers import SAMPLERS

    return SAMPLERS.names()


def task_objective(config: Any, processes: Any = None) -> Objective:
    """The objective ``config.objective`` names (its registered name), checked against the
    config's process and, given, the built processes (one or a dict by field): one
    ValueError naming the objective when it cannot train them."""
    name = getattr(config, "objective", "elbo")
    obj = objective(name)
    problem = obj.problem(config.process, processes)
    if problem is not None:
        raise ValueError(f"objective={name!r} {problem}")
    if getattr(config, "ce_weight", 0.0) and not obj.takes_ce_weight:
        raise ValueError(
            f"objective={name!r} adds no x_0 cross-entropy; ce_weight={config.ce_weight} "
            f"would be ignored (use 0, or objective='elbo')"
        )
    return obj


def x0_denoiser(den: Any, obj: Objective, processes: Any) -> Any:
    """``den`` as samplers read it: x_0 logits, a score model's output converted exactly."""
    if obj.output == "scores":
        from discdiff.samplers.scores import ScoresAsX0

        return ScoresAsX0(den, processes)
    return den


def check_int(value: Any, name: str, low: int = 1) -> int:
    """``value`` if it is an int >= ``low`` (bools refused), else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r}: expected an int >= {low}")
    return value


def ratio_se(nats: Tensor, denom: Tensor) -> float:
    """Standard error of sum(nats) / sum(denom) over N units (delta method), nats per unit."""
    n = nats.numel()
    if n < 2:
        return float("nan")
    r = nats.sum() / denom.sum()
    resid = nats - r * denom
    return float(torch.sqrt((resid**2).sum() / (n * (n - 1))) / denom.mean())


@dataclass(frozen=True)
class Evaluation:
    """A held-out score in the task's unit: ``value`` +- ``se`` over ``count`` examples.

    value = total nats / total units (/ ln 2 for a unit in bits); se: its standard error over
    examples (ratio estimator; covers data and Monte-Carlo noise). exact: False for a
    Monte-Carlo bound (an upper bound on the NLL), True for an exact likelihood.
    """

    value: float
    se: float
    unit: str
    count: int
    samples: int = 1
    exact: bool = False
    extra: dict[str, float] = field(default_factory=dict)

    def format(self) -> str:
        """One line for humans."""
        kind = "NLL" if self.exact else f"ELBO ({self.samples} sample(s) per example)"
        return f"{kind}: {self.value:.4f} +- {self.se:.4f} {self.unit} over {self.count} examples"

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "se": self.se,
            "unit": self.unit,
            "count": self.count,
            "samples": self.samples,
            "exact": self.exact,
            **self.extra,
        }


class TaskConfig:
    """Mixin for a task's frozen config dataclass: ``to_dict()`` (JSON values) and a strict
    ``from_dict()`` (unknown keys are an error naming them)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able field values."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        if not isinstance(d, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**dict(d))


class Task(ABC):
    """One kind of data plugged into the shared training, evaluation and sampling flow."""

    #: registered name (set by :func:`register_task`)
    name: ClassVar[str] = ""
    #: the config dataclass (``to_dict()`` / ``from_dict(d)``, JSON values)
    config_class: ClassVar[type]
    #: unit of :meth:`evaluate`; a unit starting with "bits" divides nats by ln 2
    unit: ClassVar[str] = "nats/example"
    #: the splits :meth:`dataset` knows
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    #: TrainConfig values this task trains with unless told otherwise (``discdiff task train``)
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: the registered denoiser :meth:`build_denoiser` makes (``--denoiser`` names another)
    default_denoiser: ClassVar[str] = ""

    config: Any
    #: field name -> forward process (one entry for single-field tasks)
    processes: dict[str, Process]

    # ---- a small instance, for the conformance suite and the docs ---------------------------
    @classmethod
    def create(cls, config: Any, *, progress: bool = False) -> Task:
        """A new task of ``config``, with what it needs made first (the text task prepares
        its corpus and tokenizer): how ``discdiff task train NAME`` makes any task."""
        return cls(config)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, progress: bool = False) -> Task:
        """A new task from what a user gives (``discdiff task train NAME --config JSON``): by
        default the config's fields (:meth:`create`); a task made from data reads its data
        options here too (molecules: ``{"data": "qm9", "max_train": ...}``)."""
        return cls.create(cls.config_class.from_dict(settings), progress=progress)

    @classmethod
    def comparable_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` as the saved config spells them (what ``--resume`` compares a given
        ``--config`` with); default: as given."""
        return dict(settings)

    @classmethod
    def example(cls, folder: Path) -> tuple[Task, dict[str, Any]]:
        """A tiny instance of this task with data made or found offline (files may go in
        ``folder``) and the denoiser sizes for a model that trains in a second. Every task
        gives one, so ``tests/conformance/test_tasks.py`` can train, save, load, evaluate and
        sample it."""
        raise TypeError(f"task {cls.name or cls.__name__!r} gives no example(); see Task.example")

    # ---- the model ------------------------------------------------------------------------
    @abstractmethod
    def build_denoiser(self, **sizes: Any) -> nn.Module:
        """A freshly initialised default denoiser for this task; ``sizes`` set its widths."""

    def denoiser_fields(self) -> dict[str, Any]:
        """What this task fixes of any denoiser it trains (state counts, lengths, labels), named
        as its default denoiser's config names them: another denoiser's config takes the ones
        it has (:func:`discdiff.nn.config_for_task`)."""
        return {}

    def new_model(self, denoiser: str | None = None, **sizes: Any) -> nn.Module:
        """A fresh denoiser: :meth:`build_denoiser`, or the registered type (or ``module:Class``)
        ``denoiser`` configured from :meth:`denoiser_fields` and ``sizes``. Its parameters are
        counted on the meta device first, so sizes that cannot fit in memory fail at once with
        one line (not with an allocator error)."""
        clash = sorted(set(sizes) & set(self.denoiser_fields()))
        if clash:
            raise ValueError(
                f"{', '.join(clash)}: the {self.name or 'task'} task sets these itself (its "
                "data and process fix them); give widths and depths only"
            )
        if denoiser is None or denoiser == self.default_denoiser:
            build = self.build_denoiser
            if self.default_denoiser:  # a size its config lacks is one line, not a TypeError
                config_for_task(self.default_denoiser, {}, sizes, check_only=True)
        else:
            build = functools.partial(self.build_other_denoiser, denoiser)
        layers = sizes.get("num_layers")
        check_parameter_bytes(
            count_parameters_of(
                lambda n: build(**sizes) if n is None else build(**{**sizes, "num_layers": n}),
                layers,
            )
        )
        model = build(**sizes)
        self.check_model(model)
        return model

    def build_other_denoiser(self, name: str, **sizes: Any) -> nn.Module:
        """Denoiser ``name`` (registered, or ``module:Class``) configured for this task."""
        model_cls, _ = denoiser_classes(name)
        what = f"the {self.name or type(self).__name__} task"
        return model_cls(config_for_task(name, self.denoiser_fields(), sizes, what))

    def check_model(self, model: nn.Module) -> None:  # noqa: B027  (optional hook)
        """Raise ValueError if ``model`` cannot serve this task's fields (override to check)."""

    def build_model(self, model_config: dict[str, Any]) -> nn.Module:
        """Rebuild the architecture saved in a run's model entry (or a bare denoiser config)."""
        d = model_config.get("denoiser", model_config) if isinstance(model_config, dict) else None
        check_model_size(d)
        model = denoiser_from_config(d)
        self.check_model(model)
        return model

    def model_entry(self, model: nn.Module) -> dict[str, Any]:
        """What a checkpoint records to rebuild ``model`` for this task (JSON)."""
        return {
            TASK_TYPE: self.name,
            "task": self.config.to_dict(),
            "denoiser": denoiser_config(model),
        }

    # ---- data -----------------------------------------------------------------------------
    @abstractmethod
    def dataset(self, split: str) -> Any:
        """A map-style Dataset (or a re-iterable of batches) of one split."""

    def count_tokens(self, batch: Any) -> int | Tensor:
        """Positions in a batch (the Trainer's tokens/s); default: the number of examples.
        A device scalar may be returned where reading it would wait for the device."""
        return int(self.units(batch).numel())

    def collate(self) -> Any:
        """The collate function for :meth:`dataset` items (None: torch's default)."""
        return None

    # ---- sampling ---------------------------------------------------------------------------

    def format_samples(self, samples: Any) -> list[str]:
        """One line of text per sample (what ``discdiff task sample`` prints): strings as they
        are, id tensors as space-separated ids. A task whose samples read better otherwise
        (molecules: SMILES) overrides it."""
        items = samples[0] if isinstance(samples, tuple) else samples
        return [
            x if isinstance(x, str) else " ".join(map(str, torch.as_tensor(x).flatten().tolist()))
            for x in items
        ]

    def sampler_defaults(self) -> dict[str, Any]:
        """Sampler settings only this task knows (its default steps, a time grid): what
        :meth:`make_sampler` gives a sampler unless the caller sets them."""
        return {}

    def make_sampler(self, name: str = "ancestral", **options: Any) -> Any:
        """The one way to a sampler for this task: the registered sampler ``name`` with the
        task's :meth:`sampler_defaults`, then ``options`` (None = not given); a guidance scale
        other than 1 gets the task's null label; the task's processes are checked (one line)."""
        from discdiff.samplers import make_sampler

        opts = {**self.sampler_defaults(), **{k: v for k, v in options.items() if v is not None}}
        if opts.get("guidance", 1.0) != 1.0 and opts.get("null_label") is None:
            null = getattr(self, "null_label", None)
            if null is None:
                raise ValueError(
                    f"guidance {opts['guidance']} needs a label-conditioned model; the "
                    f"{self.name} task has no null label"
                )
            opts["null_label"] = null
        sampler = make_sampler(name, **opts)
        try:
            sampler.check_processes(self.processes)
        except TypeError as err:
            raise ValueError(f"sampler {name!r} cannot serve this {self.name} task: {err}") from err
        return sampler

    # ---- the objective --------------------------------------------------------------------
    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator | None) -> Tensor:
        """Training loss, (B,) nats (what the Trainer minimises the mean of)."""

    def nll(self, model: nn.Module, batch: Any, generator: torch.Generator | None) -> Tensor:
        """A true bound on -log p(example), (B,) nats (default: the training loss)."""
        return self.loss(model, batch, generator)

    def units(self, batch: Any) -> Tensor:
        """(B,) denominators of :attr:`unit` (characters, pixels, 1 per molecule, ...)."""
        first = batch[0] if isinstance(batch, list | tuple) else next(iter(batch.values()))
        return torch.ones(first.shape[0], dtype=torch.float64)

    def batches(self, split: str, batch_size: int, limit: int | None = None) -> Iterable[Any]:
        """The first ``limit`` examples of a split, in order, as collated batches."""
        from torch.utils.data import default_collate

        data = self.dataset(split)
        collate = self.collate() or default_collate
        if not hasattr(data, "__getitem__"):
            yield from data
            return
        n = len(data) if limit is None else min(limit, len(data))
        for start in range(0, n, batch_size):
            yield collate([data[i] for i in range(start, min(start + batch_size, n))])

    @torch.no_grad()
    def score(
        self,
        model: nn.Module,
        split: str,
        *,
        batch_size: int = 32,
        limit: int | None = None,
        samples: int = 1,
        fn: Callable[[Any], Tensor] | None = None,
        generator: torch.Generator | None = None,
        keep: Callable[[Any], Any] | None = None,
        progress: bool = False,
    ) -> tuple[Tensor, list[Any]]:
        """Per-example nats (N,) float64 of ``fn(batch)`` (default: :meth:`nll`) over the first
        ``limit`` examples of a split, averaged over ``samples`` draws, and what ``keep`` takes
        of each batch (CPU; default the batch itself) for the denominators of a unit: a large
        split keeps only its counts, so memory stays bounded. The model is in eval mode
        meanwhile. ``progress``: a bar over the denoiser calls (with the total where the task
        knows its split's size, :meth:`num_examples`)."""
        from discdiff.training import move_to_device

        check_int(batch_size, "batch_size")
        check_int(samples, "samples")
        if limit is not None:
            check_int(limit, "limit")
        if split not in self.splits:
            raise ValueError(f"split={split!r} is not one of {', '.join(map(repr, self.splits))}")
        device = next(model.parameters()).device
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        if fn is None:
            fn = lambda b: self.nll(model, b, generator)  # noqa: E731
        count = self.num_examples(split)
        if count is not None and limit is not None:
            count = min(count, limit)
        calls = None if count is None else -(-count // batch_size) * samples
        check_denoiser_calls(
            calls or samples, f"scoring {split!r} {samples:,} times",
            "ask for fewer samples (--samples) or fewer examples",
        )  # fmt: skip
        was = model.training
        model.eval()
        nats, seen = [], []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=calls, desc=f"eval {split}", unit="call", disable=None)
        try:
            for batch in self.batches(split, batch_size, limit):
                b = move_to_device(batch, device)
                total = torch.zeros((), dtype=torch.float64)
                for _ in range(samples):
                    total = total + fn(b).double()
                    if bar is not None:
                        bar.update(1)
                nats.append((total / samples).cpu())
                seen.append(batch if keep is None else keep(batch))
        finally:
            model.train(was)
            if bar is not None:
                bar.close()
        if not nats:
            raise ValueError(f"split {split!r} holds no examples")
        return torch.cat(nats), seen

    def num_examples(self, split: str) -> int | None:
        """How many examples ``split`` holds, where the task can tell without reading them
        (None: unknown); progress bars and size estimates use it."""
        return None

    def evaluate(
        self,
        model: nn.Module,
        split: str = "test",
        *,
        batch_size: int = 32,
        samples: int = 1,
        limit: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Evaluation:
        """:meth:`nll` over a split in :attr:`unit`, averaged over ``samples`` Monte-Carlo
        draws per example, with its standard error (ratio estimator over examples)."""
        nats, seen = self.score(
            model, split, batch_size=batch_size, limit=limit, samples=samples, generator=generator
        )
        units = torch.cat([self.units(b).double().cpu() for b in seen])
        if not float(units.sum()) > 0:
            raise ValueError(f"split {split!r} holds nothing to score")
        scale = 1 / _LN2 if self.unit.startswith("bits") else 1.0
        return Evaluation(
            value=float(nats.sum() / units.sum()) * scale,
            se=ratio_se(nats, units) * scale,
            unit=self.unit,
            count=int(nats.numel()),
            samples=samples,
        )

    # ---- sampling -------------------------------------------------------------------------
    @abstractmethod
    def sample(
        self,
        model: nn.Module,
        n: int,
        sampler: Sampler,
        *,
        generator: torch.Generator | None = None,
        progress: bool = False,
        **conditioning: Any,
    ) -> Any:
        """``n`` samples in the task's own form (texts, images, molecules)."""

    # ---- persistence ----------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``task.json`` (the config and the task's name) and :meth:`save_files`."""
        from discdiff.training.checkpoint import write_json_atomic

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.save_files(path)
        write_json_atomic(path / TASK_FILE, {TASK_TYPE: self.name, **self.config.to_dict()})
        return path

    def save_files(self, folder: Path) -> None:  # noqa: B027  (optional hook)
        """Write whatever besides the config rebuilds the task (a tokenizer, data); default none."""

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: Path | None = None) -> Task:
        """The task of a saved config dict (``folder``: where :meth:`save_files` wrote)."""
        return cls(cls.config_class.from_dict(config))  # type: ignore[call-arg]

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Task:
        """Read what :meth:`save` wrote (``cls`` may be :class:`Task`: the saved name decides)."""
        path = Path(folder)
        doc = read_task_file(path)
        name = doc.pop(TASK_TYPE, None)
        target = cls
        if cls is Task:
            if name is None:
                raise ValueError(f"{path / TASK_FILE} does not say which task wrote it")
            if name not in TASKS:
                raise ValueError(
                    f"{path} is a run of task {name!r}, which is not registered here "
                    f"(registered: {', '.join(TASKS.names())}); import the module that "
                    "registers it first (discdiff task ... --import FILE_OR_MODULE)"
                )
            target = TASKS.get(name)
        return target.from_config(doc, path)


def read_task_file(folder: Path) -> dict[str, Any]:
    """``task.json`` of a folder as a dict; one-line errors for a missing or corrupt file."""
    path = Path(folder) / TASK_FILE
    if Path(folder).is_file():
        hint = (
            " (exported weights: `discdiff task sample FILE` or dd.from_pretrained)"
            if Path(folder).suffix == ".safetensors"
            else ""
        )
        raise ValueError(f"{str(folder)!r} is a file, not a run dir{hint}")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"run dir {str(folder)!r} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a run dir (no {TASK_FILE})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return doc
