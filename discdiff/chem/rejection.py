"""Rejection of flawed samples: a sampled molecule graph that RDKit rejects, that falls apart
into pieces, or that carries one of the filters' motifs (:data:`discdiff.chem.filters.MOTIFS`:
enols, C=C in small rings, ...) is drawn again, whole, with the same node count, scaffold and
property target (:func:`redraw_flawed`: a round draws a few candidates for each flawed sample and
keeps the first that passes), up to ``rounds`` rounds.

Each redraw is a fresh sample of the model, so what comes out is the model's distribution
restricted to molecules that pass every check (rejection sampling, exact), except for the few
still flawed after the last round, which are kept as they are and counted. Two more checks are
off by default because they change what the samples measure: ``unique=True`` redraws a molecule
already sampled in the run (the first one of each is kept: sampling without replacement, for a
library of distinct molecules), and ``known=`` a set of canonical SMILES (a data set's, as
:func:`discdiff.chem.metrics.canonical_set` builds it) redraws any molecule in it. The guards
(:mod:`discdiff.chem.valence`, :mod:`discdiff.chem.motif_guard`) shape every draw and cost
nothing extra; this covers what they cannot see edge by edge: connectedness and enols (whether an
O keeps its H, and whether a C=C is aromatic, is known only once the graph is complete).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from rdkit import Chem

from discdiff.chem.filters import MOTIFS, motif_patterns
from discdiff.chem.graph import GraphVocab, canonical_smiles, graph_to_mol
from discdiff.chem.metrics import largest_fragment

__all__ = [
    "MAX_CANDIDATES",
    "REJECTABLE",
    "REJECT_ROUNDS",
    "Rejection",
    "RejectionStats",
    "redraw_flawed",
]

#: every check of a single sample, in the order they are tried (then "known", "duplicate")
REJECTABLE: tuple[str, ...] = ("invalid", "disconnected", *MOTIFS)
#: redraw rounds of the command line's ``--reject``
REJECT_ROUNDS = 5
#: most candidates drawn at once for one flawed sample in a round
MAX_CANDIDATES = 8

Graph = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RejectionStats:
    """What rejecting runs did (summed over the calls it is passed to): ``redrawn`` draws
    rejected in all, ``by_check`` the first failed check of each, ``rounds`` the most redraw
    rounds one call ran, ``kept_flawed`` the samples still flawed after their last round (kept
    as they are), ``extra_draws`` the samples drawn in the rounds (used or not: the cost)."""

    redrawn: int = 0
    by_check: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    kept_flawed: int = 0
    extra_draws: int = 0

    def summary(self) -> str:
        """One line for a report."""
        if not self.redrawn:
            return "rejected: none (every first draw passed)"
        parts = ", ".join(
            f"{k} {v}" for k, v in sorted(self.by_check.items(), key=lambda kv: -kv[1])
        )
        return (
            f"rejected and drawn again: {self.redrawn} ({parts}) in {self.rounds} round(s), "
            f"{self.extra_draws} extra draws; {self.kept_flawed} kept with a flaw"
        )


@dataclass(frozen=True)
class Rejection:
    """Which checks reject a sample (names of :data:`REJECTABLE`), how many redraw rounds, and
    the two opt-in checks: ``unique`` (a molecule already in the run) and ``known`` (canonical
    SMILES to avoid, e.g. the training data: only new molecules)."""

    checks: tuple[str, ...] = REJECTABLE
    rounds: int = REJECT_ROUNDS
    unique: bool = False
    known: frozenset[str] | set[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in REJECTABLE]
        if unknown or not self.checks:
            raise ValueError(
                f"rejection checks must be some of {list(REJECTABLE)}, got {self.checks!r}"
            )
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rejection rounds must be a positive int, got {self.rounds!r}")
        object.__setattr__(self, "checks", tuple(self.checks))
        if not isinstance(self.unique, bool):
            raise ValueError(f"rejection unique must be a bool, got {self.unique!r}")
        if self.known is not None and not isinstance(self.known, (set, frozenset)):
            raise ValueError("rejection known must be a set of canonical SMILES")

    def flaw(self, graph: Graph, vocab: GraphVocab, seen: set[str] | None = None) -> str | None:
        """The first check ``graph`` (atoms (n,), bonds (n, n)) fails, or None when it passes.

        ``seen`` (with ``unique``): the canonical SMILES accepted so far in the run; a passing
        graph's is added to it, a graph whose SMILES is there already fails as "duplicate"."""
        mol = graph_to_mol(graph[0], graph[1], vocab)
        if mol is None:
            return "invalid" if "invalid" in self.checks else None
        if "disconnected" in self.checks and len(Chem.GetMolFrags(mol)) > 1:
            return "disconnected"
        patterns = motif_patterns()
        for name in self.checks:
            if name in patterns and mol.HasSubstructMatch(patterns[name]):
                return name
        if self.known is None and not (self.unique and seen is not None):
            return None
        smiles = canonical_smiles(largest_fragment(mol))  # as the novelty metric reads it
        if self.known is not None and smiles in self.known:
            return "known"
        if self.unique and seen is not None:
            if smiles in seen:
                return "duplicate"
            seen.add(smiles)
        return None

    def flawed(
        self,
        graphs: Sequence[Graph],
        vocab: GraphVocab,
        which: Sequence[int],
        seen: set[str] | None = None,
    ) -> dict[int, str]:
        """{index: first failed check} over ``graphs[i]`` for i in ``which``, in that order
        (``seen``: see :meth:`flaw`)."""
        out = {}
        for i in which:
            why = self.flaw(graphs[i], vocab, seen)
            if why is not None:
                out[i] = why
        return out


