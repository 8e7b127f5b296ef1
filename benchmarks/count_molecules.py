"""Count a sample file's molecules with RDKit and numpy alone (no discdiff metric code): the
second, independent opinion on the figures the library reports.

    python benchmarks/count_molecules.py SAMPLES [--data qm9|moses] [--json out.json]
        [--bootstrap 50] [--no-reference]

``SAMPLES``: lines ``SMILES<TAB>name<TAB>status`` as ``molecules sample --out X.smi
--keep-invalid`` writes them (a line with status ``invalid`` is a failed sample), or one SMILES
a line with ``None`` for a failed sample (DiGress's files). Every figure has a standard error:
binomial for shares, a bootstrap over the sampled molecules (``--bootstrap`` draws) for the
distances (the reference set is held fixed). Counted:

- valid: RDKit parses and sanitises the line (and it is not marked invalid), of all lines;
  connected: valid and one fragment, of all lines;
- of the valid: aromatic (an aromatic atom after RDKit's perception), unique (the canonical
  SMILES of the largest fragment, stereo dropped: DiGress's definition, and all its files hold),
  and the share with each ring kind (aromatic rings by size; other rings by size and Kekule
  double-bond count);
- novel: of the unique, the share in none of a split's molecules, for every split of the data
  set and for all of them (QM9: canonicalised here from the raw splits; MOSES: its strings
  compared as they are, as MOSES's own novelty does, since they are RDKit-canonical);
- distances to the reference (the QM9 test split; 10,000 MOSES test molecules, seed 0), on the
  largest fragment of each valid molecule: total variation of atom types (symbol + charge),
  Kekule bond types and SSSR ring sizes; Wasserstein-1 of QED, SA (RDKit Contrib's sascorer)
  and molecular weight; and the ring-size shares of both sides.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import QED, Descriptors, RDConfig

_SA = None


def sa_score(mol: Chem.Mol) -> float:
    """Ertl and Schuffenhauer's synthetic accessibility from RDKit's Contrib (1 easy .. 10 hard)."""
    global _SA
    if _SA is None:
        path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
        spec = importlib.util.spec_from_file_location("count_molecules_sascorer", path)
        _SA = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(_SA)  # type: ignore[union-attr]
    return float(_SA.calculateScore(mol))


def read_samples(path: Path) -> list[str | None]:
    """One entry per sample line: its SMILES, or None for a sample marked failed."""
    out: list[str | None] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        smi, *rest = line.split("\t")
        smi = smi.strip()
        out.append(None if smi in ("", "None") or (rest and rest[-1] == "invalid") else smi)
    return out


def canonical(mol: Chem.Mol) -> str:
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def canonical_all(smiles: Iterable[str]) -> set[str]:
    out = set()
    for s in smiles:
        m = Chem.MolFromSmiles(s)
        if m is not None:
            out.add(canonical(m))
    return out


def ring_kinds(mol: Chem.Mol) -> set[str]:
    """The kinds of ring of a sanitised molecule: ``aromatic6``, ``ring6 + 2 C=C``, ..."""
    kinds = set()
    for ring in mol.GetRingInfo().BondRings():
        bonds = [mol.GetBondWithIdx(b) for b in ring]
        if all(b.GetIsAromatic() for b in bonds):
            kinds.add(f"aromatic{len(ring)}")
        else:
            double = sum(b.GetBondType() == Chem.BondType.DOUBLE for b in bonds)
            kinds.add(
                f"ring{len(ring)} + {double} C=C" if double else f"ring{len(ring)}, saturated"
            )
    if any(k.startswith("aromatic") for k in kinds):
        kinds.add("any aromatic ring")
    return kinds


def largest(mol: Chem.Mol) -> Chem.Mol:
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)
    return max(frags, key=lambda f: f.GetNumAtoms())


def composition(mol: Chem.Mol) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(atom types, Kekule bond types, SSSR ring sizes) of one sanitised molecule."""
    atoms = Counter(
        a.GetSymbol() + (f"{a.GetFormalCharge():+d}" if a.GetFormalCharge() else "")
        for a in mol.GetAtoms()
    )
    k = Chem.Mol(mol)
    Chem.Kekulize(k, clearAromaticFlags=True)
    bonds = Counter(str(b.GetBondType()) for b in k.GetBonds())
    rings = Counter(str(len(r)) for r in Chem.GetSymmSSSR(mol))
    return atoms, bonds, rings


