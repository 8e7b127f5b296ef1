"""The options of `discdiff molecules sample` and `eval` that no other task has."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TimePower = Annotated[
    float,
    typer.Option(help="Ancestral steps at t_k = (1 - k/n)^P; P > 1 puts more of them near t = 0."),
]
Target = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="Steer a property-conditioned model: NAME=VALUE (repeatable), e.g. qed=0.7.",
    ),
]
Guidance = Annotated[
    float,
    typer.Option(help="Classifier-free guidance scale with --target (1 = conditional, 2 = more)."),
]
Scaffold = Annotated[
    str | None,
    typer.Option(help="SMILES kept fixed in every sample (its atoms and bonds); the rest grows."),
]
BareScaffold = Annotated[
    bool,
    typer.Option(
        "--bare-scaffold/--no-bare-scaffold",
        help="With --scaffold: allow a sample that is the scaffold alone (--no-bare-scaffold: "
        "every sample has more atoms than the scaffold).",
    ),
]
TargetMode = Annotated[
    str,
    typer.Option(
        help="bin: every sample aims at the bin that holds the --target value | interpolate: a "
        "value between two bins' centres splits the samples between them in proportion.",
    ),
]
NumAtoms = Annotated[
    int, typer.Option(help="Heavy atoms per molecule (0 = drawn from the training data).")
]
Repair = Annotated[
    bool,
    typer.Option(
        "--repair/--no-repair",
        help="Repair valences and keep the largest fragment (each record says so); "
        "--no-repair writes only what the model made.",
    ),
]
ValenceGuard = Annotated[
    bool,
    typer.Option(
        "--valence-guard/--no-valence-guard",
        help="Ancestral sampling whose last draw, the sample, never gives an atom more bonds "
        "than its element and charge allow (valid by construction; --sampler-opt "
        "guard_steps=all guards every step's draw; off: plain ancestral, for research).",
    ),
]
MotifGuard = Annotated[
    bool,
    typer.Option(
        "--motif-guard/--no-motif-guard",
        help="With the valence guard: the final draw also refuses bonds that make a strained or "
        "unstable motif (C=C in a 3- or 4-ring, a triple bond in a ring, allenes, acyl and "
        "vinyl fluorides, peroxides); off: what the model makes, for research.",
    ),
]
Stereo = Annotated[
    str,
    typer.Option(
        help="none: as sampled (no stereo in the files) | random: one stereoisomer per sample "
        "with an unassigned stereocentre or double bond (seeded) | enumerate: every isomer (at "
        "most 32 a sample), each a record sample_i.j. Metrics stay the graphs' (no stereo).",
    ),
]
JsonReport = Annotated[
    Path | None,
    typer.Option(
        "--json",
        help="Also write the figures as JSON: the metrics, the gauge's distances and warnings, "
        "and what rejection did.",
    ),
]
MedchemFilter = Annotated[
    str | None,
    typer.Option(
        "--filter",
        help="Medicinal-chemistry filters to count, comma-separated: lipinski, veber, reos, "
        "brenk, nih, halogen_heteroatom, or a property bound such as sa<=4 or qed>=0.5.",
    ),
]
Reject = Annotated[
    bool,
    typer.Option(
        "--reject/--no-reject",
        help="Draw again, whole (in up to --reject-rounds rounds), each sample that is invalid, "
        "in pieces or carries a filtered motif (enol, C=C in a 3- or 4-ring, ...): the model's "
        "distribution restricted to molecules that pass; the counts are printed.",
    ),
]
Unique = Annotated[
    bool,
    typer.Option(
        "--unique/--no-unique",
        help="With --reject: also draw again a molecule already sampled in this run (distinct "
        "molecules, sampled without replacement; uniqueness is then 100% by construction).",
    ),
]
Novel = Annotated[
    bool,
    typer.Option(
        "--novel/--no-novel",
        help="With --reject: also draw again a molecule of the training data set, any split "
        "(only new molecules; novelty is then 100% by construction).",
    ),
]
RejectBudget = Annotated[
    int | None,
    typer.Option(
        help="Most extra draws --reject may make in all (default: as many as -n; 0 = no "
        "bound); past it, flawed samples are kept as they are and the summary says so.",
        show_default=False,
    ),
]
RejectRounds = Annotated[
    int,
    typer.Option(
        help="Redraw rounds of --reject (each draws candidates for every sample still flawed "
        "and keeps the first that passes).",
    ),
]
