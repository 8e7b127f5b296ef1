"""The models shipped in the package, by name, each with its card.

A card says where a model came from and what it scores: the data and split, the recipe (the
command that trains it, and the commit), the parameter count, the training time and device,
a metrics table (each figure with its sample count and, for a proportion, its standard error
sqrt(p (1 - p) / n)), where the figures were measured, and the weights' size and sha256 (checked
when the model is loaded by name). Cards live in ``discdiff/assets/catalogue.json``; the weights
and their model entries beside them.

    discdiff models list            # name, task, parameters, one line each
    discdiff models show qm9        # the card
    dd.from_pretrained("qm9")       # (task, model), the file checked against its sha256
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from discdiff.files import sha256_file

__all__ = ["ModelCard", "model_cards", "model_card", "model_path", "format_card", "MAX_BYTES"]

ASSETS = Path(__file__).resolve().parent / "assets"
CATALOGUE = ASSETS / "catalogue.json"
MAX_BYTES = 20 * 1024 * 1024  # a shipped model's weights, at most

_REQUIRED = ("name", "title", "task", "file", "data", "recipe", "commit", "parameters",
             "training", "metrics", "sha256", "bytes")  # fmt: skip


@dataclass(frozen=True)
class ModelCard:
    """One shipped model: what it is, how it was made, what it scores."""

    name: str
    title: str
    task: str
    file: str
    data: str
    recipe: str
    commit: str
    parameters: int
    training: str
    metrics: list[dict[str, Any]]
    sha256: str
    bytes: int
    measured_by: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return ASSETS / self.file

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _card(doc: dict[str, Any]) -> ModelCard:
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"model card {doc.get('name', '?')!r} lacks {', '.join(missing)}")
    known = ModelCard.__dataclass_fields__
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ValueError(f"model card {doc['name']!r} has unknown fields {unknown}")
    return ModelCard(**doc)


@lru_cache(maxsize=1)
def model_cards() -> dict[str, ModelCard]:
    """Every shipped model's card, by name (in the catalogue's order)."""
    doc = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    cards = [_card(d) for d in doc["models"]]
    return {c.name: c for c in cards}


def model_card(name: str) -> ModelCard:
    """The card of the shipped model ``name`` (ValueError naming the shipped ones if none)."""
    cards = model_cards()
    if name not in cards:
        raise ValueError(f"no shipped model {name!r}; the shipped ones are {', '.join(cards)}")
    return cards[name]


@cache
def _checked(path: Path, size: int, digest: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"the shipped model file {str(path)!r} is missing")
    if path.stat().st_size != size or sha256_file(path) != digest:
        raise ValueError(
            f"the shipped model file {str(path)!r} does not match its card (size or sha256): "
            "the installation is damaged; reinstall discdiff"
        )


def model_path(name: str, verify: bool = True) -> Path:
    """The weights of the shipped model ``name`` (the model entry lies beside them), checked
    once per process against the card's size and sha256 unless ``verify`` is False."""
    card = model_card(name)
    if verify:
        _checked(card.path, card.bytes, card.sha256)
    elif not card.path.is_file():
        raise FileNotFoundError(f"the shipped model file {str(card.path)!r} is missing")
    return card.path


def _figure(row: dict[str, Any]) -> str:
    value, se, unit = row["value"], row.get("se"), row.get("unit", "")
    if unit == "%":
        text = f"{100 * value:.2f}%"
        if se is None and row.get("n"):
            se = math.sqrt(value * (1 - value) / row["n"])
        return text + (f" +- {100 * se:.2f}" if se is not None else "")
    return f"{value:.4g}" + (f" +- {se:.2g}" if se is not None else "")


def format_card(card: ModelCard) -> str:
    """The card as text: the header fields, then the metrics table."""
    lines = [
        f"{card.name}: {card.title}",
        f"  task        {card.task}",
        f"  data        {card.data}",
        f"  parameters  {card.parameters:,}",
        f"  training    {card.training}",
        f"  recipe      {card.recipe}",
        f"  commit      {card.commit}",
        f"  file        {card.file} ({card.bytes:,} bytes, sha256 {card.sha256})",
        "  metrics" + (f" ({card.measured_by})" if card.measured_by else ""),
    ]
    width = max((len(r["metric"]) for r in card.metrics), default=0)
    for row in card.metrics:
        n = f"n = {row['n']:,}" if row.get("n") else ""
        lines.append(f"    {row['metric']:<{width}}  {_figure(row):>18}  {n}")
    lines += [f"  note        {n}" for n in card.notes]
    return "\n".join(lines)
