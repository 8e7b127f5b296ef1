"""RDKit molecules <-> categorical graphs, and the dense fields a graph denoiser sees.

A molecule with N atoms is two categorical arrays: ``atoms`` (N,) with atom classes from a
:class:`GraphVocab` (element + formal charge) and ``bonds`` (N, N), symmetric, zero diagonal,
with bond classes 0 = no bond, 1 = single, 2 = double, 3 = triple and, only when the vocabulary
does not kekulize, 4 = aromatic. Hydrogens are implicit (RDKit recomputes them from valence when
the graph is turned back into a molecule) unless ``explicit_h`` makes them nodes.

For diffusion a batch is padded to ``max_nodes`` = N and the bonds are stored as the strict upper
triangle, (B, E) with E = N (N - 1) / 2, so that corrupting each stored edge independently keeps
the adjacency symmetric by construction (:func:`triu_to_dense` rebuilds (B, N, N)).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from rdkit import Chem, RDLogger

__all__ = [
    "BOND_TYPES",
    "GraphVocab",
    "mol_to_graph",
    "graph_to_mol",
    "graph_to_smiles",
    "encode_smiles",
    "canonical_smiles",
    "contains_scaffold",
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

RDLogger.DisableLog("rdApp.*")  # RDKit prints every sanitisation failure; callers count them

#: Bond class -> RDKit bond type (class 0 is "no bond").
BOND_TYPES: tuple[Any, ...] = (
    None,
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
)
_PERIODIC = Chem.GetPeriodicTable()

Graph = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class GraphVocab:
    """Atom classes (element symbol, formal charge) and bond classes of a molecule graph.

    ``kekulize=True`` (default) writes aromatic rings as alternating single/double bonds, so
    there are 4 bond classes (none, single, double, triple); ``False`` adds class 4 = aromatic.
    ``explicit_h=True`` makes hydrogens graph nodes (the vocabulary must then contain ``H``).
    """

    atoms: tuple[tuple[str, int], ...]
    kekulize: bool = True
    explicit_h: bool = False

    def __post_init__(self) -> None:
        atoms = tuple((str(a[0]), int(a[1])) for a in self.atoms)
        if not atoms:
            raise ValueError("GraphVocab needs at least one atom class")
        for sym, _ in atoms:
            try:
                z = _PERIODIC.GetAtomicNumber(sym)
            except RuntimeError:  # RDKit raises on unknown symbols
                z = 0
            if z <= 0:
                raise ValueError(f"atom symbol {sym!r} is not an element")
        if len(set(atoms)) != len(atoms):
            raise ValueError(f"duplicate atom classes in {atoms}")
        if self.explicit_h and ("H", 0) not in atoms:
            raise ValueError("explicit_h=True needs the atom class ('H', 0) in the vocabulary")
        object.__setattr__(self, "atoms", atoms)

    @property
    def num_atom_classes(self) -> int:
        """Number of atom classes Ka."""
        return len(self.atoms)

    @property
    def num_bond_classes(self) -> int:
        """Number of bond classes Kb, "no bond" included: 4 kekulized, 5 with aromatic."""
        return 4 if self.kekulize else 5

    @cached_property
    def _index(self) -> dict[tuple[str, int], int]:
        return {a: i for i, a in enumerate(self.atoms)}

    def atom_index(self, symbol: str, charge: int = 0) -> int | None:
        """Class of an atom (element, formal charge), or None when it is not in the vocabulary."""
        return self._index.get((symbol, int(charge)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "atoms": [[s, c] for s, c in self.atoms],
            "kekulize": self.kekulize,
            "explicit_h": self.explicit_h,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphVocab:
        """Inverse of :meth:`to_dict`."""
        unknown = set(d) - {"atoms", "kekulize", "explicit_h"}
        if unknown:
            raise ValueError(f"unknown GraphVocab keys {sorted(unknown)}")
        return cls(
            atoms=tuple((s, c) for s, c in d["atoms"]),
            kekulize=bool(d.get("kekulize", True)),
            explicit_h=bool(d.get("explicit_h", False)),
        )

    @classmethod
    def from_smiles(
        cls, smiles: Iterable[str], kekulize: bool = True, explicit_h: bool = False
    ) -> GraphVocab:
        """Vocabulary of every (element, charge) seen in ``smiles`` (unparseable ones ignored).

        Order: neutral atoms first, then charged ones, each by decreasing frequency (ties by
        symbol and charge), so the most common element is class 0.
        """
        counts: Counter[tuple[str, int]] = Counter()
        for s in smiles:
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) else None
            if mol is None:
                continue
            if explicit_h:
                mol = Chem.AddHs(mol)
            counts.update((a.GetSymbol(), a.GetFormalCharge()) for a in mol.GetAtoms())
        if explicit_h:
            counts[("H", 0)] += 0
        if not counts:
            raise ValueError("no parseable SMILES to build a GraphVocab from")
        order = sorted(counts, key=lambda a: (a[1] != 0, -counts[a], a[0], a[1]))
        return cls(atoms=tuple(order), kekulize=kekulize, explicit_h=explicit_h)

    @classmethod
    def qm9(cls, explicit_h: bool = False, kekulize: bool = True) -> GraphVocab:
        """QM9 atoms: C, N, O, F (+ H) and the charged N+, O-, C-, N- present in the data."""
        atoms = [("C", 0), ("N", 0), ("O", 0), ("F", 0)]
        if explicit_h:
            atoms.append(("H", 0))
        atoms += [("N", 1), ("O", -1), ("C", -1), ("N", -1)]
        return cls(atoms=tuple(atoms), kekulize=kekulize, explicit_h=explicit_h)

    @classmethod
    def moses(cls, kekulize: bool = True) -> GraphVocab:
        """MOSES atoms: C, N, O, S, F, Cl, Br (the data has no formal charges)."""
        atoms = (("C", 0), ("N", 0), ("O", 0), ("S", 0), ("F", 0), ("Cl", 0), ("Br", 0))
        return cls(atoms=atoms, kekulize=kekulize, explicit_h=False)


def _as_mol(mol_or_smiles: Chem.Mol | str) -> Chem.Mol:
    if isinstance(mol_or_smiles, str):
        mol = Chem.MolFromSmiles(mol_or_smiles)
        if mol is None:
            raise ValueError(f"cannot parse SMILES {mol_or_smiles!r}")
        return mol
    if isinstance(mol_or_smiles, Chem.Mol):
        return Chem.Mol(mol_or_smiles)
    raise TypeError(f"expected an RDKit Mol or a SMILES str, got {type(mol_or_smiles).__name__}")


def mol_to_graph(mol_or_smiles: Chem.Mol | str, vocab: GraphVocab) -> Graph:
    """Categorical graph of a molecule: atoms (N,) long and bonds (N, N) long, symmetric.

    Raises ValueError for unparseable SMILES, atoms outside ``vocab``, radicals, and bonds other
    than single/double/triple/aromatic (stereo is dropped: the graph has no place for it).
    """
    mol = _as_mol(mol_or_smiles)
    if vocab.explicit_h:
        mol = Chem.AddHs(mol)
    else:
        mol = Chem.RemoveHs(mol)
    if vocab.kekulize:
        try:
            Chem.Kekulize(mol, clearAromaticFlags=True)
        except Chem.KekulizeException as e:
            raise ValueError(f"cannot kekulize molecule {Chem.MolToSmiles(mol)!r}") from e
    n = mol.GetNumAtoms()
    atoms = torch.zeros(n, dtype=torch.long)  # (N,)
    for a in mol.GetAtoms():
        if a.GetNumRadicalElectrons():
            raise ValueError(f"atom {a.GetSymbol()}{a.GetIdx()} is a radical; not representable")
        k = vocab.atom_index(a.GetSymbol(), a.GetFormalCharge())
        if k is None:
            raise ValueError(
                f"atom ({a.GetSymbol()!r}, charge {a.GetFormalCharge()}) is not in the vocabulary"
            )
        atoms[a.GetIdx()] = k
    bonds = torch.zeros(n, n, dtype=torch.long)  # (N, N)
    for b in mol.GetBonds():
        bt = b.GetBondType()
        if bt not in BOND_TYPES[1 : vocab.num_bond_classes]:
            raise ValueError(f"bond type {bt} is not representable (kekulize={vocab.kekulize})")
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        bonds[i, j] = bonds[j, i] = BOND_TYPES.index(bt)
    return atoms, bonds


def _check_graph(atoms: torch.Tensor, bonds: torch.Tensor, vocab: GraphVocab) -> None:
    if atoms.dim() != 1:
        raise ValueError(f"atoms must have shape (N,), got {tuple(atoms.shape)}")
    n = atoms.shape[0]
    if tuple(bonds.shape) != (n, n):
        raise ValueError(f"bonds must have shape (N, N) = ({n}, {n}), got {tuple(bonds.shape)}")
    if n and (int(atoms.min()) < 0 or int(atoms.max()) >= vocab.num_atom_classes):
        raise ValueError(f"atom classes must lie in [0, {vocab.num_atom_classes})")
    if n and (int(bonds.min()) < 0 or int(bonds.max()) >= vocab.num_bond_classes):
        raise ValueError(f"bond classes must lie in [0, {vocab.num_bond_classes})")
    if not torch.equal(bonds, bonds.T):
        raise ValueError("bonds must be a symmetric (N, N) matrix")


def graph_to_mol(
    atoms: torch.Tensor, bonds: torch.Tensor, vocab: GraphVocab, sanitize: bool = True
) -> Chem.Mol | None:
    """RDKit molecule of a graph; None when ``sanitize`` and RDKit rejects it (valence, rings).

    atoms (N,) and bonds (N, N) symmetric; the diagonal is ignored. Hydrogens are filled in by
    RDKit's valence model. With ``sanitize=False`` the raw, unsanitised molecule is returned
    (for repair steps such as :func:`discdiff.chem.metrics.repair_mol`).
    """
    atoms = torch.as_tensor(atoms)
    bonds = torch.as_tensor(bonds)
    _check_graph(atoms, bonds, vocab)
    mol = Chem.RWMol()
    for k in atoms.tolist():
        sym, charge = vocab.atoms[k]
        a = Chem.Atom(sym)
        a.SetFormalCharge(charge)
        mol.AddAtom(a)
    ii, jj = torch.triu_indices(len(atoms), len(atoms), offset=1)
    b = bonds[ii, jj]  # (E,)
    for i, j, t in zip(ii[b > 0].tolist(), jj[b > 0].tolist(), b[b > 0].tolist(), strict=True):
        mol.AddBond(i, j, BOND_TYPES[t])
        if BOND_TYPES[t] == Chem.BondType.AROMATIC:
            mol.GetBondBetweenAtoms(i, j).SetIsAromatic(True)
            mol.GetAtomWithIdx(i).SetIsAromatic(True)
            mol.GetAtomWithIdx(j).SetIsAromatic(True)
    out = mol.GetMol()
    if not sanitize:
        return out
    first = Chem.Mol(out)  # a failed sanitisation leaves its molecule half-changed
    if _sanitized(first):
        return first
    return _with_pyrrole_hydrogens(out)


def _sanitized(mol: Chem.Mol) -> bool:
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # RDKit raises several exception types (valence, kekulize, ...)
        return False
    return True


def _with_pyrrole_hydrogens(mol: Chem.Mol, most: int = 3) -> Chem.Mol | None:
    """The molecule with an H on the fewest aromatic nitrogens that makes it kekulize, or None.

    With an aromatic bond class the graph cannot say whether a neutral aromatic N with two ring
    bonds is pyridine-like (``n``) or pyrrole-like (``[nH]``): hydrogens are implicit and both
    have the same bonds. Only the ring's Kekulé structure decides, so an H goes on as few such
    nitrogens as make it kekulize (in atom order, at most ``most``); it is how the graph is
    read, not a repair: no atom or bond changes.
    """
    from itertools import combinations

    candidates = [
        a.GetIdx()
        for a in mol.GetAtoms()
        if a.GetSymbol() == "N" and a.GetFormalCharge() == 0 and a.GetDegree() == 2
        and all(b.GetBondType() == Chem.BondType.AROMATIC for b in a.GetBonds())
    ]  # fmt: skip
    for k in range(1, min(most, len(candidates)) + 1):
        for chosen in combinations(candidates, k):
            trial = Chem.RWMol(mol)
            for i in chosen:
                trial.GetAtomWithIdx(i).SetNumExplicitHs(1)
            out = trial.GetMol()
            if _sanitized(out):
                return out
    return None


def canonical_smiles(mol_or_smiles: Chem.Mol | str | None, isomeric: bool = False) -> str | None:
    """Canonical SMILES without explicit hydrogens (and without stereo unless ``isomeric``).

    None for None, ``"None"``, empty or unparseable input.
    """
    if mol_or_smiles is None:
        return None
    if isinstance(mol_or_smiles, str):
        if mol_or_smiles in ("", "None"):
            return None
        mol = Chem.MolFromSmiles(mol_or_smiles)
        if mol is None:
            return None
    else:
        mol = mol_or_smiles
    try:
        return Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=isomeric)
    except Exception:
        return None


def graph_to_smiles(atoms: torch.Tensor, bonds: torch.Tensor, vocab: GraphVocab) -> str | None:
    """Canonical SMILES (hydrogens implicit) of a graph, or None when it does not sanitise."""
    mol = graph_to_mol(atoms, bonds, vocab)
    return None if mol is None else canonical_smiles(mol)


def decodes_to(atoms: torch.Tensor, bonds: torch.Tensor, vocab: GraphVocab, smiles: str) -> bool:
    """Whether the graph reads back as the molecule ``smiles`` (its canonical SMILES).

    With an aromatic bond class, an azole's graph cannot say which ring nitrogen carries the H
    (see :func:`graph_to_mol`); a graph that reads back as another tautomer of the same
    molecule (the same standard InChI, whose mobile hydrogens make tautomers one) counts.
    """
    decoded = graph_to_mol(atoms, bonds, vocab)
    if decoded is None:
        return False
    if canonical_smiles(decoded) == canonical_smiles(smiles):
        return True
    if vocab.kekulize:
        return False
    original = Chem.MolFromSmiles(smiles)
    if original is None:
        return False
    return Chem.MolToInchi(decoded) == Chem.MolToInchi(original) != ""


def encode_smiles(
    smiles: Iterable[str], vocab: GraphVocab, check_roundtrip: bool = True
) -> tuple[list[Graph], int]:
    """Graphs of many SMILES, skipping (and counting) the ones that cannot be represented.

    A SMILES is skipped when it does not parse, has atoms/bonds outside ``vocab``, or (with
    ``check_roundtrip``) its graph does not decode back to the same canonical SMILES (e.g. an
    a tautomer that is not the same InChI). Returns (graphs, n_skipped).
    """
    graphs: list[Graph] = []
    skipped = 0
    for s in smiles:
        try:
            atoms, bonds = mol_to_graph(s, vocab)
        except (ValueError, TypeError):
            skipped += 1
            continue
        if check_roundtrip and not decodes_to(atoms, bonds, vocab, s):
            skipped += 1
            continue
        graphs.append((atoms, bonds))
    return graphs, skipped


# ----------------------------------------------------------------------------- dense fields


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
    """Split padded fields atoms (B, N), bonds (B, E), node_mask (B, N) into per-graph pairs.

    Real nodes must come first in each row (as :func:`to_dense_fields` and samplers lay them out).
    """
    if atoms.dim() != 2 or node_mask.shape != atoms.shape:
        raise ValueError(
            f"atoms and node_mask must both be (B, N), got {tuple(atoms.shape)} and "
            f"{tuple(node_mask.shape)}"
        )
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


def contains_scaffold(mol: Chem.Mol, scaffold: Chem.Mol | str) -> bool:
    """Whether ``mol`` contains ``scaffold`` as a substructure, aromatic or not.

    A plain RDKit match misses a scaffold whose atoms became part of an aromatic ring in the
    molecule (an amide C(=O)N inside a pyridone is aromatic there, while the query's atoms are
    aliphatic); so both are also compared in Kekulé form, where bonds are what was generated.
    """
    query = _as_mol(scaffold)
    if mol.HasSubstructMatch(query):
        return True
    kq, km = Chem.Mol(query), Chem.Mol(mol)
    try:
        Chem.Kekulize(kq, clearAromaticFlags=True)
        Chem.Kekulize(km, clearAromaticFlags=True)
    except Chem.KekulizeException:
        return False
    return km.HasSubstructMatch(kq)
