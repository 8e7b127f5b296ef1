"""SMILES -> molecule graphs for training: checked one by one, in parallel, cached on disk.

Each molecule is encoded (:func:`discdiff.chem.graph.mol_to_graph`) and decoded back; it is kept
only when the decoded molecule is the same (canonical SMILES), so the model never trains on a
graph that means something else. That check costs three RDKit parses per molecule (about
3-6 ms), an hour and more for MOSES's 1.58M, so :func:`encode_smiles` spreads the work over
processes, shows a bar, and keeps the result under the data cache keyed by everything it
depends on (the SMILES, the vocabulary, max_nodes, the RDKit version): a second run with the
same data reads it back in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from discdiff.chem.graph import GraphVocab

__all__ = ["encode_smiles", "encode_with_reasons"]

Graph = tuple[Tensor, Tensor]

#: below this many SMILES one process does it (starting workers costs seconds)
PARALLEL_FROM = 20_000
_CHUNK = 2_000
_FORMAT = 2  # bump when the encoding or the cache layout changes


def _check_one(smi: str, vocab: GraphVocab, max_nodes: int | None) -> tuple[Graph | None, str]:
    from discdiff.chem.graph import decodes_to, mol_to_graph

    try:
        atoms, bonds = mol_to_graph(smi, vocab)
        if not decodes_to(atoms, bonds, vocab, smi):
            return None, "its graph does not decode to the same molecule"
        if max_nodes and atoms.shape[0] > max_nodes:
            return None, f"{atoms.shape[0]} atoms > max_nodes {max_nodes}"
        if atoms.shape[0] == 0:
            return None, "no atoms"
    except (ValueError, TypeError) as err:
        return None, str(err).splitlines()[0] if str(err) else "does not parse"
    return (atoms, bonds), ""


def encode_with_reasons(
    smiles: Sequence[str], vocab: GraphVocab, max_nodes: int | None = None, show: int = 3
) -> tuple[list[Graph], int, list[str]]:
    """Graphs of ``smiles`` that fit ``vocab`` (and ``max_nodes``), in one process; the number
    skipped and the first ``show`` of them as "line N 'SMILES': reason"."""
    graphs: list[Graph] = []
    skipped, shown = 0, []
    for i, smi in enumerate(smiles, start=1):
        g, reason = _check_one(smi, vocab, max_nodes)
        if g is not None:
            graphs.append(g)
            continue
        skipped += 1
        if len(shown) < show:
            shown.append(f"line {i} {smi!r}: {reason}")
    return graphs, skipped, shown


def _encode_chunk(
    args: tuple[list[str], dict, int | None, int],
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[int, str, str]]]:
    """A worker's share: kept graphs as (atoms (n,), upper-triangle bonds) int8 arrays, and the
    skipped ones as (line, SMILES, reason)."""
    smiles, vocab_dict, max_nodes, first_line = args
    vocab = GraphVocab.from_dict(vocab_dict)
    kept, skipped = [], []
    for k, smi in enumerate(smiles):
        g, reason = _check_one(smi, vocab, max_nodes)
        if g is None:
            skipped.append((first_line + k, smi, reason))
            continue
        atoms, bonds = g
        n = atoms.shape[0]
        iu, ju = torch.triu_indices(n, n, 1)
        kept.append((atoms.numpy().astype(np.int8), bonds[iu, ju].numpy().astype(np.int8)))
    return kept, skipped


def _worker(
    args: tuple[list[str], dict, int | None, int],
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[int, str, str]]]:
    torch.set_num_threads(1)  # one process per core already
    return _encode_chunk(args)


def _graphs(sizes: np.ndarray, atoms: np.ndarray, triu: np.ndarray) -> list[Graph]:
    """Graphs from their concatenated atoms and upper-triangle bonds, one block per graph size
    (a Python loop per graph cost ~0.2 ms: 20 s for 100k). Each graph's tensors are views of
    its size's block."""
    sizes = sizes.astype(np.int64)
    pairs = sizes * (sizes - 1) // 2
    a_start = np.cumsum(sizes) - sizes
    t_start = np.cumsum(pairs) - pairs
    out: list[Graph | None] = [None] * len(sizes)
    for n in np.unique(sizes).tolist():
        idx = np.nonzero(sizes == n)[0]
        block_a = atoms[a_start[idx, None] + np.arange(n)[None]].astype(np.int64)  # (M, n)
        e = n * (n - 1) // 2
        block_t = triu[t_start[idx, None] + np.arange(e)[None]].astype(np.int64)  # (M, E)
        dense = np.zeros((len(idx), n, n), dtype=np.int64)
        iu, ju = np.triu_indices(n, 1)  # row-major, as torch.triu_indices
        dense[:, iu, ju] = block_t
        dense[:, ju, iu] = block_t
        a_t, b_t = torch.from_numpy(block_a), torch.from_numpy(dense)
        for j, g in enumerate(idx.tolist()):
            out[g] = (a_t[j], b_t[j])
    return out  # type: ignore[return-value]


