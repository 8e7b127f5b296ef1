"""Molecule data for the molecule task: padded graph datasets, SMILES sources, and the
preparation of a training run from SMILES (vocabulary, graphs, priors, held-out split).

What ``discdiff molecules train`` does before training, as a library call
(:func:`prepare_molecule_data`), so that the command line stays a thin layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from discdiff.chem.graph import GraphVocab, to_dense_fields
from discdiff.files import save_tensors, usual_permissions
from discdiff.tasks.molecules.encoding import encode_smiles, encode_with_reasons

__all__ = [
    "GraphDataset",
    "load_training_smiles",
    "PreparedData",
    "prepare_molecule_data",
    "cached_canonical_set",
    "encode_smiles",
    "encode_with_reasons",
    "novelty_sets",
    "reference_smiles",
]

Graph = tuple[Tensor, Tensor]


class GraphDataset(torch.utils.data.Dataset):
    """Map-style dataset of padded molecule graphs; items are dicts the default collate stacks.

    Holds atoms (M, N), bonds (M, E), node_mask (M, N), edge_mask (M, E) for M molecules
    (stored once, padded to ``max_nodes``), so batching costs no Python work per graph, and
    optionally ``props`` (M, P) float property values (NaN: not computable) for conditioning.
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
        if "props" in fields:
            props = fields["props"].float()
            if props.dim() != 2 or props.shape[0] != len(self):
                raise ValueError(f"props must be ({len(self)}, P), got {tuple(props.shape)}")
            self.fields["props"] = props

    def with_properties(self, props: Tensor) -> GraphDataset:
        """The same graphs with property values (M, P) attached."""
        return GraphDataset({**self.fields, "props": props})

    @classmethod
    def from_graphs(cls, graphs: Sequence[Graph], max_nodes: int) -> GraphDataset:
        """Pad (atoms (n,), bonds (n, n)) graphs to ``max_nodes``."""
        return cls(to_dense_fields(graphs, max_nodes))

    def __len__(self) -> int:
        return int(self.fields["atoms"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.fields.items()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fields as safetensors (uint8 ids and masks, float32 properties)."""
        out = {
            k: (v.float() if k == "props" else v.to(torch.uint8)).contiguous()
            for k, v in self.fields.items()
        }
        save_tensors(out, path)
        usual_permissions(path)

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
    """What :func:`prepare_molecule_data` returns: vocabulary, graphs of both splits, and what
    was skipped (count, and the first few lines with the reason)."""

    vocab: GraphVocab
    graphs: list[Graph]
    val_graphs: list[Graph]
    skipped: int
    dataset: str
    skipped_examples: list[str] = field(default_factory=list)
    held_out_from_file: bool = False
    #: the padded graph size: max_nodes if given, else the largest graph of either split
    max_nodes: int = 0

    def report(self) -> str:
        """One line for the log: counts, the first skipped lines, a file's vocabulary."""
        line = f"{len(self.graphs)} training graphs ({self.skipped} skipped"
        if self.skipped_examples:
            line += ": " + "; ".join(self.skipped_examples)
            if self.skipped > len(self.skipped_examples):
                line += "; ..."
        line += f"), {len(self.val_graphs)} held out"
        if self.held_out_from_file:
            atoms = ", ".join(f"{e}{'+' * c if c > 0 else '-' * -c}" for e, c in self.vocab.atoms)
            line += f"; vocabulary from the file: {atoms}"
        return line


def _read(source: str, max_train: int | None, split: str) -> list[str]:
    smiles = load_training_smiles(source, split)
    if not smiles:
        raise ValueError(f"--data {source!r} holds no SMILES")
    return smiles[:max_train] if max_train else smiles


def prepare_molecule_data(
    source: str,
    *,
    max_train: int | None = None,
    max_nodes: int | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    cache: Path | None | bool = None,
    aromatic: bool = False,
    pad_to: int | None = None,
) -> PreparedData:
    """Read ``source`` ("qm9", "moses" or a SMILES/CSV file), pick its vocabulary (QM9's,
    MOSES's, or the file's own elements and charges, stated in the report) and encode both
    splits as graphs.

    Graphs with more than ``max_nodes`` atoms or outside the vocabulary are skipped (counted,
    the first few named). The held-out graphs are the data set's validation split (qm9, moses);
    for a file, a seeded tenth of its molecules (at most 500, at least 1) taken out of training.
    The training SMILES are encoded by :func:`encode_smiles` (``workers`` processes,
    ``progress(done, total)``, the result cached under ``cache``; False: not cached).
    ``aromatic``: aromatic bonds as a class of their own (DiGress's bonds) instead of kekulized.
    The graphs are padded to the largest one kept (``max_nodes`` only filters: a limit far above
    the data costs nothing), or to ``pad_to`` (a model to fine-tune fixes its own size).
    """
    fixed = {"qm9": GraphVocab.qm9, "moses": GraphVocab.moses}.get(source)
    smiles = _read(source, max_train, "train")
    kekulize = not aromatic
    if fixed is not None:
        voc = fixed(kekulize=kekulize)
    else:
        voc = GraphVocab.from_smiles(smiles, kekulize=kekulize)
    graphs, skipped, shown = encode_smiles(
        smiles, voc, max_nodes, workers=workers, progress=progress, cache=cache
    )
    if not graphs:
        raise ValueError(f"no molecule of --data {source!r} fits the vocabulary and max_nodes")
    limit = max_nodes or max(int(a.shape[0]) for a, _ in graphs)
    if fixed is not None:
        val_graphs, _, _ = encode_smiles(_read(source, 2000, "val"), voc, limit, cache=cache)
        name = source
    else:
        n_val = max(1, min(500, len(graphs) // 10)) if len(graphs) > 1 else 0
        order = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(seed))
        held = set(order[:n_val].tolist())
        val_graphs = [g for i, g in enumerate(graphs) if i in held]
        graphs = [g for i, g in enumerate(graphs) if i not in held]
        if not graphs:
            graphs = val_graphs
        name = str(Path(source).resolve())
    top = max(int(a.shape[0]) for a, _ in graphs + val_graphs)
    if pad_to is not None and pad_to < top:
        raise ValueError(f"graphs of {top} atoms do not fit the padded size {pad_to}")
    return PreparedData(voc, graphs, val_graphs, skipped, name, shown, fixed is None, pad_to or top)


def cached_canonical_set(smiles: Sequence[str], cache: Path | None = None) -> set[str]:
    """:func:`discdiff.chem.metrics.canonical_set` of ``smiles``, kept on disk under the data
    cache (``canonical/<sha256>.txt``, keyed by the SMILES and the RDKit version) so that a
    second call reads 100k lines instead of parsing 100k molecules."""
    import hashlib

    from rdkit import __version__ as rdkit_version

    from discdiff.chem.metrics import canonical_set
    from discdiff.datasets._fetch import cache_dir
    from discdiff.files import atomic_path

    h = hashlib.sha256(f"rdkit {rdkit_version}\n".encode())
    for s in smiles:
        h.update(s.encode())
        h.update(b"\n")
    folder = (cache if cache is not None else cache_dir()) / "canonical"
    path = folder / f"{h.hexdigest()[:32]}.txt"
    if path.is_file():
        try:
            return set(path.read_text(encoding="utf-8").split("\n")) - {""}
        except (OSError, UnicodeDecodeError):
            pass  # unreadable: rebuild it
    out = canonical_set(smiles)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(sorted(out)) + "\n", encoding="utf-8")
    except OSError:
        pass  # a read-only cache: the set is still right, only not kept
    return out


_SPLITS = {"qm9": ("train", "val", "test"), "moses": ("train", "test", "test_scaffolds")}
#: the canonical QM9 sets, shipped beside the QM9 checkpoint so that novelty needs no download
QM9_SETS = Path(__file__).resolve().parents[2] / "assets" / "qm9_canonical.txt.gz"


def _rdkit_header() -> str:
    from rdkit import __version__ as rdkit_version

    return f"# canonical QM9 (discdiff split, seed 0), rdkit {rdkit_version}"


def write_qm9_sets(path: Path = QM9_SETS) -> None:
    """Write the canonical QM9 training set and the rest of QM9 as ``train``/``other`` lines
    (gzip), headed by the RDKit version that canonicalised them."""
    import gzip

    from discdiff.datasets.qm9 import load_qm9
    from discdiff.files import atomic_path

    train = cached_canonical_set(load_qm9("train"))
    other = set()
    for split in ("val", "test"):
        other |= cached_canonical_set(load_qm9(split))
    lines = [_rdkit_header()]
    lines += [f"train\t{s}" for s in sorted(train)]
    lines += [f"other\t{s}" for s in sorted(other - train)]
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


def shipped_qm9_sets(path: Path = QM9_SETS) -> tuple[set[str], set[str]] | None:
    """(train, whole) canonical QM9 sets from the shipped file, or None when it is missing or
    was canonicalised by another RDKit version (whose SMILES may differ)."""
    import gzip

    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None
    header, _, body = text.partition("\n")
    if header != _rdkit_header():
        return None
    train, whole = set(), set()
    for line in body.splitlines():
        tag, _, smi = line.partition("\t")
        whole.add(smi)
        if tag == "train":
            train.add(smi)
    return train, whole


def novelty_sets(dataset: str | None) -> tuple[set[str] | None, set[str] | None, str | None]:
    """(canonical training set, canonical whole data set, why missing) for a task's dataset.

    qm9 / moses are fetched when the cache lacks them (package registries only); a failure is
    returned as one line, never raised. A SMILES file is both sets (it was the training data).
    """
    if dataset is None:
        return None, None, "the model names no training data set"
    from discdiff.chem.metrics import canonical_set

    if dataset == "qm9" and (sets := shipped_qm9_sets()) is not None:
        return sets[0], sets[1], None
    try:
        if dataset in _SPLITS:
            if dataset == "qm9":
                from discdiff.datasets.qm9 import load_qm9 as load
            else:
                from discdiff.datasets.moses import load_moses as load
            parts = {split: load(split) for split in _SPLITS[dataset]}
            # MOSES's 1.9M strings are RDKit-canonical already (MOSES's own novelty compares
            # them raw): no parse; QM9's are not, so their canonical sets are cached on disk.
            canon = (
                cached_canonical_set
                if dataset == "qm9"
                else lambda smi: canonical_set(smi, canonicalize=False)
            )
            train = canon(parts["train"])
            whole = set(train)
            for split, smi in parts.items():
                if split != "train":
                    whole |= canon(smi)
            return train, whole, None
        if Path(dataset).is_file():
            from discdiff.datasets.smiles import read_smiles_file

            train = cached_canonical_set(read_smiles_file(dataset))
            return train, train, None
        return None, None, f"the training file {dataset!r} is gone"
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, None, f"cannot load {dataset!r} ({first})"


def reference_smiles(dataset: str | None, limit: int = 10_000, seed: int = 0) -> list[str]:
    """Held-out SMILES to compare samples with (FCD, distribution distances): QM9's test split,
    a seeded ``limit`` of MOSES's test split, or a SMILES file (its first ``limit``)."""
    import random

    if dataset == "qm9":
        from discdiff.datasets.qm9 import load_qm9

        smi = load_qm9("test")
    elif dataset == "moses":
        from discdiff.datasets.moses import load_moses

        smi = load_moses("test")
    elif dataset is not None and Path(dataset).is_file():
        from discdiff.datasets.smiles import read_smiles_file

        return read_smiles_file(dataset)[:limit]
    else:
        raise ValueError(f"no reference molecules for the data set {dataset!r}")
    return smi if len(smi) <= limit else random.Random(seed).sample(smi, limit)
