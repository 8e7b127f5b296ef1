"""Stereochemistry of sampled molecules: a graph has none, so a sample with a stereocentre or a
stereogenic double bond stands for several stereoisomers. :func:`assign_stereo` writes them as a
chemist asks: ``"none"`` (as sampled: no stereo in the files), ``"random"`` (one isomer per
sample, drawn with the run's seed) or ``"enumerate"`` (every isomer, up to
:data:`MAX_ISOMERS` a sample, each its own record ``sample_i.j``), by RDKit's
``EnumerateStereoisomers`` over the unassigned elements only. Metrics (uniqueness, novelty)
stay those of the graphs, which carry no stereo.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from rdkit import Chem
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

from discdiff.chem.export import SampleRecord

__all__ = ["STEREO_MODES", "MAX_ISOMERS", "assign_stereo", "stereoisomers", "unassigned_stereo"]

STEREO_MODES = ("none", "random", "enumerate")
#: most stereoisomers written for one sample with ``"enumerate"``
MAX_ISOMERS = 32


def unassigned_stereo(mol: Chem.Mol) -> int:
    """Stereocentres and stereogenic double bonds of ``mol`` left unassigned."""
    return sum(
        1
        for info in Chem.FindPotentialStereo(mol)
        if info.specified == Chem.StereoSpecified.Unspecified
    )


def stereoisomers(mol: Chem.Mol, limit: int = MAX_ISOMERS) -> list[Chem.Mol]:
    """The stereoisomers of ``mol`` over its unassigned elements (``mol`` itself when it has
    none), at most ``limit``, in RDKit's order."""
    opts = StereoEnumerationOptions(onlyUnassigned=True, unique=True, maxIsomers=limit)
    out = list(EnumerateStereoisomers(mol, options=opts))
    return out or [mol]


def assign_stereo(
    records: Sequence[SampleRecord], mode: str = "none", seed: int = 0
) -> list[SampleRecord]:
    """Records with stereochemistry as ``mode`` asks (see the module docstring); invalid
    records stay as they are. ``"random"`` draws sample i's isomer from a generator seeded by
    (seed, i), so the same seed gives the same files."""
    if mode not in STEREO_MODES:
        raise ValueError(f"stereo must be one of {STEREO_MODES}, got {mode!r}")
    if mode == "none":
        return list(records)
    out: list[SampleRecord] = []
    for rec in records:
        if rec.mol is None or unassigned_stereo(rec.mol) == 0:
            out.append(rec)
            continue
        isomers = stereoisomers(rec.mol)
        if mode == "random":
            pick = random.Random(f"{seed}:{rec.index}").randrange(len(isomers))
            chosen = [(None, isomers[pick])]
        else:
            chosen = list(enumerate(isomers))
        for j, mol in chosen:
            out.append(dataclasses.replace(rec, mol=mol, smiles=Chem.MolToSmiles(mol), isomer=j))
    return out
