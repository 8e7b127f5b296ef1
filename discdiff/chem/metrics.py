"""Molecule sample metrics: validity, uniqueness, novelty, distribution distances, FCD.

Samples are SMILES strings (``None``, ``""`` and ``"None"`` mean a failed sample, as in DiGress's
sample files) or RDKit molecules, possibly unsanitised (``graph_to_mol(..., sanitize=False)``).

Definitions (they follow DiGress, Vignac et al. 2023, ``src/analysis/rdkit_functions.py``, so
that its published figures can be reproduced from its own sample files):

- ``validity`` (strict): the whole molecule passes RDKit sanitisation as generated. Like DiGress's
  "Validity", disconnected molecules count as valid; the molecule that is then reported (and
  used by every metric below) is its largest fragment.
- ``validity_repaired``: valid after one repair step, DiGress's "relaxed validity": every neutral
  N, O or S whose valence is one above its usual one (3, 2, 2) gets a formal charge of +1
  (ammonium/nitro N+, oxonium O+, sulfonium S+), then sanitisation is retried.
- ``validity_connected``: strictly valid *and* a single fragment (the stricter GDSS/MOSES-style
  reading where a disconnected graph is a failure). ``frac_connected``: connected among valid.
- ``uniqueness``: distinct canonical SMILES / number of valid (repaired) molecules (DiGress
  computes uniqueness over the relaxed-valid list).
- ``novelty``: unique valid molecules whose canonical SMILES is not in the training set /
  number of unique valid molecules.
- ``atom_tv``, ``bond_tv``, ``ring_tv``: total-variation distance (1/2 L1, in [0, 1]) between the
  generated and the reference distributions of heavy-atom types (element + charge), bond types
  (kekulized: single/double/triple) and ring sizes (over all SSSR rings).
- ``fcd``: Frechet ChemNet Distance (optional ``fcd`` package) to the reference SMILES.
- with ``profile=True``: ``aromatic`` (molecules with an aromatic ring), every filter of
  :mod:`discdiff.chem.filters` as ``rate_<name>`` (PAINS, net charge, unstable motifs), the
  means ``qed_mean``, ``sa_mean``, ``mw_mean`` and, with a profiled reference, the
  Wasserstein-1 distances ``qed_w1``, ``sa_w1``, ``mw_w1`` between the two distributions.
  All over the valid molecules (largest fragments).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rdkit import Chem, RDLogger

from discdiff.chem.graph import canonical_smiles

__all__ = [
    "sanitize_or_none",
    "repair_mol",
    "largest_fragment",
    "canonical_set",
    "ReferenceStats",
    "reference_stats",
    "total_variation",
    "wasserstein_1",
    "frechet_chemnet_distance",
    "molecule_metrics",
    "format_metrics_table",
]

RDLogger.DisableLog("rdApp.*")

_USUAL_VALENCE = {7: 3, 8: 2, 16: 2}  # N, O, S: the atoms DiGress's repair may charge +1


def _raw_mol(sample: Chem.Mol | str | None) -> Chem.Mol | None:
    """Unsanitised copy of a sample, or None for a failed / unparseable sample."""
    if sample is None:
        return None
    if isinstance(sample, str):
        s = sample.strip()
        if s in ("", "None"):
            return None
        return Chem.MolFromSmiles(s, sanitize=False)
    if isinstance(sample, Chem.Mol):
        return Chem.Mol(sample)
    raise TypeError(f"a sample must be a SMILES str, an RDKit Mol or None, got {type(sample)}")


def sanitize_or_none(mol: Chem.Mol | None) -> Chem.Mol | None:
    """Sanitised copy of ``mol``, or None when RDKit rejects it (valence, aromaticity, ...)."""
    if mol is None:
        return None
    out = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(out)
    except Exception:  # AtomValenceException, KekulizeException, ... all mean "invalid"
        return None
    return out


def repair_mol(mol: Chem.Mol | None) -> Chem.Mol | None:
    """DiGress-style repair: charge +1 each neutral N/O/S with one bond order too many, sanitise.

    Returns the sanitised repaired molecule, or None when it is still invalid.
    """
    if mol is None:
        return None
    rw = Chem.RWMol(mol)
    rw.UpdatePropertyCache(strict=False)
    for atom in rw.GetAtoms():
        usual = _USUAL_VALENCE.get(atom.GetAtomicNum())
        if usual is None or atom.GetFormalCharge() != 0:
            continue
        valence = sum(b.GetBondTypeAsDouble() for b in atom.GetBonds()) + atom.GetNumExplicitHs()
        if valence == usual + 1:
            atom.SetFormalCharge(1)
    return sanitize_or_none(rw.GetMol())


def largest_fragment(mol: Chem.Mol) -> Chem.Mol:
    """Largest connected fragment (by atom count; first one on ties) of a sanitised molecule,
    itself sanitised (ring information included)."""
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) == 1:
        return mol
    frag = max(frags, key=lambda m: m.GetNumAtoms())
    try:
        Chem.SanitizeMol(frag)
    except Exception:  # a fragment of a valid molecule sanitises; keep rings findable anyway
        Chem.FastFindRings(frag)
    return frag


def canonical_set(smiles: Iterable[str], canonicalize: bool = True) -> set[str]:
    """Set of canonical SMILES (unparseable ones dropped) for novelty look-ups.

    ``canonicalize=False`` takes the strings as they are, which is exact when they were written
    canonical by RDKit (MOSES's own novelty compares with its raw training strings this way) and
    saves parsing millions of molecules.
    """
    if not canonicalize:
        return {s for s in smiles if s}
    out = set()
    for s in smiles:
        c = canonical_smiles(s)
        if c is not None:
            out.add(c)
    return out


# ----------------------------------------------------------------------------- distributions


@dataclass
class ReferenceStats:
    """Counts of heavy-atom types, kekulized bond types and ring sizes over a molecule set."""

    atoms: Counter[str] = field(default_factory=Counter)
    bonds: Counter[str] = field(default_factory=Counter)
    rings: Counter[int] = field(default_factory=Counter)
    smiles: list[str] = field(default_factory=list)
    #: with ``profile``: molecules seen, aromatic ones, filter hits, property values
    profiled: int = 0
    aromatic: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    props: dict[str, list[float]] = field(default_factory=dict)

    def add(self, mol: Chem.Mol, profile: bool = False) -> None:
        """Add one sanitised molecule (``profile``: also its aromaticity, filters, QED/SA/MW)."""
        if profile:
            self._profile(mol)
        m = Chem.RemoveHs(mol, sanitize=False)
        for a in m.GetAtoms():
            q = a.GetFormalCharge()
            self.atoms[a.GetSymbol() + (f"{q:+d}" if q else "")] += 1
        k = Chem.Mol(m)
        try:
            Chem.Kekulize(k, clearAromaticFlags=True)
        except Exception:
            k = m  # keep aromatic labels if it cannot be kekulized (should not happen once valid)
        for b in k.GetBonds():
            self.bonds[str(b.GetBondType())] += 1
        for ring in Chem.GetSymmSSSR(m):  # computed here: RemoveHs/GetMolFrags drop ring info
            self.rings[len(ring)] += 1

    def _profile(self, mol: Chem.Mol) -> None:
        from discdiff.chem.filters import flag_molecule
        from discdiff.chem.properties import mol_properties

        self.profiled += 1
        self.aromatic += any(a.GetIsAromatic() for a in mol.GetAtoms())
        self.flags.update(k for k, v in flag_molecule(mol).items() if v)
        for name, v in zip(_PROFILE_PROPS, mol_properties(mol, _PROFILE_PROPS), strict=True):
            self.props.setdefault(name, []).append(v)

    def profile_metrics(self, reference: ReferenceStats | None = None) -> dict[str, float]:
        """Aromatic share, filter rates, property means (and W1 distances to ``reference``)."""
        from discdiff.chem.filters import FILTERS

        n = max(self.profiled, 1)
        out = {"aromatic": self.aromatic / n}
        out.update({f"rate_{k}": self.flags[k] / n for k in FILTERS})
        for name in _PROFILE_PROPS:
            v = [x for x in self.props.get(name, []) if math.isfinite(x)]
            out[f"{name}_mean"] = sum(v) / len(v) if v else math.nan
            if reference is not None and reference.profiled:
                r = [x for x in reference.props.get(name, []) if math.isfinite(x)]
                out[f"{name}_w1"] = wasserstein_1(v, r)
        return out


_PROFILE_PROPS = ("qed", "sa", "mw")


def wasserstein_1(a: Sequence[float], b: Sequence[float]) -> float:
    """Wasserstein-1 distance between two empirical distributions (the area between CDFs)."""
    if not a or not b:
        return math.nan
    xs, ys = sorted(a), sorted(b)
    pts = sorted(set(xs) | set(ys))
    i = j = 0
    total = 0.0
    for lo, hi in zip(pts, pts[1:], strict=False):
        while i < len(xs) and xs[i] <= lo:
            i += 1
        while j < len(ys) and ys[j] <= lo:
            j += 1
        total += abs(i / len(xs) - j / len(ys)) * (hi - lo)
    return total


def reference_stats(smiles: Iterable[str], profile: bool = False) -> ReferenceStats:
    """Distribution counts of a reference set (e.g. the test split); invalid SMILES skipped.
    ``profile``: also aromaticity, filters and QED/SA/MW (for ``molecule_metrics(profile=)``)."""
    stats = ReferenceStats()
    for s in smiles:
        mol = sanitize_or_none(_raw_mol(s))
        if mol is not None:
            stats.add(mol, profile)
            stats.smiles.append(s)
    if not stats.smiles:
        raise ValueError("reference_stats needs at least one valid SMILES")
    return stats


def total_variation(p: Mapping[Any, float], q: Mapping[Any, float]) -> float:
    """Total-variation distance 1/2 sum |p - q| between two count/probability tables.

    Each table is normalised first; an empty table against a non-empty one gives 1.
    """
    sp, sq = float(sum(p.values())), float(sum(q.values()))
    if sp == 0 and sq == 0:
        return 0.0
    if sp == 0 or sq == 0:
        return 1.0
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in keys)


def frechet_chemnet_distance(smiles: Sequence[str], reference: Sequence[str]) -> float:
    """FCD between two SMILES sets with ChemNet from the optional ``fcd`` package (1.2.2).

    The ``fcd`` wheel ships its ChemNet weights, so nothing is downloaded at run time.
    """
    try:
        import fcd  # optional dependency
    except ImportError as e:
        raise ImportError(
            "FCD needs the optional package `fcd` (pip install 'fcd==1.2.2'); it ships ChemNet"
        ) from e
    if len(smiles) < 2 or len(reference) < 2:
        raise ValueError("FCD needs at least two SMILES on each side")
    return float(fcd.get_fcd(list(smiles), list(reference), device="cpu"))


# ----------------------------------------------------------------------------- main entry


def molecule_metrics(
    samples: Sequence[Chem.Mol | str | None],
    train: set[str] | Iterable[str] | None = None,
    reference: ReferenceStats | Iterable[str] | None = None,
    fcd: bool = False,
    profile: bool = False,
    whole: set[str] | None = None,
) -> dict[str, float]:
    """All metrics of a list of generated molecules as a dict of floats (see module docstring).

    ``train``: training SMILES or an already built :func:`canonical_set` (needed for novelty).
    ``whole``: the canonical set of the whole data set (all splits): ``novelty_whole``.
    ``reference``: SMILES or :func:`reference_stats` (needed for the TV distances and FCD).
    ``fcd=True`` adds FCD (optional ``fcd`` package). Keys whose inputs are missing are left out.
    """
    n = len(samples)
    if n == 0:
        raise ValueError("molecule_metrics needs at least one sample")
    n_valid = n_repaired = n_connected = 0
    valid_smiles: list[str] = []  # canonical largest fragment of each repaired-valid sample
    gen = ReferenceStats()
    for sample in samples:
        raw = _raw_mol(sample)
        mol = sanitize_or_none(raw)
        if mol is not None:
            n_valid += 1
            n_connected += len(Chem.GetMolFrags(mol)) == 1
        else:
            mol = repair_mol(raw)
        if mol is None:
            continue
        n_repaired += 1
        frag = largest_fragment(mol)
        smi = canonical_smiles(frag)
        if smi is None:
            continue
        valid_smiles.append(smi)
        gen.add(frag, profile)
    unique = set(valid_smiles)
    out: dict[str, float] = {
        "num_samples": float(n),
        "validity": n_valid / n,
        "validity_repaired": n_repaired / n,
        "validity_connected": n_connected / n,
        "frac_connected": n_connected / n_valid if n_valid else 0.0,
        "uniqueness": len(unique) / len(valid_smiles) if valid_smiles else 0.0,
    }
    if train is not None:
        train_set = train if isinstance(train, set) else canonical_set(train)
        out["novelty"] = len(unique - train_set) / len(unique) if unique else 0.0
    if whole is not None:
        out["novelty_whole"] = len(unique - whole) / len(unique) if unique else 0.0
    ref = None
    if reference is not None:
        ref = reference if isinstance(reference, ReferenceStats) else reference_stats(reference)
        out["atom_tv"] = total_variation(gen.atoms, ref.atoms)
        out["bond_tv"] = total_variation(gen.bonds, ref.bonds)
        out["ring_tv"] = total_variation(gen.rings, ref.rings)
        if fcd:
            out["fcd"] = frechet_chemnet_distance(valid_smiles, ref.smiles)
    elif fcd:
        raise ValueError("fcd=True needs reference SMILES")
    if profile:
        out.update(gen.profile_metrics(ref))
    return out


_PERCENT = {
    "validity",
    "validity_repaired",
    "validity_connected",
    "frac_connected",
    "uniqueness",
    "novelty",
    "novelty_whole",
    "aromatic",
}


def format_metrics_table(
    rows: Mapping[str, Mapping[str, float | str | None]],
    columns: Sequence[str] | None = None,
    percent: Iterable[str] = (),
) -> str:
    """Fixed-width text table, one row per named metrics dict; fractions shown as percentages.

    The fraction metrics of :func:`molecule_metrics` and the keys in ``percent`` print as
    percentages; missing or None values print as ``-``; strings print as they are.
    """
    pct = _PERCENT | set(percent)
    if columns is None:
        columns = []
        for r in rows.values():
            columns += [k for k in r if k not in columns]
    header = ["", *columns]
    body = []
    for name, r in rows.items():
        cells = [name]
        for c in columns:
            v = r.get(c)
            if v is None:
                cells.append("-")
            elif isinstance(v, str):
                cells.append(v)
            elif c == "num_samples":
                cells.append(f"{int(v)}")
            elif c in pct or c.startswith("rate_"):
                cells.append(f"{100 * v:.2f}")
            else:
                cells.append(f"{v:.4f}")
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(b) for b in body)])


#: how far a healthy model's samples may be from its training data before the gauge warns:
#: the shipped QM9 model (430k parameters) gives atom / bond / ring TV 0.013 / 0.009 / 0.022 on
#: 10,000 samples and a first-draw pass rate about 93%; an untrained or briefly trained model
#: is an order of magnitude further (tests/test_gauge.py)
GAUGE_LIMITS: dict[str, float] = {
    "atom_tv": 0.08, "bond_tv": 0.08, "ring_tv": 0.15, "qed_w1": 0.04, "sa_w1": 0.5,
    "mw_w1": 6.0,
}  # fmt: skip
#: training molecules the gauge compares with (a fixed, evenly spread subset)
GAUGE_REFERENCE = 2000
#: molecules (reference, and valid samples) whose QED, SA and MW the gauge compares: SA costs
#: about a millisecond a molecule
GAUGE_PROFILED = 500


def gauge_reference(train: Iterable[str], size: int = GAUGE_REFERENCE) -> ReferenceStats:
    """:func:`reference_stats` of an evenly spread, fixed subset of ``train`` (SMILES), the
    first :data:`GAUGE_PROFILED` of them profiled (QED, SA, MW)."""
    pool = sorted(train)
    if not pool:
        raise ValueError("the gauge needs training molecules")
    step = max(1, len(pool) // size)
    chosen = pool[::step][:size]
    stats = reference_stats(chosen[GAUGE_PROFILED:]) if len(chosen) > GAUGE_PROFILED else None
    head = reference_stats(chosen[:GAUGE_PROFILED], profile=True)
    if stats is not None:  # the counts over all of them, the profile over the first ones
        head.atoms.update(stats.atoms)
        head.bonds.update(stats.bonds)
        head.rings.update(stats.rings)
        head.smiles.extend(stats.smiles)
    return head


def gauge_properties(mols: Iterable[Chem.Mol], reference: ReferenceStats) -> dict[str, float]:
    """``qed_w1``, ``sa_w1``, ``mw_w1``: Wasserstein-1 distances between the QED, SA and MW of
    the first :data:`GAUGE_PROFILED` sanitised molecules and the reference's profile."""
    gen = ReferenceStats()
    for i, mol in enumerate(mols):
        if i >= GAUGE_PROFILED:
            break
        gen.add(mol, profile=True)
    if not gen.profiled:
        return {}
    got = gen.profile_metrics(reference)
    return {k: got[k] for k in ("qed_w1", "sa_w1", "mw_w1") if k in got}


def quality_gauge(metrics: Mapping[str, float], pass_rate: float | None = None) -> list[str]:
    """Lines that say at a glance whether samples look like a trained model's: the distances to
    the training data (``atom_tv``, ``bond_tv``, ``ring_tv`` of :func:`molecule_metrics` with a
    reference) and the share of first draws that passed the checks, then one warning line for
    each figure past :data:`GAUGE_LIMITS` (or a pass rate under 50%). Validity, uniqueness and
    novelty cannot show a broken model once guards and rejection act; these can."""
    parts = [f"{k} {metrics[k]:.3f}" for k in GAUGE_LIMITS if k in metrics]
    # (atom, bond and ring-size TV; QED, SA and MW Wasserstein-1 where they were measured)
    if pass_rate is not None:
        parts.append(f"first draws passing the checks {pass_rate:.1%}")
    if not parts:
        return []
    lines = ["gauge (distance to the training data): " + ", ".join(parts)]
    far = [f"{k} {metrics[k]:.3f} > {lim}" for k, lim in GAUGE_LIMITS.items()
           if k in metrics and metrics[k] > lim]  # fmt: skip
    if far:
        lines.append(
            "warning: the samples are far from the training data (" + ", ".join(far) + "): "
            "an under-trained or broken model, whatever validity says"
        )
    if pass_rate is not None and pass_rate < 0.5:
        lines.append(f"warning: only {pass_rate:.1%} of the model's first draws pass the checks")
    return lines