def properties(mol: Chem.Mol) -> tuple[float, float, float]:
    return QED.qed(mol), sa_score(mol), Descriptors.MolWt(mol)


PROPS = ("qed", "sa", "mw")
KINDS = ("atom", "bond", "ring")


class Profile:
    """What the distances need of a molecule set: per-molecule count rows and properties."""

    def __init__(self, mols: Sequence[Chem.Mol]) -> None:
        comps = [composition(m) for m in mols]
        self.keys = {k: sorted({key for c in comps for key in c[i]}) for i, k in enumerate(KINDS)}
        self.counts = {
            k: np.array([[c[i][key] for key in self.keys[k]] for c in comps], dtype=np.float64)
            .reshape(len(comps), len(self.keys[k]))
            for i, k in enumerate(KINDS)
        }  # fmt: skip
        self.props = np.array([properties(m) for m in mols], dtype=np.float64).reshape(-1, 3)

    def shares(self, kind: str, keys: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
        """(B, len(keys)) shares of ``kind`` over the molecules ``rows`` (B, n) (all: B = 1)."""
        c = self.counts[kind]
        c = c[None] if rows is None else c[rows]
        col = {k: i for i, k in enumerate(self.keys[kind])}
        out = np.zeros((*c.shape[:1], len(keys)))
        for j, key in enumerate(keys):
            if key in col:
                out[:, j] = c[:, :, col[key]].sum(1)
        return out / np.maximum(out.sum(1, keepdims=True), 1e-300)


def wasserstein_1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two empirical distributions: the area between their CDFs."""
    a, b = np.sort(a[np.isfinite(a)]), np.sort(b[np.isfinite(b)])
    if not len(a) or not len(b):
        return float("nan")
    x = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(a, x[:-1], side="right") / len(a)
    fb = np.searchsorted(b, x[:-1], side="right") / len(b)
    return float(np.sum(np.abs(fa - fb) * np.diff(x)))


def share(k: int, n: int) -> tuple[float, float]:
    """(k / n, its binomial standard error)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    return p, (p * (1 - p) / n) ** 0.5


def distances(
    ours: Profile, ref: Profile, bootstrap: int, seed: int
) -> dict[str, tuple[float, float]]:
    """TV of atom/bond/ring shares and W1 of QED/SA/MW to ``ref``, each with a bootstrap SE."""
    n = len(ours.props)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=(bootstrap, n)) if bootstrap > 1 and n else None
    out = {}
    for kind in KINDS:
        keys = sorted(set(ours.keys[kind]) | set(ref.keys[kind]))
        r = ref.shares(kind, keys)[0]
        tv = 0.5 * float(np.abs(ours.shares(kind, keys)[0] - r).sum())
        se = (
            float(np.std(0.5 * np.abs(ours.shares(kind, keys, rows) - r).sum(1), ddof=1))
            if (rows is not None)
            else float("nan")
        )
        out[f"{kind}_tv"] = (tv, se)
    for j, name in enumerate(PROPS):
        w = wasserstein_1(ours.props[:, j], ref.props[:, j])
        se = float(np.std([wasserstein_1(ours.props[r, j], ref.props[:, j]) for r in rows], ddof=1)
                   ) if rows is not None else float("nan")  # fmt: skip
        out[f"{name}_w1"] = (w, se)
    return out


def ring_sizes(profile: Profile) -> dict[str, float]:
    """Each SSSR ring size's share of all rings."""
    keys = profile.keys["ring"]
    return dict(zip(keys, profile.shares("ring", keys)[0].tolist(), strict=True)) if keys else {}


