"""Molecule data for the molecule task: padded graph datasets, SMILES sources, and the
preparation of a training run from SMILES (vocabulary, graphs, priors, held-out split).

What ``discdiff molecules train`` does before training, as a library call
(:func:`prepare_molecule_data`), so that the command line stays a thin layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from discdiff.chem.graph import GraphVocab, encode_smiles, to_dense_fields

__all__ = ["GraphDataset", "load_training_smiles", "PreparedData", "prepare_molecule_data"]

Graph = tuple[Tensor, Tensor]


class GraphDataset(torch.utils.data.Dataset):
    """Map-style dataset of padded molecule graphs; items are dicts the default collate stacks.

    Holds atoms (M, N), bonds (M, E), node_mask (M, N), edge_mask (M, E) for M molecules
    (stored once, padded to ``max_nodes``), so batching costs no Python work per graph.
    """

    def __init__(self, fields: dict[str, Tensor]) -> None:
        keys = ("atoms", "bonds", "node_mask", "edge_mask")
        missing = [k for k in keys if k not in fields]
        if missing:
            raise ValueError(f"GraphDataset fields lack {missing}")
        sizes = {int(fields[k].shape[0]) for k in keys}
        if len(sizes) != 1:
            raise ValueError(f"GraphDataset fields disagree on the number of graphs: {sizes}")
        self.fields = {
            "atoms": fields["atoms"].long(),
            "bonds": fields["bonds"].long(),
            "node_mask": fields["node_mask"].bool(),
            "edge_mask": fields["edge_mask"].bool(),
        }

    @classmethod
    def from_graphs(cls, graphs: Sequence[Graph], max_nodes: int) -> GraphDataset:
        """Pad (atoms (n,), bonds (n, n)) graphs to ``max_nodes``."""
        return cls(to_dense_fields(graphs, max_nodes))

    def __len__(self) -> int:
        return int(self.fields["atoms"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.fields.items()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fields as safetensors (uint8 ids, bool masks)."""
        out = {k: v.to(torch.uint8).contiguous() for k, v in self.fields.items()}
        save_file(out, str(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GraphDataset:
        """Inverse of :meth:`save`."""
        try:
            t = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"cannot read graph data {str(path)!r}: {err}") from err
        return cls(t)


def load_training_smiles(source: str, split: str = "train", download: bool = True) -> list[str]:
    """SMILES of ``source``: "qm9", "moses" (a split of it) or a SMILES/CSV file path.

    ``download=False`` returns ``[]`` for qm9/moses when they are not in the cache yet
    (so that sampling never triggers a download just to report novelty).
    """
    from discdiff.datasets._fetch import cache_dir

    if source == "qm9":
        from discdiff.datasets.qm9 import load_qm9

        if not download and not (cache_dir() / "qm9" / f"{split}.txt").is_file():
            return []
        return load_qm9(split)
    if source == "moses":
        from discdiff.datasets._fetch import _find_archive
        from discdiff.datasets.moses import MOSES_PACKAGE, load_moses

        if not download and _find_archive(cache_dir() / "packages", *MOSES_PACKAGE) is None:
            return []
        return load_moses("test" if split == "val" else split)
    from discdiff.datasets.smiles import read_smiles_file

    return read_smiles_file(source)


@dataclass
class PreparedData:
    """What :func:`prepare_molecule_data` returns: vocabulary, graphs of both splits, counts."""

    vocab: GraphVocab
    graphs: list[Graph]
    val_graphs: list[Graph]
    skipped: int
    dataset: str


def _read(source: str, max_train: int | None, split: str) -> list[str]:
    smiles = load_training_smiles(source, split)
    if not smiles:
        raise ValueError(f"--data {source!r} holds no SMILES")
    return smiles[:max_train] if max_train else smiles


def prepare_molecule_data(
    source: str, *, max_train: int | None = None, max_nodes: int | None = None
) -> PreparedData:
    """Read ``source`` ("qm9", "moses" or a SMILES/CSV file), pick its vocabulary (QM9's,
    MOSES's, or the file's own elements and charges) and encode both splits as graphs.

    Graphs with more than ``max_nodes`` atoms or outside the vocabulary are skipped (counted).
    The held-out graphs are the data set's validation split (qm9, moses); for a file, its first
    500 molecules (at most a tenth).
    """
    vocab = {"qm9": GraphVocab.qm9, "moses": GraphVocab.moses}.get(source)
    smiles = _read(source, max_train, "train")
    voc = vocab() if vocab is not None else GraphVocab.from_smiles(smiles)
    graphs, skipped = encode_smiles(smiles, voc)
    if max_nodes:
        kept = [g for g in graphs if g[0].shape[0] <= max_nodes]
        skipped += len(graphs) - len(kept)
        graphs = kept
    if not graphs:
        raise ValueError(f"no molecule of --data {source!r} fits the vocabulary and max_nodes")
    if vocab is not None:
        val_smiles = _read(source, 2000, "val")
    else:
        val_smiles = smiles[: max(1, min(500, len(smiles) // 10))]
    val_graphs, _ = encode_smiles(val_smiles, voc)
    limit = max_nodes or max(int(a.shape[0]) for a, _ in graphs)
    val_graphs = [g for g in val_graphs if 0 < g[0].shape[0] <= limit]
    name = source if vocab is not None else str(Path(source).resolve())
    return PreparedData(voc, graphs, val_graphs, skipped, name)
