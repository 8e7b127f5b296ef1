"""Options every task's commands share, declared once (same flag, help and meaning everywhere)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["Device", "Seed", "SeedOrSaved", "Threads", "set_threads"]

_SEED_HELP = "Random seed: the same seed gives the same result on CPU."
Seed = Annotated[int, typer.Option(help=_SEED_HELP)]
#: for commands that resume a run: unset means the run's own seed (0 for a new run)
SeedOrSaved = Annotated[int | None, typer.Option(help=_SEED_HELP)]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (auto = cuda if present).")]
Threads = Annotated[int, typer.Option(help="CPU threads for torch (0 = torch's default).")]


def set_threads(threads: int) -> None:
    """Apply ``--threads`` (0 leaves torch's default); a negative count is an error."""
    if threads < 0:
        raise ValueError(f"--threads must be >= 0, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)