def _flat(kept: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    empty = np.zeros(0, dtype=np.int8)
    return {
        "sizes": np.array([a.shape[0] for a, _ in kept], dtype=np.int32),
        "atoms": np.concatenate([a for a, _ in kept]) if kept else empty,
        "triu": np.concatenate([t for _, t in kept]) if kept else empty,
    }


def _cache_key(smiles: Sequence[str], vocab: GraphVocab, max_nodes: int | None) -> str:
    from rdkit import __version__ as rdkit_version

    from discdiff.version import __version__

    head = json.dumps(
        [_FORMAT, __version__, rdkit_version, vocab.to_dict(), max_nodes], sort_keys=True
    )
    h = hashlib.sha256(head.encode())
    for s in smiles:
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def _load_cache(path: Path, show: int) -> tuple[list[Graph], int, list[str]] | None:
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {})["skipped"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None  # unreadable or from elsewhere: encode again
    sizes = arrays["sizes"].astype(np.int64)
    atoms, triu = arrays["atoms"], arrays["triu"]
    if sizes.sum() != atoms.shape[0] or (sizes * (sizes - 1) // 2).sum() != triu.shape[0]:
        return None
    graphs = _graphs(sizes, atoms, triu)
    return graphs, int(meta["count"]), list(meta["shown"])[:show]


def _save_cache(path: Path, kept: list[tuple[np.ndarray, np.ndarray]], skipped: int,
                shown: list[str]) -> None:  # fmt: skip
    from safetensors.numpy import save_file

    from discdiff.files import atomic_path, usual_permissions

    arrays = _flat(kept)
    meta = {"skipped": json.dumps({"count": skipped, "shown": shown})}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(arrays, str(tmp), metadata=meta)
        usual_permissions(path)
    except OSError:
        pass  # a read-only cache: the graphs are still right, only not kept


def encode_smiles(
    smiles: Sequence[str],
    vocab: GraphVocab,
    max_nodes: int | None = None,
    *,
    show: int = 3,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    cache: Path | None | bool = None,
) -> tuple[list[Graph], int, list[str]]:
    """:func:`encode_with_reasons` for a training set: ``workers`` processes when there are
    at least 20,000 SMILES, ``progress(done, total)`` after each chunk, and the result kept
    under ``cache`` (None: the data cache, ``graphs/<key>.safetensors``; False: no cache).
    The graphs, the skipped count and the first ``show`` skipped lines are the same as
    :func:`encode_with_reasons`'s, in the same order, whichever path made them."""
    smiles = list(smiles)
    path = None
    if cache is not False:
        from discdiff.datasets._fetch import cache_dir

        root = cache if isinstance(cache, Path) else cache_dir()
        path = root / "graphs" / f"{_cache_key(smiles, vocab, max_nodes)}.safetensors"
        if path.is_file():
            hit = _load_cache(path, show)
            if hit is not None:
                if progress is not None:
                    progress(len(smiles), len(smiles))
                return hit
    chunks = [
        (smiles[i : i + _CHUNK], vocab.to_dict(), max_nodes, i + 1)
        for i in range(0, len(smiles), _CHUNK)
    ]
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    skipped: list[tuple[int, str, str]] = []
    done = 0
    if workers > 1 and len(smiles) >= PARALLEL_FROM:
        # spawn, not fork: the parent's OpenMP threads must not be copied into the workers
        with ProcessPoolExecutor(min(workers, os.cpu_count() or 1), get_context("spawn")) as ex:
            results = ex.map(_worker, chunks)
            for chunk, (k, s) in zip(chunks, results, strict=True):
                kept += k
                skipped += s
                done += len(chunk[0])
                if progress is not None:
                    progress(done, len(smiles))
    else:
        for chunk in chunks:
            k, s = _encode_chunk(chunk)
            kept += k
            skipped += s
            done += len(chunk[0])
            if progress is not None:
                progress(done, len(smiles))
    shown = [f"line {i} {smi!r}: {reason}" for i, smi, reason in skipped[:show]]
    if path is not None:
        _save_cache(path, kept, len(skipped), [
            f"line {i} {smi!r}: {reason}" for i, smi, reason in skipped[:10]
        ])  # fmt: skip
    flat = _flat(kept)
    return _graphs(flat["sizes"], flat["atoms"], flat["triu"]), len(skipped), shown
