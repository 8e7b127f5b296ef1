"""Samplers by name: ``make_sampler("caching", steps=256)``, and their JSON configs.

Every registered sampler reaches every task and the CLI's ``--sampler`` (whose help lists
the names), and is run through ``tests/conformance/test_samplers.py``.
"""

from __future__ import annotations

import inspect
from typing import Any

from discdiff.registry import Registry
from discdiff.samplers.ancestral import AncestralSampler
from discdiff.samplers.base import Sampler
from discdiff.samplers.caching import CachingSampler, FirstHittingSampler
from discdiff.samplers.confidence import ConfidenceSampler
from discdiff.samplers.dfm import DFMEulerSampler
from discdiff.samplers.planned import PlannedSampler
from discdiff.samplers.remdm import ReMDMSampler
from discdiff.samplers.scores import TauLeapingSampler, TweedieSampler
from discdiff.samplers.sundae import SundaeSampler

__all__ = ["SAMPLERS", "register_sampler", "make_sampler", "sampler_options", "COMMON_OPTIONS"]

#: name -> Sampler subclass
SAMPLERS: Registry[type[Sampler]] = Registry("sampler")

#: settings the CLI passes to any sampler. A sampler without one of them ignores it at its
#: neutral value (:data:`NEUTRAL`) or where it is structural (first-hitting has no ``steps``:
#: it makes one call per masked token; samplers without a time grid have no ``grid_power``);
#: a temperature, top-p or guidance it cannot apply is refused, never dropped.
COMMON_OPTIONS = frozenset(
    {"steps", "temperature", "top_p", "guidance", "null_label", "grid_power"}
)
#: the values of common options that change nothing (a sampler that lacks them loses nothing)
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "temperature": (1.0,),
    "top_p": (1.0, None),
    "guidance": (1.0,),
}


def register_sampler(name: str, cls: type[Sampler] | None = None, *, replace: bool = False) -> Any:
    """Register a :class:`Sampler` subclass under ``name`` (decorator when ``cls`` is omitted).

    Its constructor's keyword arguments are its settings (``config()`` reads them back from
    attributes of the same names).
    """
    if cls is None:
        return lambda c: register_sampler(name, c, replace=replace)
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise TypeError(f"register_sampler needs a Sampler subclass, got {cls!r}")
    SAMPLERS.register(name, cls, replace=replace)
    return cls


def sampler_options(cls: type[Sampler]) -> list[str]:
    """The keyword settings of a sampler class (its constructor's parameters)."""
    params = inspect.signature(cls.__init__).parameters
    return [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD]


def make_sampler(name: str, **options: Any) -> Sampler:
    """The sampler registered as ``name`` with ``options``.

    Options in :data:`COMMON_OPTIONS` that the sampler does not take are dropped at their
    neutral values (so one command line serves every sampler); a temperature, top-p or
    guidance it cannot apply, and any other unknown option, is an error naming it.
    """
    cls = SAMPLERS.get(name)
    accepted = set(sampler_options(cls))
    unknown = sorted(k for k in options if k not in accepted and k not in COMMON_OPTIONS)
    if unknown:
        raise ValueError(
            f"sampler {name!r} has no option(s) {unknown}; it takes {sorted(accepted)}"
        )
    for key, neutral in NEUTRAL.items():
        if key in options and key not in accepted and options[key] not in neutral:
            flag = key.replace("_", "-")
            raise ValueError(
                f"sampler {name!r} takes no {key}: --{flag} {options[key]!r} would be ignored "
                f"(leave it at {neutral[0]!r} or choose a sampler that takes it)"
            )
    return cls(**{k: v for k, v in options.items() if k in accepted})


register_sampler("ancestral", AncestralSampler)
register_sampler("caching", CachingSampler)
register_sampler("first-hitting", FirstHittingSampler)
register_sampler("confidence", ConfidenceSampler)
register_sampler("sundae", SundaeSampler)
register_sampler("remdm", ReMDMSampler)
register_sampler("planned", PlannedSampler)
register_sampler("tau-leaping", TauLeapingSampler)
register_sampler("tweedie", TweedieSampler)
register_sampler("dfm-euler", DFMEulerSampler)
