"""`discdiff demo`: the main job on an embedded default, used by `make demo`."""

from __future__ import annotations

from typing import Annotated

import typer


def demo(
    seed: Annotated[int, typer.Option(help="Random seed.", min=0, max=2**63 - 1)] = 0,
) -> None:
    """Show the core API on a tiny example: corrupt a sequence and score it with a loss."""
    import torch

    import discdiff as dd

    g = torch.Generator().manual_seed(seed)
    proc = dd.Absorbing(num_classes=8, schedule=dd.LogLinear())
    x0 = torch.randint(0, 8, (2, 12), generator=g)
    t = torch.tensor([0.3, 0.8], dtype=torch.float32)
    xt = proc.sample_marginal(x0, t, generator=g)
    typer.echo(f"x0     = {x0.tolist()}")
    typer.echo(f"x_t    = {xt.tolist()}  (mask id {proc.mask_id})")
