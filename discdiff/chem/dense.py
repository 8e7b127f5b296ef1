"""Dense fields of molecule graphs: what a graph denoiser sees, batched.

For diffusion a batch is padded to ``max_nodes`` = N and the bonds are stored as the strict upper
triangle, (B, E) with E = N (N - 1) / 2, so that corrupting each stored edge independently keeps
the adjacency symmetric by construction (:func:`triu_to_dense` rebuilds (B, N, N)); PyG graphs
convert to and from them, and node counts are drawn from a histogram of the data's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "num_edges",
    "triu_to_dense",
    "dense_to_triu",
    "to_dense_fields",
    "dense_fields_to_graphs",
    "to_pyg",
    "from_pyg_batch",
    "node_count_histogram",
    "sample_node_counts",
]

Graph = tuple[torch.Tensor, torch.Tensor]


def num_edges(n: int) -> int:
    """Number of stored edges E = N (N - 1) / 2 of an N-node graph (strict upper triangle)."""
    return n * (n - 1) // 2


def _triu(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ii, jj = torch.triu_indices(n, n, offset=1, device=device)
    return ii, jj


def triu_to_dense(bonds_triu: torch.Tensor, n: int) -> torch.Tensor:
    """Symmetric (B, N, N, ...) matrix from its strict upper triangle (B, E, ...); diagonal 0.

    Trailing dimensions (e.g. logits over bond classes) are carried along.
    """
    if bonds_triu.dim() < 2:
        raise ValueError(f"bonds_triu must have shape (B, E, ...), got {tuple(bonds_triu.shape)}")
    if bonds_triu.shape[1] != num_edges(n):
        raise ValueError(
            f"bonds_triu has E={bonds_triu.shape[1]} edges; N={n} needs E={num_edges(n)}"
        )
    b = bonds_triu.shape[0]
    rest = tuple(bonds_triu.shape[2:])
    dense = bonds_triu.new_zeros((b, n, n) + rest)  # (B, N, N, ...)
    ii, jj = _triu(n, bonds_triu.device)
    dense[:, ii, jj] = bonds_triu
    dense[:, jj, ii] = bonds_triu
    return dense


def dense_to_triu(bonds: torch.Tensor) -> torch.Tensor:
    """Strict upper triangle (B, E, ...) of a (B, N, N, ...) bond matrix (row-major order)."""
    if bonds.dim() < 3 or bonds.shape[1] != bonds.shape[2]:
        raise ValueError(f"bonds must have shape (B, N, N, ...), got {tuple(bonds.shape)}")
    ii, jj = _triu(bonds.shape[1], bonds.device)
    return bonds[:, ii, jj]


def to_dense_fields(graphs: Sequence[Graph], max_nodes: int) -> dict[str, torch.Tensor]:
    """Collate variable-size graphs into padded diffusion fields.

    Returns ``atoms`` (B, N) long, ``bonds`` (B, E) long (strict upper triangle), ``node_mask``
    (B, N) bool and ``edge_mask`` (B, E) bool, with N = ``max_nodes``; padding is class 0 with
    mask False (an edge counts only when both its ends are real nodes).
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    bsz = len(graphs)
    atoms = torch.zeros(bsz, max_nodes, dtype=torch.long)  # (B, N)
    dense = torch.zeros(bsz, max_nodes, max_nodes, dtype=torch.long)  # (B, N, N)
    node_mask = torch.zeros(bsz, max_nodes, dtype=torch.bool)  # (B, N)
    for k, (a, b) in enumerate(graphs):
        n = a.shape[0]
        if a.dim() != 1 or tuple(b.shape) != (n, n):
            raise ValueError(
                f"graph {k}: expected atoms (N,) and bonds (N, N), got "
                f"{tuple(a.shape)} and {tuple(b.shape)}"
            )
        if n > max_nodes:
            raise ValueError(f"graph {k} has {n} nodes, more than max_nodes={max_nodes}")
        atoms[k, :n] = a
        dense[k, :n, :n] = b
        node_mask[k, :n] = True
    ii, jj = _triu(max_nodes, atoms.device)
    bonds = dense[:, ii, jj]  # (B, E)
    edge_mask = node_mask[:, ii] & node_mask[:, jj]  # (B, E)
    return {"atoms": atoms, "bonds": bonds, "node_mask": node_mask, "edge_mask": edge_mask}


