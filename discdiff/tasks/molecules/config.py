"""The molecule task's configuration: vocabulary, graph size, processes, priors, node counts."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from discdiff.chem.graph import GraphVocab
from discdiff.processes import PROCESSES
from discdiff.tasks.base import TaskConfig, process_problem, task_objective, usable_processes
from discdiff.tasks.probes import check_continuous_schedule

__all__ = ["MoleculeTaskConfig", "takes_prior"]


def takes_prior(process: str) -> bool:
    """Whether the registered process factory takes the data's class frequencies (``prior``)."""
    try:
        return "prior" in inspect.signature(PROCESSES.get(process)).parameters
    except (ValueError, TypeError):
        return False


def _probs(values: Sequence[float] | None, name: str, size: int) -> tuple[float, ...] | None:
    if values is None:
        return None
    p = tuple(float(v) for v in values)
    if len(p) != size or any(not math.isfinite(v) or v < 0 for v in p) or not sum(p) > 0:
        raise ValueError(f"{name} must be {size} non-negative finite numbers with a positive sum")
    total = sum(p)
    if abs(total - 1.0) < 1e-12:  # already normalised: keep the values (a reload is exact)
        return p
    return tuple(v / total for v in p)


@dataclass(frozen=True)
class MoleculeTaskConfig(TaskConfig):
    """What the task needs besides the denoiser's weights (JSON via to_dict/from_dict).

    vocab: :meth:`GraphVocab.to_dict`. max_nodes: N of the padded fields. process: one of
    ``PROCESS_KINDS``; schedule: one of ``SCHEDULES``. atom_prior / bond_prior: class
    frequencies (needed by "marginal"). node_hist: (max_nodes + 1,) probabilities of graph
    sizes. edge_weight: loss weight of the bonds field. dataset: where the training SMILES
    came from ("qm9", "moses" or a file path), used for novelty. properties: names of the
    registered properties (:mod:`discdiff.chem.properties`) the denoiser is conditioned on;
    property_edges: their bin edges (one tuple each, all of one length); label_dropout: the
    probability of training with a property's label replaced by the null id (CFG);
    property_ranges: the smallest and largest training value of each (for messages).
    ce_weight: the x_0 cross-entropy added to the training ELBO (``continuous_elbo``'s
    ``ce_weight``: rare classes, such as charged atoms, are learnt only with it).
    objective: a registered objective (:mod:`discdiff.objectives`; "elbo", "score_entropy",
    "dfm", a newcomer's) over both fields, with the bonds weighted by ``edge_weight`` in
    training.
    """

    vocab: dict[str, Any]
    max_nodes: int
    node_hist: tuple[float, ...]
    process: str = "marginal"
    schedule: str = "loglinear"
    atom_prior: tuple[float, ...] | None = None
    bond_prior: tuple[float, ...] | None = None
    edge_weight: float = 5.0
    dataset: str | None = None
    properties: tuple[str, ...] = ()
    property_edges: tuple[tuple[float, ...], ...] = ()
    label_dropout: float = 0.1
    property_ranges: tuple[tuple[float, float], ...] = ()
    ce_weight: float = 0.0
    objective: str = "elbo"

    def __post_init__(self) -> None:
        vocab = GraphVocab.from_dict(self.vocab)  # validates
        object.__setattr__(self, "vocab", vocab.to_dict())
        if isinstance(self.max_nodes, bool) or not isinstance(self.max_nodes, int):
            raise TypeError(f"max_nodes must be an int, got {self.max_nodes!r}")
        if self.max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {self.max_nodes}")
        if process_problem(self.process, continuous_elbo=True, options_ok=True) is not None:
            kinds = usable_processes(continuous_elbo=True, options_ok=True)
            raise ValueError(f"unknown process {self.process!r}; expected one of {kinds}")
        check_continuous_schedule(self.schedule)
        hist = _probs(self.node_hist, "node_hist", self.max_nodes + 1)
        if hist is None or hist[0] > 0:
            raise ValueError("node_hist must give probability 0 to graphs with 0 nodes")
        object.__setattr__(self, "node_hist", hist)
        ka, kb = vocab.num_atom_classes, vocab.num_bond_classes
        object.__setattr__(self, "atom_prior", _probs(self.atom_prior, "atom_prior", ka))
        object.__setattr__(self, "bond_prior", _probs(self.bond_prior, "bond_prior", kb))
        if takes_prior(self.process) and (self.atom_prior is None or self.bond_prior is None):
            raise ValueError(f"process {self.process!r} needs atom_prior and bond_prior")
        if not (isinstance(self.edge_weight, int | float) and self.edge_weight > 0):
            raise ValueError(f"edge_weight must be a number > 0, got {self.edge_weight!r}")
        object.__setattr__(self, "edge_weight", float(self.edge_weight))
        ok = isinstance(self.ce_weight, int | float) and not isinstance(self.ce_weight, bool)
        if not ok or not math.isfinite(self.ce_weight) or self.ce_weight < 0:
            raise ValueError(f"ce_weight must be a finite number >= 0, got {self.ce_weight!r}")
        object.__setattr__(self, "ce_weight", float(self.ce_weight))
        task_objective(self)  # registered, and fit for the process by name
        self._check_properties()

    def _check_properties(self) -> None:
        from discdiff.chem.properties import PROPERTIES

        props = tuple(str(p) for p in self.properties)
        for p in props:
            PROPERTIES.get(p)
        if len(set(props)) != len(props):
            raise ValueError(f"properties name one twice: {props}")
        edges = tuple(tuple(float(v) for v in e) for e in self.property_edges)
        if len(edges) != len(props):
            raise ValueError(f"{len(edges)} sets of property_edges for {len(props)} properties")
        if edges and (len({len(e) for e in edges}) != 1 or not edges[0]):
            raise ValueError("every property needs the same number (>= 1) of bin edges")
        for p, e in zip(props, edges, strict=True):
            if not all(math.isfinite(v) for v in e) or any(
                b <= a for a, b in zip(e, e[1:], strict=False)
            ):
                raise ValueError(f"the bin edges of {p!r} must be finite and increasing")
        if not (isinstance(self.label_dropout, int | float) and 0 <= self.label_dropout < 1):
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout!r}")
        ranges = tuple((float(a), float(b)) for a, b in self.property_ranges)
        if ranges and len(ranges) != len(props):
            raise ValueError(f"{len(ranges)} property_ranges for {len(props)} properties")
        object.__setattr__(self, "property_ranges", ranges)
        object.__setattr__(self, "properties", props)
        object.__setattr__(self, "property_edges", edges)
        object.__setattr__(self, "label_dropout", float(self.label_dropout))

    @property
    def field_weights(self) -> dict[str, float]:
        """The training loss's weight of each field (the objectives read it)."""
        return {"bonds": self.edge_weight}

    @property
    def property_bins(self) -> int:
        """Bins per property (0 when unconditional); also the null label id."""
        return len(self.property_edges[0]) + 1 if self.property_edges else 0

    @property
    def graph_vocab(self) -> GraphVocab:
        """The :class:`GraphVocab` of atoms and bonds."""
        return GraphVocab.from_dict(self.vocab)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = dataclasses.asdict(self)
        for k in ("node_hist", "atom_prior", "bond_prior"):
            d[k] = None if d[k] is None else list(d[k])
        d["properties"] = list(self.properties)
        d["property_edges"] = [list(e) for e in self.property_edges]
        d["property_ranges"] = [list(r) for r in self.property_ranges]
        return d