def redraw_flawed(
    graphs: list[Graph],
    draw: Callable[[list[int]], list[Graph]],
    rejection: Rejection,
    vocab: GraphVocab,
    stats: RejectionStats | None = None,
) -> RejectionStats:
    """Replace, in place, each of ``graphs`` that fails a check by a redraw that passes.

    ``draw(indices)`` returns one fresh sample for each index (repeats allowed), made as that
    index's sample was (its node count, scaffold, target). Each round draws, for every sample
    still flawed, as many candidates as the pass rate seen so far makes likely to hold a
    passing one (at most :data:`MAX_CANDIDATES`), and keeps the first that passes, in order:
    each index's draws are independent, so its kept sample follows the model's law restricted
    to passing samples. Adds what it did to ``stats`` (returned)."""
    stats = stats if stats is not None else RejectionStats()
    seen: set[str] | None = set() if rejection.unique else None  # accepted SMILES, in order
    flawed = rejection.flawed(graphs, vocab, range(len(graphs)), seen)
    tried, passed = len(graphs), len(graphs) - len(flawed)

    def rejected(why: str) -> None:
        stats.redrawn += 1
        stats.by_check[why] = stats.by_check.get(why, 0) + 1

    rounds = 0
    while flawed and rounds < rejection.rounds:
        rounds += 1
        for why in flawed.values():
            rejected(why)
        # enough candidates that all fail with odds about exp(-2) at the pass rate seen so far
        m = (
            MAX_CANDIDATES
            if not passed
            else min(MAX_CANDIDATES, max(1, -(-2 * tried // passed) - 1))
        )
        which = sorted(flawed)
        fresh = draw([i for _ in range(m) for i in which])  # candidate c of which[k] at c*K + k
        stats.extra_draws += len(fresh)
        flawed = {}
        for k, i in enumerate(which):
            for c in range(m):
                g = fresh[c * len(which) + k]
                why = rejection.flaw(g, vocab, seen)
                tried += 1
                if why is None:
                    graphs[i] = g
                    passed += 1
                    break
                if c < m - 1:
                    rejected(why)  # the next candidate replaces it
                else:
                    graphs[i], flawed[i] = g, why
    stats.rounds = max(stats.rounds, rounds)
    stats.kept_flawed += len(flawed)
    return stats
