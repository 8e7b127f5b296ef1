"""RDKit molecules <-> categorical graphs (their dense, batched form: :mod:`discdiff.chem.dense`).

A molecule with N atoms is two categorical arrays: ``atoms`` (N,) with atom classes from a
:class:`GraphVocab` (element + formal charge) and ``bonds`` (N, N), symmetric, zero diagonal,
with bond classes 0 = no bond, 1 = single, 2 = double, 3 = triple and, only when the vocabulary
does not kekulize, 4 = aromatic. Hydrogens are implicit (RDKit recomputes them from valence when
the graph is turned back into a molecule) unless ``explicit_h`` makes them nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from rdkit import Chem, RDLogger

from discdiff.chem.dense import (  # re-exported: they were defined here
    Graph,
    dense_fields_to_graphs,
    dense_to_triu,
    from_pyg_batch,
    node_count_histogram,
    num_edges,
    sample_node_counts,
    to_dense_fields,
    to_pyg,
    triu_to_dense,
)

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
    if not vocab.kekulize and any(b.GetIsAromatic() for b in out.GetBonds()):
        out = _read_ring_hydrogens(out)
    if not sanitize:
        return out
    return out if _sanitized(out) else None


def _sanitized(mol: Chem.Mol) -> bool:
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # RDKit raises several exception types (valence, kekulize, ...)
        return False
    return True


def _read_ring_hydrogens(mol: Chem.Mol, most: int = 3) -> Chem.Mol:
    """The unsanitised molecule with an H on the fewest aromatic nitrogens that make it
    kekulize (``mol`` itself when none is needed or none helps).

    With an aromatic bond class the graph cannot say whether a neutral aromatic N with two ring
    bonds is pyridine-like (``n``) or pyrrole-like (``[nH]``): hydrogens are implicit and both
    have the same bonds. Only the ring's Kekulé structure decides, so an H goes on as few such
    nitrogens as make it kekulize (in atom order, at most ``most``); it is how the graph is
    read, not a repair: no atom or bond changes. Done before sanitising, so that every
    consumer (metrics, repair, files) reads the graph the same way.
    """
    from itertools import combinations

    if _sanitized(Chem.Mol(mol)):  # a copy: a failed sanitisation leaves it half-changed
        return mol
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
            if _sanitized(Chem.Mol(out)):
                return out
    return mol


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
