"""Denoisers: plain modules ``forward(x_t, t, cond=None) -> logits over x_0``.

They know nothing of processes or losses. A checkpoint stores ``denoiser_config(model)``
(``{"type": name, "config": {...}}``, JSON) beside the weights, and
``denoiser_from_config(d)`` rebuilds the same architecture from that dict alone.
"""

from __future__ import annotations

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
    triu_bonds,
)
from discdiff.nn.transformer import TransformerConfig, TransformerDenoiser, flops_per_token

__all__ = [
    "TransformerConfig",
    "TransformerDenoiser",
    "GraphTransformerConfig",
    "GraphTransformerDenoiser",
    "flops_per_token",
    "count_parameters",
    "register_denoiser",
    "denoiser_from_config",
    "build_denoiser",
    "denoiser_config",
    "dense_bonds",
    "triu_bonds",
    "TimestepEmbedder",
    "LabelEmbedder",
    "sinusoidal_embedding",
    "rotary_tables_1d",
    "rotary_tables_2d",
    "apply_rotary",
]

# name -> (module class, config class); the config class has to_dict / from_dict
_REGISTRY: dict[str, tuple[type[nn.Module], type]] = {}


def register_denoiser(name: str, model_cls: type[nn.Module], config_cls: type) -> None:
    """Make ``model_cls(config_cls.from_dict(...))`` rebuildable from ``{"type": name, ...}``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"denoiser name must be a non-empty string, got {name!r}")
    for attr in ("to_dict", "from_dict"):
        if not hasattr(config_cls, attr):
            raise TypeError(f"config class {config_cls.__name__} lacks {attr}()")
    existing = _REGISTRY.get(name)
    if existing is not None and existing != (model_cls, config_cls):
        raise ValueError(f"denoiser type {name!r} is already registered to {existing[0].__name__}")
    _REGISTRY[name] = (model_cls, config_cls)


register_denoiser("transformer", TransformerDenoiser, TransformerConfig)
register_denoiser("graph_transformer", GraphTransformerDenoiser, GraphTransformerConfig)


def denoiser_config(model: nn.Module) -> dict[str, Any]:
    """``{"type": name, "config": {...}}`` (JSON-ready) for a registered denoiser."""
    for name, (model_cls, config_cls) in _REGISTRY.items():
        if type(model) is model_cls:
            cfg = getattr(model, "config", None)
            if not isinstance(cfg, config_cls):
                raise TypeError(f"{model_cls.__name__}.config is not a {config_cls.__name__}")
            return {"type": name, "config": cfg.to_dict()}
    raise TypeError(
        f"{type(model).__name__} is not a registered denoiser; known: {sorted(_REGISTRY)}"
    )


def denoiser_from_config(d: dict[str, Any]) -> nn.Module:
    """Build a freshly initialised denoiser from ``{"type": name, "config": {...}}``."""
    if not isinstance(d, dict) or set(d) != {"type", "config"}:
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"expected a dict with keys 'type' and 'config', got {got}")
    name = d["type"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown denoiser type {name!r}; expected one of {sorted(_REGISTRY)}")
    model_cls, config_cls = _REGISTRY[name]
    return model_cls(config_cls.from_dict(d["config"]))


build_denoiser = denoiser_from_config


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