def dense_fields_to_graphs(
    atoms: torch.Tensor, bonds: torch.Tensor, node_mask: torch.Tensor
) -> list[Graph]:
    """Split padded fields atoms (B, N), bonds (B, E), node_mask (B, N) into per-graph pairs,
    on the CPU wherever the fields were (one copy each, not two reads per graph).

    Real nodes must come first in each row (as :func:`to_dense_fields` and samplers lay them out).
    """
    if atoms.dim() != 2 or node_mask.shape != atoms.shape:
        raise ValueError(
            f"atoms and node_mask must both be (B, N), got {tuple(atoms.shape)} and "
            f"{tuple(node_mask.shape)}"
        )
    atoms, bonds, node_mask = atoms.cpu(), bonds.cpu(), node_mask.cpu()
    n = atoms.shape[1]
    dense = triu_to_dense(bonds, n)  # (B, N, N)
    out = []
    for k in range(atoms.shape[0]):
        m = int(node_mask[k].sum())
        if not bool(node_mask[k, :m].all()):
            raise ValueError(f"row {k} of node_mask is not a prefix of True values")
        out.append((atoms[k, :m].clone(), dense[k, :m, :m].clone()))
    return out


# ----------------------------------------------------------------------------- PyG


def to_pyg(atoms: torch.Tensor, bonds: torch.Tensor) -> Any:
    """PyTorch Geometric ``Data``: x = atom classes (N,), edge_index (2, 2M) with both
    directions of every bond, edge_attr (2M,) bond classes, num_nodes = N."""
    from torch_geometric.data import Data

    n = atoms.shape[0]
    if atoms.dim() != 1 or tuple(bonds.shape) != (n, n):
        raise ValueError(
            f"expected atoms (N,) and bonds (N, N), got {tuple(atoms.shape)} and "
            f"{tuple(bonds.shape)}"
        )
    src, dst = torch.nonzero(bonds, as_tuple=True)  # both directions of a symmetric matrix
    keep = src != dst
    src, dst = src[keep], dst[keep]
    return Data(
        x=atoms.long(),
        edge_index=torch.stack([src, dst]).long(),  # (2, 2M)
        edge_attr=bonds[src, dst].long(),  # (2M,)
        num_nodes=n,
    )


def from_pyg_batch(batch: Any, max_nodes: int) -> dict[str, torch.Tensor]:
    """Dense fields (as :func:`to_dense_fields`) of a PyG ``Batch`` (or a single ``Data``):
    :func:`discdiff.chem.pyg.densify` (PyG's ``to_dense_batch`` / ``to_dense_adj``)."""
    from discdiff.chem.pyg import densify

    out = densify(batch, max_nodes)
    out.pop("props", None)
    return out


# ----------------------------------------------------------------------------- node counts


def node_count_histogram(counts: Iterable[int | Graph], max_nodes: int) -> torch.Tensor:
    """Empirical distribution of graph sizes: (max_nodes + 1,) float64 probabilities over N.

    ``counts`` holds node counts or (atoms, bonds) graphs. Used to draw N before sampling.
    """
    hist = torch.zeros(max_nodes + 1, dtype=torch.float64)
    for c in counts:
        n = int(c[0].shape[0]) if isinstance(c, tuple) else int(c)
        if not 0 <= n <= max_nodes:
            raise ValueError(f"node count {n} outside [0, max_nodes={max_nodes}]")
        hist[n] += 1
    if hist.sum() == 0:
        raise ValueError("node_count_histogram needs at least one graph")
    return hist / hist.sum()


def sample_node_counts(
    hist: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``num_samples`` node counts (num_samples,) long from a :func:`node_count_histogram`."""
    if hist.dim() != 1 or bool((hist < 0).any()) or float(hist.sum()) <= 0:
        raise ValueError("hist must be a 1-D non-negative tensor with positive sum")
    return torch.multinomial(hist.float(), num_samples, replacement=True, generator=generator)
