"""Property conditioning of the molecule task (mixed into it): the bins of each property, the
labels of a batch, CFG label dropout, targets, and a conditioned copy of a trained task."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Self

import torch
from rdkit import Chem
from torch import Tensor

from discdiff.chem.graph import GraphVocab, graph_to_mol
from discdiff.chem.properties import PROPERTIES, quantile_edges
from discdiff.datasets.qm9 import QM9_QUANTUM, qm9_quantum_table

__all__ = ["PropertyConditioning", "graph_properties", "register_qm9_properties"]

Graph = tuple[Tensor, Tensor]


class PropertyConditioning:
    """Conditioning methods of :class:`~discdiff.tasks.molecules.MoleculeTask` (uses its
    ``config``: ``properties``, ``property_edges``, ``property_ranges``, ``label_dropout``)."""

    def conditioned(
        self,
        properties: Sequence[str],
        values: Tensor,
        bins: int = 16,
        label_dropout: float = 0.1,
    ) -> Self:
        """This task conditioned on ``properties`` (their bins at the quantiles of the training
        values (M, P)); processes, priors and node counts unchanged, so a denoiser trained for
        this task can be fine-tuned into the conditioned one (:func:`runs.warm_start`)."""
        if not properties:
            raise ValueError("conditioning needs at least one property")
        for p, name in enumerate(properties):
            known = int(torch.isfinite(values[:, p]).sum())
            if known < bins:
                why = " (QM9's DFT properties exist for QM9 molecules only)" if not known else ""
                raise ValueError(
                    f"property {name!r} has a value for {known} of {values.shape[0]} training "
                    f"molecules, fewer than the {bins} bins{why}"
                )
        edges = tuple(quantile_edges(values[:, p], bins) for p in range(len(properties)))
        ranges = []
        for p in range(len(properties)):
            v = values[:, p][torch.isfinite(values[:, p])]
            ranges.append((float(v.min()), float(v.max())))
        cfg = dataclasses.replace(
            self.config,
            properties=tuple(properties),
            property_edges=edges,
            label_dropout=label_dropout,
            property_ranges=tuple(ranges),
        )
        return type(self)(cfg)

    @property
    def null_label(self) -> int:
        """The property-bin id meaning "no target" (classifier-free guidance)."""
        if not self.config.properties:
            raise ValueError("this molecule model is not conditioned on properties")
        return self.config.property_bins

    def property_labels(self, values: Tensor) -> Tensor:
        """Property values (B, P) -> bins (B, P) long on their device; NaN -> the null id."""
        out = []
        for p, e in enumerate(self.config.property_edges):
            v = values[:, p].contiguous()
            edges = torch.tensor(e, dtype=v.dtype, device=v.device)
            ids = torch.bucketize(v, edges, right=True)
            out.append(torch.where(torch.isnan(v), torch.full_like(ids, self.null_label), ids))
        return torch.stack(out, dim=1)

    def target_labels(self, target: dict[str, float], batch: int) -> Tensor:
        """(batch, P) bins of a target ``{"qed": 0.7}``; properties not named are null."""
        values = torch.full((1, len(self.config.properties)), math.nan, dtype=torch.float64)
        for name, v in target.items():
            if name not in self.config.properties:
                raise ValueError(
                    f"target {name!r}: the model is conditioned on {list(self.config.properties)}"
                )
            values[0, self.config.properties.index(name)] = float(v)
        return self.property_labels(values).expand(batch, -1).clone()

    def describe_target(self, name: str, value: float) -> str:
        """One line: the bin a target value falls in, and whether the data reach it."""
        p = self.config.properties.index(name)
        edges = self.config.property_edges[p]
        k = int(torch.bucketize(torch.tensor([value]), torch.tensor(edges), right=True))
        lo = f"{edges[k - 1]:.4g}" if k > 0 else "-inf"
        hi = f"{edges[k]:.4g}" if k < len(edges) else "inf"
        line = f"{name} = {value:g}: bin {k + 1} of {len(edges) + 1}, [{lo}, {hi})"
        if self.config.property_ranges:
            a, b = self.config.property_ranges[p]
            if not a <= value <= b:
                line += (
                    f"; outside the training molecules' range [{a:.4g}, {b:.4g}], so the "
                    "samples aim at that bin, not at the value"
                )
        return line

    def _drop_labels(self, label: Tensor, generator: torch.Generator | None) -> Tensor:
        """CFG training: all labels of a molecule null with probability p; with several
        properties, each of the others then null with probability 1/2, so that a target naming
        any subset of them is a condition the model was trained on."""
        p = self.config.label_dropout
        if p <= 0 and label.shape[1] == 1:
            return label
        gen_dev = generator.device if generator is not None else label.device
        u_all = torch.rand(label.shape[:1], generator=generator, device=gen_dev).to(label.device)
        drop = (u_all[:, None] < p).expand_as(label)
        if label.shape[1] > 1:
            u_one = torch.rand(label.shape, generator=generator, device=gen_dev).to(label.device)
            drop = drop | (u_one < 0.5)
        return torch.where(drop, torch.full_like(label, self.null_label), label)


def graph_properties(graphs: Sequence[Graph], vocab: GraphVocab, names: Sequence[str]) -> Tensor:
    """(M, P) property values of graphs (decoded and sanitised; NaN where that fails)."""
    from discdiff.chem.metrics import sanitize_or_none
    from discdiff.chem.properties import property_values

    mols = (sanitize_or_none(graph_to_mol(a, b, vocab, sanitize=False)) for a, b in graphs)
    return property_values(mols, names)


def _qm9_lookup(index: int, name: str) -> Any:
    def value(mol: Chem.Mol) -> float:
        row = qm9_quantum_table().get(Chem.MolToSmiles(mol, isomericSmiles=False))
        return row[index] if row is not None else math.nan

    value.__doc__ = f"QM9's {name} of a QM9 molecule (NaN outside QM9)."
    return value


def register_qm9_properties() -> None:
    """QM9's DFT properties (``mu``, ``alpha``, ``homo``, ``lumo``, ``gap``, ``r2``, ``zpve``,
    ``cv``; units in :data:`discdiff.datasets.qm9.QM9_QUANTUM`, energies in eV) as conditioning
    properties. RDKit cannot compute them: each is looked up by the molecule's canonical SMILES
    in the table the data ships (:func:`~discdiff.datasets.qm9.qm9_quantum_table`), so a
    molecule outside QM9 (most novel samples) has none (NaN): they condition training on QM9
    and score only the samples that are QM9 molecules. Registered when this module loads."""
    for i, name in enumerate(QM9_QUANTUM):
        if name not in PROPERTIES:
            PROPERTIES.register(name, _qm9_lookup(i, name))


register_qm9_properties()
