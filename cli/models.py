"""`discdiff models ...`: the models shipped in the package and their cards.

    discdiff models list               # name, task, parameters, size, title
    discdiff models show qm9           # the card: data, recipe, commit, training, metrics, sha256
    discdiff models show qm9 --json    # the same as JSON

A shipped model's name works wherever a checkpoint goes (`molecules sample --checkpoint qm9-qed`)
and in Python (`dd.from_pretrained("qm9")`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(
    help="The models shipped in the package, with their cards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("list")
def list_() -> None:
    """One line per shipped model: name, task, parameters, size on disk, title."""
    from discdiff.catalogue import model_cards

    cards = model_cards().values()
    width = max((len(c.name) for c in cards), default=0)
    for card in cards:
        typer.echo(
            f"{card.name:<{width}} {card.task:<10} {card.parameters / 1e6:6.2f} M parameters "
            f"{card.bytes / 2**20:6.1f} MiB  {card.title}"
        )


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="A shipped model (see `discdiff models list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
    verify: Annotated[
        bool, typer.Option(help="Check the weights against the card's size and sha256.")
    ] = True,
) -> None:
    """A shipped model's card: data and split, recipe and commit, parameters, training time and
    device, the metrics with their sample counts and standard errors, the file's sha256."""
    from discdiff.catalogue import format_card, model_card, model_path

    card = model_card(name)
    if verify:
        model_path(name)  # one line and exit 2 if the file is missing or damaged
    if as_json:
        typer.echo(json.dumps(card.as_dict(), indent=1))
    else:
        typer.echo(format_card(card))
        if verify:
            typer.echo("  verified    the file matches its size and sha256")