def count(
    samples: Sequence[str | None],
    splits: dict[str, set[str]] | None = None,
    reference: Profile | None = None,
    bootstrap: int = 50,
    seed: int = 0,
) -> dict[str, object]:
    """Every count of the module docstring for ``samples`` (SMILES or None for a failed one).

    ``splits``: name -> the set of a split's molecules as canonical SMILES (novelty against
    each and, with more than one, against all); ``reference``: the distances' other side.
    Returns ``{metric: (value, standard error)}`` plus ``ring_kinds`` and ``ring_sizes``.
    """
    RDLogger.DisableLog("rdApp.*")
    n = len(samples)
    mols = [m for m in (Chem.MolFromSmiles(s) if s else None for s in samples) if m is not None]
    valid = len(mols)
    out: dict[str, object] = {"samples": n, "valid_molecules": valid}
    out["valid"] = share(valid, n)
    out["connected"] = share(sum(len(Chem.GetMolFrags(m)) == 1 for m in mols), n)
    out["aromatic"] = share(sum(any(a.GetIsAromatic() for a in m.GetAtoms()) for m in mols), valid)
    frags = [largest(m) for m in mols]
    unique = {canonical(m) for m in frags}
    out["unique"] = share(len(unique), valid)
    if splits:
        for name, known in splits.items():
            out[f"novel_vs_{name}"] = share(len(unique - known), len(unique))
        if len(splits) > 1:
            known = set().union(*splits.values())
            out["novel_vs_all"] = share(len(unique - known), len(unique))
    kinds: Counter[str] = Counter()
    for m in mols:
        kinds.update(ring_kinds(m))
    out["ring_kinds"] = {k: share(v, valid) for k, v in sorted(kinds.items())}
    if reference is not None and frags:
        ours = Profile(frags)
        out.update(distances(ours, reference, bootstrap, seed))
        out["ring_sizes"] = ring_sizes(ours)
    return out


def raw_data(data: str) -> tuple[dict[str, list[str]], list[str]]:
    """(split name -> its SMILES as written, the reference SMILES) of ``data`` ("qm9" or
    "moses"): QM9's test split, or 10,000 MOSES test molecules (seed 0)."""
    if data == "qm9":
        from discdiff.datasets.qm9 import load_qm9  # the data only, not the library's metrics

        return {s: load_qm9(s) for s in ("train", "val", "test")}, load_qm9("test")
    if data == "moses":
        from discdiff.datasets.moses import load_moses

        splits = {s: load_moses(s) for s in ("train", "test", "test_scaffolds")}
        return splits, random.Random(0).sample(splits["test"], 10_000)
    raise ValueError(f"unknown data set {data!r}; expected 'qm9' or 'moses'")


def split_sets(data: str, splits: dict[str, list[str]]) -> dict[str, set[str]]:
    """Each split as a set to look samples up in: canonicalised here (QM9), or as written
    (MOSES: its strings are RDKit-canonical, and MOSES's own novelty compares them so)."""
    if data == "moses":
        return {k: set(v) for k, v in splits.items()}
    return {k: canonical_all(v) for k, v in splits.items()}


def reference_profile(smiles: Iterable[str]) -> Profile:
    mols = [m for m in map(Chem.MolFromSmiles, smiles) if m is not None]
    return Profile([largest(m) for m in mols])


def reference_row(profile: Profile, smiles: Sequence[str]) -> dict[str, object]:
    """The reference set's own aromatic share, ring kinds and ring sizes (to compare with)."""
    row = count(list(smiles))
    return {k: row[k] for k in ("samples", "aromatic", "ring_kinds")} | {
        "ring_sizes": ring_sizes(profile)
    }


def summary(out: dict[str, object]) -> str:
    parts = [f"samples {out['samples']}"]
    for k, v in out.items():
        if isinstance(v, tuple):
            parts.append(f"{k} {v[0]:.4f} +- {v[1]:.4f}")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", type=Path)
    p.add_argument("--data", default="qm9", choices=("qm9", "moses"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--bootstrap", type=int, default=50, help="draws for the distances' SE")
    p.add_argument("--no-reference", action="store_true", help="skip novelty and distances")
    args = p.parse_args(argv)
    samples = read_samples(args.samples)
    splits, ref = (None, None) if args.no_reference else raw_data(args.data)
    sets = split_sets(args.data, splits) if splits else None
    out = count(samples, sets, reference_profile(ref) if ref else None, args.bootstrap)
    print(summary(out))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
