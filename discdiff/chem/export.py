"""Sampled molecules as records and files a chemist can use (.smi, .sdf, .csv, a PNG grid).

:func:`decode_samples` turns raw (unsanitised) sampled molecules into :class:`SampleRecord` s
that say what happened to each: ``strict`` (valid as generated), ``repaired`` (valid only after
the valence repair of :func:`~discdiff.chem.metrics.repair_mol`), ``fragments_dropped`` (the
largest fragment was kept), or invalid. ``repair=False`` keeps only what the model made (no
repair, no fragment dropped: a disconnected sample stays whole, dot-separated).

:func:`write_molecules` writes them by extension:

- ``.smi``: ``SMILES<TAB>sample_i<TAB>status``; invalid samples are left out (counted) unless
  ``keep_invalid``, which writes the raw graph's SMILES with status ``invalid``;
- ``.sdf``: one record per valid sample, with SMILES, status, QED, logP, MW and the filter
  flags as properties (an invalid sample has no molecule to write: it is left out and counted,
  never an empty record that tools would read as a molecule); ``hydrogens`` writes
  explicit H, ``conformers`` ETKDG 3-D coordinates optimised with MMFF (implies hydrogens;
  a molecule that cannot be embedded keeps 2-D coordinates and says so in ``conformer``);
- ``.csv``: a row per sample with the same columns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rdkit import Chem

from discdiff.chem.graph import canonical_smiles
from discdiff.chem.metrics import largest_fragment, repair_mol, sanitize_or_none

__all__ = ["SampleRecord", "decode_samples", "write_molecules", "write_grid", "STATUS"]

STATUS = ("strict", "repaired", "fragments_dropped", "repaired+fragments_dropped", "invalid")
_PROPS = ("qed", "logp", "mw")


@dataclass
class SampleRecord:
    """One sample: ``mol`` (sanitised, None if invalid), its canonical ``smiles``, the ``raw``
    graph molecule and what was done to it."""

    index: int
    raw: Chem.Mol
    mol: Chem.Mol | None
    smiles: str | None
    repaired: bool = False
    fragments_dropped: bool = False
    isomer: int | None = None  # which stereoisomer of the sample (discdiff.chem.stereo)
    _flags: dict[str, bool] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def valid(self) -> bool:
        return self.mol is not None

    @property
    def name(self) -> str:
        """``sample_i``, or ``sample_i.j`` for stereoisomer j of sample i."""
        return f"sample_{self.index}" + ("" if self.isomer is None else f".{self.isomer}")

    @property
    def flags(self) -> dict[str, bool] | None:
        """Every filter's verdict on ``mol`` (:func:`~discdiff.chem.filters.flag_molecule`),
        computed once (files and reports both read it); None when invalid."""
        if self.mol is None:
            return None
        if self._flags is None:
            from discdiff.chem.filters import flag_molecule

            self._flags = flag_molecule(self.mol)
        return self._flags

    @property
    def status(self) -> str:
        if self.mol is None:
            return "invalid"
        parts = [p for p, on in (("repaired", self.repaired), ("fragments_dropped",
                 self.fragments_dropped)) if on]  # fmt: skip
        return "+".join(parts) if parts else "strict"

    def raw_smiles(self) -> str:
        """SMILES of the graph as sampled (unsanitised; what an invalid record shows)."""
        try:
            return Chem.MolToSmiles(self.raw, canonical=False)
        except Exception:  # RDKit cannot always write an unsanitisable graph
            return ""


def decode_samples(raw: Sequence[Chem.Mol], repair: bool = True) -> list[SampleRecord]:
    """Records of raw sampled molecules (see the module docstring for ``repair``)."""
    out = []
    for i, r in enumerate(raw):
        mol, repaired, dropped = sanitize_or_none(r), False, False
        if mol is None and repair:
            mol = repair_mol(r)
            repaired = mol is not None
        if mol is not None and repair:
            frag = largest_fragment(mol)
            dropped = frag.GetNumAtoms() < mol.GetNumAtoms()
            mol = frag
        smi = canonical_smiles(mol) if mol is not None else None
        if smi is None:
            mol = None
        out.append(SampleRecord(i, r, mol, smi, repaired, dropped))
    return out


def _annotations(rec: SampleRecord) -> dict[str, str]:
    from discdiff.chem.filters import FILTERS
    from discdiff.chem.properties import mol_properties

    d = {"smiles": rec.smiles or "", "status": rec.status, "valid": str(int(rec.valid))}
    if rec.mol is None:
        return d | dict.fromkeys(_PROPS, "") | dict.fromkeys(FILTERS, "")
    for k, v in zip(_PROPS, mol_properties(rec.mol, _PROPS), strict=True):
        d[k] = f"{v:.4f}"
    d |= {k: str(int(v)) for k, v in (rec.flags or {}).items()}
    return d


def _embed(mol: Chem.Mol, seed: int) -> tuple[Chem.Mol, str]:
    from rdkit.Chem import AllChem

    m = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(m, params) != 0:
        AllChem.Compute2DCoords(m)
        return m, "failed (2-D)"
    try:
        status = AllChem.MMFFOptimizeMolecule(m, maxIters=500)
    except (ValueError, RuntimeError):
        status = -1
    return m, "etkdg" if status == -1 else "etkdg+mmff"


def write_molecules(
    path: Path,
    records: Sequence[SampleRecord],
    *,
    keep_invalid: bool = False,
    hydrogens: bool = False,
    conformers: bool = False,
    seed: int = 0,
) -> int:
    """Write ``records`` to ``path`` (format by extension, see the module docstring); returns
    the number of records written. The caller makes the write atomic."""
    suffix = path.suffix.lower()
    if suffix == ".smi":
        lines = []
        for r in records:
            if r.valid:
                lines.append(f"{r.smiles}\t{r.name}\t{r.status}\n")
            elif keep_invalid:
                lines.append(f"{r.raw_smiles() or '*'}\t{r.name}\tinvalid\n")
        path.write_text("".join(lines), encoding="utf-8")
        return len(lines)
    if suffix == ".sdf":
        # RDKit's writer swallows a failed write (a full disk gave a 0-byte file and exit 0):
        # it writes to memory, and Python's own write, which raises, puts it on disk
        buffer = io.StringIO()
        written = 0
        with Chem.SDWriter(buffer) as w:
            for r in records:
                if r.mol is None:
                    continue
                m, note = Chem.Mol(r.mol), ""
                if conformers:
                    m, note = _embed(m, seed + r.index)
                elif hydrogens:
                    m = Chem.AddHs(m)
                m.SetProp("_Name", r.name)
                for k, v in _annotations(r).items():
                    m.SetProp(k, v)
                if conformers:
                    m.SetProp("conformer", note)
                w.write(m)
                written += 1
        path.write_text(buffer.getvalue(), encoding="utf-8")
        return written
    with path.open("w", newline="", encoding="utf-8") as f:
        rows = [{"index": str(r.index), "name": r.name, **_annotations(r)} for r in records]
        wr = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["index", "smiles"])
        wr.writeheader()
        wr.writerows(rows)
    return len(records)


def _as_drawn(rec: SampleRecord) -> Chem.Mol:
    """What a grid cell shows: the sanitised molecule, or an invalid sample's graph as sampled
    (unsanitised; a lone ``*`` when it has no atoms): RDKit draws nothing, not even the
    legend, for an empty molecule."""
    if rec.mol is not None:
        return rec.mol
    m = Chem.Mol(rec.raw) if rec.raw is not None else Chem.Mol()
    if m.GetNumAtoms() == 0:
        return Chem.MolFromSmiles("*")
    m.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(m)
    return m


def write_grid(path: Path, records: Sequence[SampleRecord], num: int, per_row: int = 5) -> int:
    """PNG grid of the first ``num`` records; each cell is labelled ``sample_i`` with its
    status; an invalid cell shows the graph as sampled, labelled INVALID. Returns the cells
    drawn."""
    from rdkit.Chem import Draw

    shown = records[:num]
    mols = [_as_drawn(r) for r in shown]
    legends = []
    for r in shown:
        if r.mol is None:
            legends.append(f"{r.name}: INVALID")
        else:
            tag = "" if r.status == "strict" else f" [{r.status}]"
            legends.append(f"{r.name}{tag}: {r.smiles}"[:60])
    size = {"molsPerRow": max(1, min(per_row, len(mols))), "subImgSize": (240, 220)}
    try:
        img = Draw.MolsToGridImage(mols, legends=legends, **size)
    except (ValueError, RuntimeError):  # a graph RDKit cannot lay out: a placeholder atom
        star = Chem.MolFromSmiles("*")
        mols = [m if r.mol is not None else star for m, r in zip(mols, shown, strict=True)]
        img = Draw.MolsToGridImage(mols, legends=legends, **size)
    img.save(str(path))
    return len(shown)
