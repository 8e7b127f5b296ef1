"""Data sets: one module per source (fetching, caching, splits). Installed as discdiff.datasets.

The loaders are importable from here (``from discdiff.datasets import load_qm9``); each module
is imported on first use, so importing the package stays cheap.

- text: :func:`load_shakespeare`, :func:`load_text8`, :func:`load_text_files`,
  :func:`prepare_corpus` / :func:`prepared_cache` / :class:`TokenFiles` (flat token files);
- molecules: :func:`load_qm9`, :func:`load_moses`, :func:`read_smiles_file`;
- images: :func:`load_mnist`, :func:`load_fashion_mnist`, :func:`load_digits`,
  :func:`load_images`;
- the cache: :func:`cache_dir`, :func:`fetch_package`.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "load_shakespeare": "shakespeare",
    "load_text8": "text8",
    "load_text_files": "text_files",
    "prepare_corpus": "token_files",
    "prepared_cache": "token_files",
    "TokenFiles": "token_files",
    "is_prepared": "token_files",
    "load_qm9": "qm9",
    "load_moses": "moses",
    "read_smiles_file": "smiles",
    "load_mnist": "mnist",
    "load_fashion_mnist": "fashion_mnist",
    "load_digits": "digits",
    "load_images": "images",
    "cache_dir": "_fetch",
    "fetch_package": "_fetch",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'discdiff.datasets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
