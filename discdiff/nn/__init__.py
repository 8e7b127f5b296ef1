"""Denoisers: plain modules ``forward(x_t, t, cond=None) -> logits over x_0``.

They know nothing of processes or losses. A checkpoint stores ``denoiser_config(model)``
(``{"type": name, "config": {...}}``, JSON) beside the weights, and
``denoiser_from_config(d)`` rebuilds the same architecture from that dict alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from discdiff.nn.embeddings import (
    LabelEmbedder,
    TimestepEmbedder,
    apply_rotary,
    rotary_tables_1d,
    rotary_tables_2d,
    sinusoidal_embedding,
)
from discdiff.nn.graph_transformer import (
    GraphTransformerConfig,
    GraphTransformerDenoiser,
    dense_bonds,
    grow_bond_classes,
    triu_bonds,
)
from discdiff.nn.self_conditioning import SelfConditioned
from discdiff.nn.transformer import TransformerConfig, TransformerDenoiser, flops_per_token
from discdiff.registry import Registry, import_object, import_path

__all__ = [
    "SelfConditioned",
    "TransformerConfig",
    "TransformerDenoiser",
    "GraphTransformerConfig",
    "GraphTransformerDenoiser",
    "flops_per_token",
    "count_parameters",
    "register_denoiser",
    "DENOISERS",
    "denoiser_from_config",
    "build_denoiser",
    "denoiser_config",
    "denoiser_classes",
    "config_for_task",
    "dense_bonds",
    "grow_bond_classes",
    "triu_bonds",
    "TimestepEmbedder",
    "LabelEmbedder",
    "sinusoidal_embedding",
    "rotary_tables_1d",
    "rotary_tables_2d",
    "apply_rotary",
]

#: name -> (module class, config class); the config class has to_dict / from_dict
DENOISERS: Registry[tuple[type[nn.Module], type]] = Registry("denoiser")


def register_denoiser(
    name: str, model_cls: type[nn.Module], config_cls: type | None = None, *, replace: bool = False
) -> type[nn.Module]:
    """Make ``model_cls(config_cls.from_dict(...))`` rebuildable from ``{"type": name, ...}``.

    ``config_cls`` defaults to ``model_cls.config_class``. The model must keep its config as
    ``model.config``. An unregistered class works too, saved by import path ``module:Class``
    (it then needs the ``config_class`` attribute).
    """
    if config_cls is None:
        config_cls = getattr(model_cls, "config_class", None)
        if config_cls is None:
            raise TypeError(f"{model_cls.__name__} has no config_class; pass config_cls")
    for attr in ("to_dict", "from_dict"):
        if not hasattr(config_cls, attr):
            raise TypeError(f"config class {config_cls.__name__} lacks {attr}()")
    DENOISERS.register(name, (model_cls, config_cls), replace=replace)
    return model_cls


register_denoiser("transformer", TransformerDenoiser, TransformerConfig)
register_denoiser("graph_transformer", GraphTransformerDenoiser, GraphTransformerConfig)


def denoiser_classes(name: str) -> tuple[type[nn.Module], type]:
    """(module class, config class) of a registered name or an import path ``module:Class``."""
    if ":" not in name:
        return DENOISERS.get(name)
    model_cls = import_object(name)
    config_cls = getattr(model_cls, "config_class", None)
    if not isinstance(model_cls, type) or not issubclass(model_cls, nn.Module):
        raise ValueError(f"{name!r} does not name an nn.Module class")
    if config_cls is None or not hasattr(config_cls, "from_dict"):
        raise ValueError(f"{name!r} has no config_class with from_dict(); register it instead")
    return model_cls, config_cls


def denoiser_config(model: nn.Module) -> dict[str, Any]:
    """``{"type": name, "config": {...}}`` (JSON-ready): the registered name, or the import path
    ``module:Class`` of a class with a ``config_class`` and a ``config`` attribute."""
    name = next((n for n in DENOISERS.names() if DENOISERS.get(n)[0] is type(model)), None)
    if name is None:
        config_cls = getattr(type(model), "config_class", None)
        if config_cls is None or not hasattr(config_cls, "from_dict"):
            raise TypeError(
                f"{type(model).__name__} is not a registered denoiser (known: "
                f"{DENOISERS.names()}) and has no config_class to save it by import path"
            )
        name = import_path(type(model))
    else:
        config_cls = DENOISERS.get(name)[1]
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, config_cls):
        raise TypeError(f"{type(model).__name__}.config is not a {config_cls.__name__}")
    return {"type": name, "config": cfg.to_dict()}


def denoiser_from_config(d: dict[str, Any]) -> nn.Module:
    """Build a freshly initialised denoiser from ``{"type": name or module:Class, "config": {...}}``."""
    if not isinstance(d, dict) or set(d) != {"type", "config"}:
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"expected a dict with keys 'type' and 'config', got {got}")
    name = d["type"]
    if not isinstance(name, str):
        raise ValueError(f"denoiser type must be a string, got {name!r}")
    try:
        model_cls, config_cls = denoiser_classes(name)
    except ValueError as err:
        if ":" in name:
            raise
        raise ValueError(
            f"unknown denoiser type {name!r}; expected one of {DENOISERS.names()}"
        ) from err
    return model_cls(config_cls.from_dict(d["config"]))


build_denoiser = denoiser_from_config


def config_for_task(
    name: str,
    fields: Mapping[str, Any],
    sizes: Mapping[str, Any],
    task: str = "this task",
    *,
    check_only: bool = False,
) -> Any:
    """The config of denoiser ``name`` for a task: what the task fixes (``fields``: state
    counts, lengths, labels, named as its default denoiser's config names them) and the widths
    asked for (``sizes``). A config class with a ``for_task(fields, **sizes)`` classmethod
    decides itself; a dataclass takes the fields it has and every size, so a size it lacks or a
    required field the task does not give is one ValueError naming it. ``check_only``: only
    refuse the sizes the config lacks (returns None)."""
    _, config_cls = denoiser_classes(name)
    for_task = getattr(config_cls, "for_task", None)
    if check_only and (callable(for_task) or not dataclasses.is_dataclass(config_cls)):
        return None  # its own constructor judges the sizes
    if callable(for_task):
        return for_task(dict(fields), **sizes)
    if not dataclasses.is_dataclass(config_cls):
        raise ValueError(
            f"denoiser {name!r}: its config {config_cls.__name__} is not a dataclass and has "
            f"no for_task(fields, **sizes) classmethod, so {task} cannot configure it"
        )
    own = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(sizes) - set(own))
    if unknown:
        raise ValueError(
            f"denoiser {name!r} has no size {', '.join(map(repr, unknown))} "
            f"(its config fields: {', '.join(own)})"
        )
    if check_only:
        return None
    values = {k: v for k, v in fields.items() if k in own} | dict(sizes)
    missing = [
        k
        for k, f in own.items()
        if k not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(
            f"denoiser {name!r} needs {', '.join(missing)}, which {task} does not give "
            f"(it gives {', '.join(fields)}); add defaults or a for_task classmethod"
        )
    return config_cls(**values)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# every module of this folder registers what it defines: a new file needs no edit here
from discdiff.registry import import_package_modules as _import_package_modules  # noqa: E402

_import_package_modules(__name__, __path__)
