"""Molecule graphs as PyTorch Geometric data: a dataset of ``Data`` objects, their ``Batch``, and
the densification the graph denoiser needs.

A molecule is ``Data(x=(n,) atom classes, edge_index=(2, 2M) both directions of every bond,
edge_attr=(2M,) bond classes, y=(1, P) property values)``; a :class:`MoleculeGraphDataset` holds
many in PyG's collated in-memory form. :func:`densify` turns a ``Batch`` into the padded fields
of the molecule task (atoms (B, N), bonds (B, E) strict upper triangle, node_mask (B, N),
edge_mask (B, E), props (B, P)) with PyG's ``to_dense_batch`` and ``to_dense_adj``, so PyG data
trains, evaluates and conditions the denoiser directly (``MoleculeTask.fields`` calls it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data, InMemoryDataset
from torch_geometric.utils import to_dense_adj, to_dense_batch

from discdiff.chem.graph import GraphVocab, encode_smiles, to_pyg

__all__ = ["MoleculeGraphDataset", "densify", "is_pyg_batch", "collate_graphs"]

Graph = tuple[Tensor, Tensor]


class MoleculeGraphDataset(InMemoryDataset):
    """In-memory PyG dataset of molecule graphs (optionally with property values ``y``)."""

    def __init__(self, graphs: Sequence[Graph], props: Tensor | None = None) -> None:
        super().__init__(root=None)
        if props is not None and props.shape[0] != len(graphs):
            raise ValueError(f"{props.shape[0]} property rows for {len(graphs)} graphs")
        items = []
        for i, (atoms, bonds) in enumerate(graphs):
            d = to_pyg(atoms, bonds)
            if props is not None:
                d.y = props[i : i + 1].float()  # (1, P): a Batch stacks them into (B, P)
            items.append(d)
        if not items:
            raise ValueError("a MoleculeGraphDataset needs at least one graph")
        self.data, self.slices = self.collate(items)

    @classmethod
    def from_smiles(
        cls, smiles: Sequence[str], vocab: GraphVocab, props: Tensor | None = None
    ) -> MoleculeGraphDataset:
        """Graphs of the SMILES that fit ``vocab`` (others skipped; props must then match)."""
        graphs, _ = encode_smiles(smiles, vocab)
        return cls(graphs, props)

    def graphs(self) -> list[Graph]:
        """The (atoms (n,), bonds (n, n)) graphs back."""
        out = []
        for i in range(len(self)):
            d = self[i]
            n = int(d.num_nodes)
            bonds = torch.zeros(n, n, dtype=torch.long)
            bonds[d.edge_index[0], d.edge_index[1]] = d.edge_attr.long()
            out.append((d.x.long(), bonds))
        return out


def is_pyg_batch(batch: Any) -> bool:
    """Whether ``batch`` is PyG data (a ``Batch`` or one ``Data``)."""
    return isinstance(batch, Data | Batch)


def collate_graphs(items: Sequence[Any]) -> Any:
    """A DataLoader's collate for molecule items: PyG ``Data`` -> ``Batch``; else torch's."""
    if items and isinstance(items[0], Data):
        return Batch.from_data_list(list(items))
    return torch.utils.data.default_collate(items)


def densify(batch: Data | Batch, max_nodes: int) -> dict[str, Tensor]:
    """Padded molecule fields of a PyG ``Batch`` (see the module docstring)."""
    x = batch.x.long().view(-1)
    vec = getattr(batch, "batch", None)
    if vec is None:
        vec = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    size = int(batch.num_graphs) if hasattr(batch, "num_graphs") else 1
    counts = torch.bincount(vec, minlength=size)
    if int(counts.max()) > max_nodes:
        raise ValueError(f"a graph has {int(counts.max())} nodes, more than max_nodes={max_nodes}")
    atoms, node_mask = to_dense_batch(x, vec, fill_value=0, max_num_nodes=max_nodes,
                                      batch_size=size)  # fmt: skip
    adj = to_dense_adj(batch.edge_index, vec, edge_attr=batch.edge_attr.long().view(-1),
                       max_num_nodes=max_nodes, batch_size=size)  # fmt: skip  # (B, N, N)
    ii, jj = torch.triu_indices(max_nodes, max_nodes, 1, device=x.device)
    out = {
        "atoms": atoms,
        "bonds": adj[:, ii, jj].long(),
        "node_mask": node_mask,
        "edge_mask": node_mask[:, ii] & node_mask[:, jj],
    }
    y = getattr(batch, "y", None)
    if y is not None:
        out["props"] = y.float().view(size, -1)
    return out
