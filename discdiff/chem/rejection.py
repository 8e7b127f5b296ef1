"""Rejection of flawed samples: a sampled molecule graph that RDKit rejects, that falls apart
into pieces, or that carries one of the filters' motifs (:data:`discdiff.chem.filters.MOTIFS`:
enols, C=C in small rings, ...) or breaks a ring rule (:data:`~discdiff.chem.filters.RING_RULES`:
Bredt's rule, two double bonds in a non-aromatic 6-ring) is drawn again, whole, with the same node count, scaffold and
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

from discdiff.chem.filters import MOTIFS, RING_RULES, motif_patterns
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
REJECTABLE: tuple[str, ...] = ("invalid", "disconnected", *MOTIFS, *RING_RULES)
#: redraw rounds of the command line's ``--reject``
REJECT_ROUNDS = 5
#: most candidates drawn at once for one flawed sample in a round
MAX_CANDIDATES = 8
#: a pass rate of first draws below this is said in the summary: the model makes many flawed
#: molecules, and rejection hides how many (the shipped QM9 model passes about 93%)
LOW_PASS_RATE = 0.5

Graph = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RejectionStats:
    """What rejecting runs did (summed over the calls it is passed to): ``redrawn`` draws
    rejected in all, ``by_check`` the first failed check of each, ``rounds`` the most redraw
    rounds one call ran, ``kept_flawed`` the samples still flawed after their last round (kept
    as they are), ``extra_draws`` the samples drawn in the rounds (used or not: the cost),
    ``first_draws`` and ``first_passed`` the first draws and how many passed (the model's own
    pass rate), ``stopped_by_budget`` whether the bound on extra draws stopped a call early."""

    redrawn: int = 0
    by_check: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    kept_flawed: int = 0
    extra_draws: int = 0
    first_draws: int = 0
    first_passed: int = 0
    stopped_by_budget: bool = False

    @property
    def pass_rate(self) -> float:
        """The share of first draws that passed every check (1.0 before any draw)."""
        return self.first_passed / self.first_draws if self.first_draws else 1.0

    def summary(self) -> str:
        """A line for a report (more when the pass rate is low or the bound stopped it)."""
        if not self.redrawn:
            return "rejected: none (every first draw passed)"
        parts = ", ".join(
            f"{k} {v}" for k, v in sorted(self.by_check.items(), key=lambda kv: -kv[1])
        )
        share = f"{1.0 - self.pass_rate:.1%} of {self.first_draws} first draws"
        line = (
            f"rejected and drawn again: {self.redrawn} ({parts}; {share}) in {self.rounds} "
            f"round(s), {self.extra_draws} extra draws; {self.kept_flawed} kept with a flaw"
        )
        if self.stopped_by_budget:
            line += "\nwarning: the bound on extra draws (--reject-budget) stopped rejection"
        if self.pass_rate < LOW_PASS_RATE:
            line += (
                f"\nwarning: only {self.pass_rate:.1%} of the model's first draws pass the "
                "checks: it makes many flawed molecules, which rejection hides (--model-alone "
                "shows them)"
            )
        return line


@dataclass(frozen=True)
class Rejection:
    """Which checks reject a sample (names of :data:`REJECTABLE`), how many redraw rounds, and
    the two opt-in checks: ``unique`` (a molecule already in the run) and ``known`` (canonical
    SMILES to avoid, e.g. the training data: only new molecules). ``max_draws`` bounds the
    extra draws of a call (None: no bound). ``scaffold`` (an RDKit molecule; the molecule task
    sets it from ``sample_graphs(scaffold=...)``): a sample in which a plain RDKit substructure
    match does not find it, as written, is drawn again (its fixed atoms can read back as part
    of an aromatic ring, e.g. an amide inside a pyridone)."""

    checks: tuple[str, ...] = REJECTABLE
    rounds: int = REJECT_ROUNDS
    unique: bool = False
    known: frozenset[str] | set[str] | None = field(default=None, repr=False)
    max_draws: int | None = None
    scaffold: Chem.Mol | None = field(default=None, repr=False, compare=False)

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
        if self.max_draws is not None and (
            isinstance(self.max_draws, bool)
            or not isinstance(self.max_draws, int)
            or self.max_draws < 0
        ):
            raise ValueError(f"rejection max_draws must be an int >= 0, got {self.max_draws!r}")

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
            if name in RING_RULES and RING_RULES[name](mol):
                return name
        if self.scaffold is not None and not mol.HasSubstructMatch(self.scaffold):
            return "scaffold"  # fixed atoms that read back otherwise (an aromatic lactam)
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
    to passing samples. ``rejection.max_draws`` bounds the extra draws of this call: a round
    that would pass it draws fewer candidates, or for fewer samples, and the rest are kept as
    they are (counted, and said in the summary). Adds what it did to ``stats`` (returned)."""
    stats = stats if stats is not None else RejectionStats()
    seen: set[str] | None = set() if rejection.unique else None  # accepted SMILES, in order
    flawed = rejection.flawed(graphs, vocab, range(len(graphs)), seen)
    tried, passed = len(graphs), len(graphs) - len(flawed)
    stats.first_draws += tried
    stats.first_passed += passed
    budget = rejection.max_draws
    spent = 0

    def rejected(why: str) -> None:
        stats.redrawn += 1
        stats.by_check[why] = stats.by_check.get(why, 0) + 1

    rounds = 0
    while flawed and rounds < rejection.rounds:
        if budget is not None and spent >= budget:
            stats.stopped_by_budget = True
            break
        rounds += 1
        # enough candidates that all fail with odds about exp(-2) at the pass rate seen so far
        m = (
            MAX_CANDIDATES
            if not passed
            else min(MAX_CANDIDATES, max(1, -(-2 * tried // passed) - 1))
        )
        which = sorted(flawed)
        if budget is not None and len(which) * m > budget - spent:  # what the bound allows
            m = max(1, (budget - spent) // len(which))
            if len(which) > budget - spent:
                which = which[: budget - spent]
                stats.stopped_by_budget = True
        for i in which:
            rejected(flawed[i])
        chosen = set(which)
        left = {i: why for i, why in flawed.items() if i not in chosen}  # kept as they are
        fresh = draw([i for _ in range(m) for i in which])  # candidate c of which[k] at c*K + k
        stats.extra_draws += len(fresh)
        spent += len(fresh)
        flawed = left
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
