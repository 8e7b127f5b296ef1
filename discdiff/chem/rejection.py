"""Rejection of flawed samples: a sampled molecule graph that RDKit rejects, that falls apart
into pieces, or that carries one of the filters' motifs (:data:`discdiff.chem.filters.MOTIFS`:
enols, C=C in small rings, ...) is drawn again, whole, with the same node count, scaffold and
property target, up to ``rounds`` times.

Each redraw is a fresh sample of the model, so what comes out is the model's distribution
restricted to molecules that pass every check (rejection sampling, exact), except for the few
still flawed after the last round, which are kept as they are and counted. The guards
(:mod:`discdiff.chem.valence`, :mod:`discdiff.chem.motif_guard`) shape every draw and cost
nothing extra; this covers what they cannot see edge by edge: connectedness and enols (whether an
O keeps its H, and whether a C=C is aromatic, is known only once the graph is complete).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from rdkit import Chem

from discdiff.chem.filters import MOTIFS, motif_patterns
from discdiff.chem.graph import GraphVocab, graph_to_mol

__all__ = ["REJECTABLE", "REJECT_ROUNDS", "Rejection", "RejectionStats"]

#: every check a sample can be rejected by, in the order they are tried
REJECTABLE: tuple[str, ...] = ("invalid", "disconnected", *MOTIFS)
#: redraw rounds of the command line's ``--reject``
REJECT_ROUNDS = 5

Graph = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RejectionStats:
    """What rejecting runs did (summed over the calls it is passed to): ``redrawn`` draws
    rejected in all, ``by_check`` the first failed check of each, ``rounds`` the most redraw
    rounds one call ran, ``kept_flawed`` the samples still flawed after their last round (kept
    as they are)."""

    redrawn: int = 0
    by_check: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    kept_flawed: int = 0

    def summary(self) -> str:
        """One line for a report."""
        if not self.redrawn:
            return "rejected: none (every first draw passed)"
        parts = ", ".join(
            f"{k} {v}" for k, v in sorted(self.by_check.items(), key=lambda kv: -kv[1])
        )
        return (
            f"rejected and drawn again: {self.redrawn} ({parts}) in {self.rounds} round(s); "
            f"{self.kept_flawed} kept with a flaw"
        )


@dataclass(frozen=True)
class Rejection:
    """Which checks reject a sample (names of :data:`REJECTABLE`) and how many redraw rounds."""

    checks: tuple[str, ...] = REJECTABLE
    rounds: int = REJECT_ROUNDS

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in REJECTABLE]
        if unknown or not self.checks:
            raise ValueError(
                f"rejection checks must be some of {list(REJECTABLE)}, got {self.checks!r}"
            )
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rejection rounds must be a positive int, got {self.rounds!r}")
        object.__setattr__(self, "checks", tuple(self.checks))

    def flaw(self, graph: Graph, vocab: GraphVocab) -> str | None:
        """The first check ``graph`` (atoms (n,), bonds (n, n)) fails, or None when it passes."""
        mol = graph_to_mol(graph[0], graph[1], vocab)
        if mol is None:
            return "invalid" if "invalid" in self.checks else None
        if "disconnected" in self.checks and len(Chem.GetMolFrags(mol)) > 1:
            return "disconnected"
        patterns = motif_patterns()
        for name in self.checks:
            if name in patterns and mol.HasSubstructMatch(patterns[name]):
                return name
        return None

    def flawed(
        self, graphs: Sequence[Graph], vocab: GraphVocab, which: Sequence[int]
    ) -> dict[int, str]:
        """{index: first failed check} over ``graphs[i]`` for i in ``which``."""
        out = {}
        for i in which:
            why = self.flaw(graphs[i], vocab)
            if why is not None:
                out[i] = why
        return out
