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

    def bin_centres(self, p: int) -> list[float]:
        """A value standing for each bin of property ``p``: the middle of its edges (an outer
        bin's other end is the training range's end, or the neighbour's width away)."""
        e = list(self.config.property_edges[p])
        if self.config.property_ranges:
            lo, hi = self.config.property_ranges[p]
        else:
            lo, hi = math.nan, math.nan
        width = (e[-1] - e[0]) / max(len(e) - 1, 1) if len(e) > 1 else 1.0
        lo = lo if lo == lo and lo < e[0] else e[0] - width
        hi = hi if hi == hi and hi > e[-1] else e[-1] + width
        ends = [lo, *e, hi]
        return [(a + b) / 2 for a, b in zip(ends, ends[1:], strict=False)]

    def target_labels(
        self,
        target: dict[str, float],
        batch: int,
        generator: torch.Generator | None = None,
        interpolate: bool = False,
    ) -> Tensor:
        """(batch, P) bins of a target ``{"qed": 0.7}``; properties not named are null.

        ``interpolate``: a value between two bins' centres (:meth:`bin_centres`) sends each
        sample to the upper bin with probability its distance from the lower centre over the
        centres' gap (seeded by ``generator``), so the batch's mix of bins, and with it the
        samples' property, moves smoothly with the target rather than jumping at bin edges;
        off: every sample to the bin that holds the value."""
        values = torch.full((1, len(self.config.properties)), math.nan, dtype=torch.float64)
        for name, v in target.items():
            if name not in self.config.properties:
                raise ValueError(
                    f"target {name!r}: the model is conditioned on {list(self.config.properties)}"
                )
            values[0, self.config.properties.index(name)] = float(v)
        labels = self.property_labels(values).expand(batch, -1).clone()
        if not interpolate:
            return labels
        u = torch.rand(batch, len(self.config.properties), generator=generator,
                       dtype=torch.float64, device=generator.device if generator else None)  # fmt: skip
        u = u.cpu()
        for name, v in target.items():
            p = self.config.properties.index(name)
            lower, share = self._between(p, float(v))
            labels[:, p] = lower + (u[:, p] < share).long()
        return labels

    def _between(self, p: int, value: float) -> tuple[int, float]:
        """(lower bin, share of samples for the bin above) of a target value of property p."""
        c = self.bin_centres(p)
        if value <= c[0]:
            return 0, 0.0
        if value >= c[-1]:
            return len(c) - 1, 0.0
        j = max(i for i in range(len(c)) if c[i] <= value)
        return j, (value - c[j]) / (c[j + 1] - c[j])

    def describe_target(self, name: str, value: float) -> str:
        """One line: the bin a target value falls in, and whether the data reach it."""
        p = self.config.properties.index(name)
        edges = self.config.property_edges[p]
        k = int(torch.bucketize(torch.tensor([value]), torch.tensor(edges), right=True))
        lo = f"{edges[k - 1]:.4g}" if k > 0 else "-inf"
        hi = f"{edges[k]:.4g}" if k < len(edges) else "inf"
        line = f"{name} = {value:g}: bin {k + 1} of {len(edges) + 1}, [{lo}, {hi})"
        j, share = self._between(p, value)
        if share > 0:
            line += (
                f"; with --target-mode interpolate, bins {j + 1} and {j + 2} "
                f"({1 - share:.0%} / {share:.0%}, between their centres)"
            )
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
