"""Where discdiff keeps what it makes or fetches once: ``$DISCDIFF_CACHE``, else
``$XDG_CACHE_HOME/discdiff``, else ``~/.cache/discdiff``. Data sets, prepared corpora and built
kernels each live in a folder under it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """The cache's root folder (not created here)."""
    if os.environ.get("DISCDIFF_CACHE"):
        return Path(os.environ["DISCDIFF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "discdiff"
