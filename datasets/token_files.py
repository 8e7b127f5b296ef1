"""Prepared text: a corpus read as a stream, tokenized once, kept as flat token files.

    DATA_DIR/
      meta.json        format, tokenizer kind, vocabulary size, dtype, end-of-document id,
                       tokens / characters / documents per split, a hash of the source
      tokenizer/       the tokenizer (discdiff.tokenizers format)
      train.bin val.bin test.bin    token ids, flat, the smallest unsigned dtype that holds
                       the vocabulary (uint8 / uint16 / uint32; nanoGPT's train.bin convention)

Reading: ``numpy.memmap``, so memory does not grow with the corpus. Sources: a text file, a
folder of ``*.txt`` (one document per file), JSON lines with a ``text`` field (one document a
line), or the built-in corpora (``shakespeare``, ``shakespeare-text8``, ``text8[:PATH]``). The
splits are cut by character position, 90/5/5 (text8: its standard 90M/5M/5M). Each document
ends with the end-of-document character ``EOD`` (U+001E, one token), not counted as a character.

Preparing reads the source a few times as a stream (count, tokenizer training, encoding) in
blocks of ``block`` characters; the files are written into ``DATA_DIR.tmp-*`` and renamed into
place only when complete, so an interrupted prepare never leaves a folder that looks finished
(the next one removes the leftovers and starts again).

Labelled corpora (``labels="folders"``): a folder with one subfolder of text per class (the
subfolder's name is the label). Each class is cut 90/5/5 on its own, so every split holds every
class, and written class after class: meta.json's ``labels`` names the classes and gives each
split's token range per class, so that a reader knows a token's label without a label per token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from discdiff.files import sha256_file, sha256_tree

__all__ = [
    "EOD",
    "META",
    "FORMAT",
    "is_prepared",
    "prepare_corpus",
    "prepared_cache",
    "tokenizer_settings",
    "TokenFiles",
    "iter_documents",
    "doc_separator",
    "BLANK_LINES",
    "LABELS",
    "label_folders",
]

EOD = "\x1e"
META = "meta.json"
FORMAT = "discdiff-tokens-1"
SPLITS = ("train", "val", "test")
_FRACTIONS = (0.9, 0.05, 0.05)
_BLOCK = 1 << 22  # characters per block read
_PIECE = 1 << 12  # characters per piece of a BPE encoding batch (smaller balances the threads)


def is_prepared(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a finished prepared data dir. A folder that looks like one but whose
    meta.json is damaged, or holds token files without a meta.json, is one ValueError naming
    that (taking it for a corpus folder said "no *.txt files")."""
    folder = Path(path)
    meta = folder / META
    if not meta.is_file():
        if folder.is_dir() and any((folder / f"{s}.bin").is_file() for s in SPLITS):
            raise ValueError(f"{str(folder)!r} holds token files but no {META}: prepare it again")
        return False
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{str(meta)!r} cannot be read ({err}): prepare the data again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{str(meta)!r} was not written by `discdiff text prepare` ({FORMAT})")
    return True


# ---- sources ---------------------------------------------------------------------------------
def builtin_text(spec: str, split: str) -> str | None:
    """One split ("train", "val", "test" or "all") of a built-in corpus (shakespeare, milton,
    their -text8 styles, text8[:PATH]), or None when ``spec`` names none."""
    if spec in ("shakespeare", "shakespeare-text8", "milton", "milton-text8"):
        from discdiff.datasets import shakespeare

        style = "text8" if spec.endswith("-text8") else "raw"
        read = (
            shakespeare.load_milton if spec.startswith("milton") else shakespeare.load_shakespeare
        )
        return read(style, split)
    if spec == "text8" or spec.startswith("text8:"):
        from discdiff.datasets.text8 import load_text8

        return load_text8(spec.partition(":")[2] or None, split)
    return None


def _builtin(spec: str) -> dict[str, str] | None:
    """The three splits of a built-in corpus (bounded in size, so read whole), or None."""
    if not _builtin_name(spec):
        return None
    return {s: builtin_text(spec, s) for s in SPLITS}  # type: ignore[misc]


def _files(spec: str) -> list[Path]:
    root = Path(spec).expanduser()
    if not root.exists():
        raise corpus_not_found(spec)
    if root.is_file():
        return [root]
    if not root.is_dir():  # /dev/null, a FIFO, a device
        raise ValueError(f"corpus {str(root)!r} is neither a regular file nor a folder")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl")),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(f"no *.txt or *.jsonl files under folder {str(root)!r}")
    return files


def _read_blocks(path: Path, block: int) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="strict", newline="") as fh:
        while True:
            try:
                chunk = fh.read(block)
            except UnicodeDecodeError as err:
                raise ValueError(f"cannot decode {str(path)!r} as utf-8: {err.reason}") from None
            if not chunk:
                return
            yield chunk


#: ``doc_sep="blank"``: documents of a text file end at one or more blank lines
BLANK_LINES = "blank"


def doc_separator(doc_sep: str | None) -> re.Pattern[str] | None:
    """The pattern that ends a document inside a text file: None (a file is one document),
    ``"blank"`` (one or more blank lines) or a literal string (``"\\n---\\n"``...)."""
    if doc_sep is None:
        return None
    if not isinstance(doc_sep, str) or not doc_sep:
        raise ValueError(f"doc_sep={doc_sep!r}: expected 'blank' or a non-empty string")
    if doc_sep == BLANK_LINES:
        return re.compile(r"\n(?:[ \t\r]*\n)+")
    return re.compile(re.escape(doc_sep))


def _split_documents(
    chunks: Iterator[str], sep: re.Pattern[str], block: int
) -> Iterator[tuple[str, bool]]:
    """(piece, document ends) of a text cut at ``sep`` (dropped; empty documents skipped). A
    document longer than a few blocks is passed on in pieces cut before a line that starts
    with a visible character, so that no separator straddles two pieces."""
    carry = ""  # after a piece is passed on, it starts with a visible character: not empty
    for chunk in chunks:
        buf, start = carry + chunk, 0
        for m in sep.finditer(buf):
            if m.end() == len(buf):
                break  # a separator at the end may go on in the next block
            if buf[start : m.start()].strip():
                yield buf[start : m.start()], True
            start = m.end()
        carry = buf[start:]
        if len(carry) > 4 * block:  # keep a tail that a separator could start in, whole
            tail = len(carry) - len(sep.pattern)
            lines = (m.start() + 1 for m in re.finditer(r"\n(?=\S)", carry))
            cut = max((p for p in lines if p <= tail), default=0)
            if cut:
                yield carry[:cut], False
                carry = carry[cut:]
    for doc in sep.split(carry):
        if doc.strip():
            yield doc, True


def iter_documents(
    spec: str, block: int = _BLOCK, doc_sep: str | None = None
) -> Iterator[tuple[str, bool]]:
    """(piece, document ends here) pairs of a file / folder / JSON-lines source, in order. A
    text file is one document, or several ended by ``doc_sep`` (:func:`doc_separator`)."""
    sep = doc_separator(doc_sep)
    for path in _files(spec):
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as fh:
                for i, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (ValueError, KeyError, TypeError) as err:
                        raise ValueError(
                            f"{path}:{i}: expected a JSON object with a 'text' field ({err})"
                        ) from None
                    if not isinstance(text, str):
                        raise ValueError(f"{path}:{i}: 'text' must be a string")
                    yield text, True
            continue
        if sep is not None:
            yield from _split_documents(_read_blocks(path, block), sep, block)
            continue
        carry = ""  # blocks end at a line end, so no word is cut in two (BPE merges stay whole)
        for chunk in _read_blocks(path, block):
            text = carry + chunk
            cut = text.rfind("\n") + 1
            if cut == 0:
                carry = text
                continue
            yield text[:cut], False
            carry = text[cut:]
        yield carry, True


def _source_hash(spec: str) -> str:
    digest = hashlib.sha256(f"{FORMAT}|".encode())
    if _builtin_name(spec):
        digest.update(spec.encode())
        return digest.hexdigest()
    root = Path(spec).expanduser()
    for path in _files(spec):
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        with open(path, "rb") as fh:
            for buf in iter(lambda: fh.read(1 << 22), b""):
                digest.update(buf)
    return digest.hexdigest()


BUILTIN_NAMES = ("shakespeare", "shakespeare-text8", "milton", "milton-text8", "text8")


def corpus_not_found(spec: str) -> FileNotFoundError:
    """The error for a corpus that is neither a built-in name nor a file or folder."""
    return FileNotFoundError(
        f"corpus {spec!r} is neither a known name ({', '.join(BUILTIN_NAMES)}[:PATH]) nor an "
        "existing file or folder"
    )


def _builtin_name(spec: str) -> bool:
    return spec in BUILTIN_NAMES or spec.startswith("text8:")


# ---- the streams of one split ------------------------------------------------------------------
#: the ways a corpus can carry labels: None (none) or "folders" (one subfolder per class)
LABELS = ("folders",)


def label_folders(spec: str) -> list[Path]:
    """The class folders of a labelled corpus (its subfolders holding text, sorted by name);
    ValueError when ``spec`` is not a folder of at least two."""
    root = Path(spec).expanduser()
    if _builtin_name(spec) or not root.is_dir():
        raise ValueError(
            f"labels='folders' needs a folder of class subfolders; {spec!r} is not one"
        )
    classes = sorted((p for p in root.iterdir() if p.is_dir() and any(p.rglob("*.txt"))),
                     key=lambda p: p.name)  # fmt: skip
    if len(classes) < 2:
        raise ValueError(
            f"labels='folders': {spec!r} has {len(classes)} subfolder(s) of *.txt files; a "
            "labelled corpus has one per class, two at least"
        )
    return classes


def _split_pieces(
    spec: str, block: int, doc_sep: str | None = None, labels: str | None = None
) -> Callable[[], Iterator[tuple[str, str, bool, int]]]:
    """A re-startable stream of (split, piece, document ends, class) over the whole source
    (class 0 without labels; with labels each class cut into the splits on its own)."""
    if labels is not None:
        if labels not in LABELS:
            raise ValueError(f"labels={labels!r}: expected None or one of {LABELS}")
        streams = [_cut(str(p), block, doc_sep) for p in label_folders(spec)]

        def by_class() -> Iterator[tuple[str, str, bool, int]]:
            for c, stream in enumerate(streams):
                for split, piece, ends, _ in stream():
                    yield split, piece, ends, c

        return by_class
    splits = _builtin(spec)
    if splits is not None:
        if doc_sep is not None:
            raise ValueError(f"doc_sep: the built-in corpus {spec!r} keeps its own documents")

        def builtin() -> Iterator[tuple[str, str, bool, int]]:
            for s in SPLITS:
                text = splits[s]
                for i in range(0, len(text), block):
                    yield s, text[i : i + block], i + block >= len(text), 0

        return builtin
    return _cut(spec, block, doc_sep)


def _cut(
    spec: str, block: int, doc_sep: str | None
) -> Callable[[], Iterator[tuple[str, str, bool, int]]]:
    """The stream of a file / folder source cut 90/5/5 by character position."""
    total = sum(len(p) for p, _ in iter_documents(spec, block, doc_sep))
    if total == 0:
        raise ValueError(f"corpus {spec!r} is empty (0 characters)")
    a = round(total * _FRACTIONS[0])
    b = round(total * (_FRACTIONS[0] + _FRACTIONS[1]))
    cuts = ((0, a, "train"), (a, b, "val"), (b, total, "test"))

    def cut() -> Iterator[tuple[str, str, bool, int]]:
        pos = 0
        for piece, ends in iter_documents(spec, block, doc_sep):
            start, stop = pos, pos + len(piece)
            for lo, hi, name in cuts:
                x, y = max(lo, start), min(hi, stop)
                if x < y:
                    yield name, piece[x - start : y - start], ends and y == stop, 0
            pos = stop

    return cut


def _spans(ranges: dict[int, list[int]], classes: int) -> list[list[int]]:
    """[start, end) tokens of each class in a split, in class order; a class with no text there
    an empty span where it would be (the ends stay sorted, for a reader's binary search)."""
    out, last = [], 0
    for c in range(classes):
        span = ranges.get(c, [last, last])
        out.append(span)
        last = span[1]
    return out


def _dtype(vocab: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"a vocabulary of {vocab} ids does not fit in uint32")


@dataclass
class _SplitStats:
    tokens: int = 0
    chars: int = 0
    documents: int = 0


def prepare_corpus(
    spec: str,
    out: str | os.PathLike[str],
    *,
    tokenizer: Any = "char",
    vocab_size: int = 1024,
    block: int = _BLOCK,
    progress: bool = False,
    bpe_sample: int = 64 << 20,
    doc_sep: str | None = None,
    labels: str | None = None,
) -> dict[str, Any]:
    """Prepare ``spec`` into ``out`` (see the module docstring); returns the meta dict.

    tokenizer: "char" (the characters of the whole corpus, plus EOD), "bpe" (byte-level,
    trained on the first ``bpe_sample`` characters of the training split with the ``tokenizers``
    library, ``vocab_size`` ids: merges learnt on 64M characters barely change with more, and
    the tokenizer's memory and time stay bounded) or the path of a published ``tokenizer.json``
    (:class:`~discdiff.tokenizers.PretrainedTokenizer`: GPT-2's, a masked LM's).
    doc_sep: where a text file's documents end (:func:`doc_separator`; None: a file is one
    document, so a single file has its only end-of-document mark in the test split).
    labels: "folders" for a labelled corpus (one subfolder per class; see the module docstring).
    A finished ``out`` of the same source and settings is reused as it is.
    """
    settings = tokenizer_settings(tokenizer, vocab_size)  # checked before any work
    dest = Path(out)
    source = _source_hash(spec)
    doc_separator(doc_sep)
    if doc_sep is not None:  # absent otherwise: data prepared before the option stay reused
        settings["doc_sep"] = doc_sep
    if labels is not None:
        if labels not in LABELS:
            raise ValueError(f"labels={labels!r}: expected None or one of {LABELS}")
        label_folders(spec)  # checked before any work
        settings["labels"] = labels
    if _intact(dest, clear=True):
        return _reuse(dest, source, settings)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"--out {str(dest)!r} exists and is not a prepared data dir")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):  # one preparer per data dir (torchrun ranks, parallel runs)
        if is_prepared(dest):  # another process finished it while this one waited
            return _reuse(dest, source, settings)
        return _prepare_locked(
            spec, dest, source, settings, tokenizer, vocab_size, block, progress, bpe_sample,
            doc_sep, labels,
        )  # fmt: skip


def _intact(dest: Path, clear: bool = False) -> bool:
    """Whether ``dest`` is a prepared data dir whose files match their meta.json. A damaged one
    (edited or truncated files, a garbled meta.json, token files without one) is False, and
    with ``clear`` its own files are removed so that it can be prepared again in place."""
    try:
        if not is_prepared(dest):
            return False
        files = TokenFiles(dest)
        files.verify()
        files.tokenizer()
        return True
    except (ValueError, OSError):
        if clear:
            for name in (META, *(f"{s}.bin" for s in SPLITS)):
                (dest / name).unlink(missing_ok=True)
            shutil.rmtree(dest / "tokenizer", ignore_errors=True)
        return False


def _reuse(dest: Path, source: str, settings: dict[str, Any]) -> dict[str, Any]:
    meta = json.loads((dest / META).read_text())
    if meta["source"]["sha256"] == source and meta["settings"] == settings:
        return meta
    raise ValueError(
        f"{str(dest)!r} holds another prepared corpus ({meta['source']['spec']!r}); "
        "choose another --out"
    )


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """A blocking ``flock`` on ``.NAME.lock`` beside ``dest`` (released however the holder
    dies), so concurrent preparers of one data dir take turns: the first prepares, the rest
    find it finished; leftovers found while holding it are a dead preparer's."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(dest.parent / f".{dest.name}.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _prepare_locked(
    spec: str,
    dest: Path,
    source: str,
    settings: dict[str, Any],
    tokenizer: str,
    vocab_size: int,
    block: int,
    progress: bool,
    bpe_sample: int,
    doc_sep: str | None = None,
    labels: str | None = None,
) -> dict[str, Any]:
    from discdiff.tokenizers import BPETokenizer, CharTokenizer

    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"--out {str(dest)!r} exists and is not a prepared data dir")
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):  # an interrupted prepare's leftovers
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        stream = _split_pieces(spec, block, doc_sep, labels)
        if tokenizer == "char":
            chars: set[str] = set()
            for _, piece, _, _ in stream():
                chars.update(piece)
            chars.discard(EOD)
            tok: Any = CharTokenizer(sorted(chars) + [EOD])
        elif tokenizer == "bpe":
            train_text = (q for s, p, _, _ in stream() if s == "train" for q in _pieces(p))
            tok = BPETokenizer.train(_with_eod(_capped(train_text, bpe_sample)), vocab_size)
        else:
            tok = _pretrained(tokenizer)
        eod_ids = tok.encode(EOD)
        if len(eod_ids) != 1:
            raise ValueError(f"the tokenizer splits the end-of-document mark into {eod_ids}")
        eod = eod_ids[0]
        dtype = _dtype(tok.vocab_size)
        tok.save(tmp / "tokenizer")
        stats = {s: _SplitStats() for s in SPLITS}
        ranges: dict[str, dict[int, list[int]]] = {s: {} for s in SPLITS}  # class -> tokens
        hashes = {s: hashlib.sha256() for s in SPLITS}
        handles = {s: open(tmp / f"{s}.bin", "wb") for s in SPLITS}
        bar = _bar(progress, spec)
        try:
            for split, piece, ends, c in stream():
                if EOD in piece:
                    raise ValueError(
                        f"corpus {spec!r} holds U+001E, the end-of-document mark the token "
                        "files use: remove it (or replace it) from the text first"
                    )
                ids = _encode(tok, piece)
                st = stats[split]
                span = ranges[split].setdefault(c, [st.tokens, st.tokens])
                st.chars += len(piece)
                if ends:
                    ids = np.append(ids, eod)
                    st.documents += 1
                st.tokens += int(ids.size)
                span[1] = st.tokens
                data = ids.astype(dtype, copy=False).tobytes()
                handles[split].write(data)
                hashes[split].update(data)
                if bar is not None:
                    bar.update(len(piece.encode("utf-8", errors="surrogatepass")))
        finally:
            for h in handles.values():
                h.flush()
                os.fsync(h.fileno())
                h.close()
            if bar is not None:
                bar.close()
        empty = [s for s in SPLITS if stats[s].tokens == 0]
        if empty:
            raise ValueError(f"corpus {spec!r} is too small: split(s) {empty} would be empty")
        meta = {
            "format": FORMAT,
            "source": {"spec": spec, "sha256": source},
            "settings": settings,
            "tokenizer": tok.kind,
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "eod_id": int(eod),
            "splits": {s: vars(stats[s]) for s in SPLITS},
            "sha256": {s: hashes[s].hexdigest() for s in SPLITS},
            "tokenizer_sha256": sha256_tree(tmp / "tokenizer"),
        }
        if labels is not None:
            names = [p.name for p in label_folders(spec)]
            for c, name in enumerate(names):
                if c not in ranges["train"]:
                    raise ValueError(f"class {name!r} of {spec!r} is too small: no training text")
            meta["labels"] = {
                "names": names,
                "ranges": {s: _spans(ranges[s], len(names)) for s in SPLITS},
            }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _capped(pieces: Iterator[str], limit: int) -> Iterator[str]:
    """The first ``limit`` characters of a stream of pieces."""
    seen = 0
    for piece in pieces:
        if seen >= limit:
            return
        yield piece[: limit - seen]
        seen += len(piece)


def _with_eod(pieces: Iterator[str]) -> Iterator[str]:
    yield EOD
    yield from pieces


def _encode(tok: Any, text: str) -> np.ndarray:
    from discdiff.tokenizers import CharTokenizer

    if not text:
        return np.zeros(0, dtype=np.int64)
    if isinstance(tok, CharTokenizer):
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = getattr(tok, "_np_table", None)
        if table is None:
            top = max(ord(c) for c in tok.alphabet) + 1
            table = np.full(max(top, 0x110000), -1, dtype=np.int64)
            table[[ord(c) for c in tok.alphabet]] = np.arange(len(tok.alphabet))
            tok._np_table = table
        ids = table[codes]
        if (ids < 0).any():
            bad = chr(int(codes[np.argmax(ids < 0)]))
            raise ValueError(f"character {bad!r} is not in the tokenizer's alphabet")
        return ids
    # no offsets wanted: the fast batch skips them (about 2x over encode_batch at 4 KB pieces)
    batch = tok._tok.encode_batch_fast(_pieces(text), add_special_tokens=False)
    return np.concatenate([np.asarray(enc.ids, dtype=np.int64) for enc in batch])


def _pieces(text: str) -> list[str]:
    """~4 KB pieces cut at line ends, for the BPE trainer and encoder (encoded in parallel by
    Rust threads). Text without a line end for 16 KB is cut before a space (the byte-level
    pre-tokenizer starts a word there, so the ids are the same), else hard: a 50 MB line as
    one piece took gigabytes in both."""
    pieces, start, n = [], 0, len(text)
    while start < n:
        far = min(start + 4 * _PIECE, n)
        stop = text.find("\n", start + _PIECE, far)
        if stop >= 0:
            stop += 1
        elif far == n:
            stop = n
        else:
            space = text.rfind(" ", start + _PIECE, far)
            stop = space if space > start + _PIECE and text[space - 1] != " " else far
        pieces.append(text[start:stop])
        start = stop
    return pieces


def _bar(progress: bool, spec: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal only (no bar characters in logs and pipes)
    return tqdm(
        desc=f"prepare {spec}", unit="B", unit_scale=True, unit_divisor=1 << 20, disable=None
    )


def tokenizer_settings(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """The tokenizer part of a prepared corpus's settings: ``char``, ``bpe`` (with its
    vocabulary size) or a published tokenizer (a ``tokenizer.json``'s path, or a
    :class:`~discdiff.tokenizers.PretrainedTokenizer`: a run's own), named by the sha256 of its
    canonical form, so another vocabulary is another corpus; ValueError for anything else."""
    if isinstance(tokenizer, str) and tokenizer in ("char", "bpe"):
        return {"tokenizer": tokenizer, "vocab_size": vocab_size if tokenizer == "bpe" else None}
    tok = _pretrained(tokenizer)
    canonical = f"{tok._tok.to_str()}|{tok.end_id}".encode()
    digest = hashlib.sha256(canonical).hexdigest()
    return {"tokenizer": "pretrained", "vocab_size": None, "tokenizer_sha256": digest}


def _pretrained(tokenizer: Any) -> Any:
    """A PretrainedTokenizer as it is, or read from the path it names."""
    from discdiff.tokenizers import PretrainedTokenizer

    if isinstance(tokenizer, PretrainedTokenizer):
        return tokenizer
    if not isinstance(tokenizer, str):
        raise TypeError(f"tokenizer must be a str or a PretrainedTokenizer, got {tokenizer!r}")
    return PretrainedTokenizer.from_file(tokenizer)


def prepared_cache(
    spec: str,
    *,
    tokenizer: Any = "char",
    vocab_size: int = 1024,
    progress: bool = False,
    doc_sep: str | None = None,
    labels: str | None = None,
) -> tuple[Path, bool]:
    """The prepared data dir of a raw corpus in the cache (``$DISCDIFF_CACHE/prepared``),
    made on the first call and reused after: (path, made now).

    The key is the source's paths, sizes and modification times with the tokenizer settings,
    so a second run starts without reading the corpus; meta.json keeps the full content hash.
    """
    from discdiff.datasets._fetch import cache_dir

    if is_prepared(spec):
        return Path(spec), False
    settings = tokenizer_settings(tokenizer, vocab_size)
    key = hashlib.sha256(
        f"{FORMAT}|{settings['tokenizer']}|{vocab_size if tokenizer == 'bpe' else ''}|".encode()
        if settings["tokenizer"] != "pretrained"
        else f"{FORMAT}|pretrained:{settings['tokenizer_sha256']}|".encode()
    )
    if doc_sep is not None:
        key.update(f"doc_sep={doc_sep!r}|".encode())
    if labels is not None:
        key.update(f"labels={labels!r}|".encode())
    if _builtin_name(spec):
        key.update(spec.encode())
    else:
        for path in _files(spec):
            st = path.stat()
            key.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    dest = cache_dir() / "prepared" / key.hexdigest()[:20]
    if _intact(dest, clear=True):  # a damaged cache entry is made again
        return dest, False
    _prune(dest.parent)
    prepare_corpus(
        spec, dest, tokenizer=tokenizer, vocab_size=vocab_size, progress=progress,
        doc_sep=doc_sep, labels=labels,
    )  # fmt: skip
    return dest, True


def _prune(folder: Path) -> None:
    """Remove cached corpora whose source files are gone (no lookup can reach them again)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        try:
            spec = json.loads((entry / META).read_text())["source"]["spec"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _builtin_name(spec) and not Path(spec).expanduser().exists():
            shutil.rmtree(entry, ignore_errors=True)


# ---- reading -----------------------------------------------------------------------------------
#: split files already checked in this process, by (path, size, mtime): a cache lookup that
#: verified a data dir and the TokenFiles then opened on it read each split once, not twice
_VERIFIED: set[tuple[str, int, int]] = set()


class TokenFiles:
    """A prepared data dir: its meta, tokenizer and memory-mapped splits."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not is_prepared(self.path):
            raise FileNotFoundError(f"{str(self.path)!r} is not a prepared data dir (no {META})")
        self.meta = json.loads((self.path / META).read_text())
        where = str(self.path / META)
        try:
            self.dtype = np.dtype(self.meta["dtype"])
            self.vocab_size = int(self.meta["vocab_size"])
            self.eod_id = int(self.meta["eod_id"])
            counts = {s: int(self.meta["splits"][s]["tokens"]) for s in SPLITS}
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where!r} lacks or garbles an entry ({err!r})") from None
        if self.dtype.kind != "u" or self.vocab_size < 1:
            raise ValueError(f"{where!r}: dtype {self.dtype} / vocab_size {self.vocab_size}")
        if self.vocab_size - 1 > np.iinfo(self.dtype).max:
            raise ValueError(f"{where!r}: vocab_size {self.vocab_size} does not fit {self.dtype}")
        if not 0 <= self.eod_id < self.vocab_size:
            raise ValueError(f"{where!r}: eod_id {self.eod_id} is outside [0, {self.vocab_size})")
        for s in SPLITS:
            want = counts[s] * self.dtype.itemsize
            path = self.path / f"{s}.bin"
            got = path.stat().st_size if path.is_file() else None
            if got != want:
                raise ValueError(f"{path} has {got} bytes, meta.json says {want}")
        self._checked: set[str] = set()
        self._tokenizer: Any = None

    def verify(self, split: str | None = None) -> None:
        """Check a split's file (every split's: None) against meta.json's sha256 and its ids
        against the vocabulary, once per split: data edited after ``prepare`` (a test split
        changed after training, ids beyond the vocabulary) are refused in one line naming
        the file instead of being scored or trained on. Files prepared before hashes were
        recorded get the id-range check alone."""
        for s in SPLITS if split is None else (split,):
            path = self.path / f"{s}.bin"
            st = path.stat()
            key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
            if s in self._checked or key in _VERIFIED:  # once per file state in a process
                self._checked.add(s)
                continue
            want = (self.meta.get("sha256") or {}).get(s)
            if want is not None and sha256_file(path) != want:
                raise ValueError(
                    f"{str(path)!r} changed after it was prepared (its sha256 is not meta.json's):"
                    " prepare the data again"
                )
            ids = np.memmap(path, dtype=self.dtype, mode="r") if path.stat().st_size else None
            top = int(ids.max()) if ids is not None and ids.size else -1
            if top >= self.vocab_size:
                raise ValueError(
                    f"{str(path)!r} holds id {top}, outside the vocabulary of {self.vocab_size}"
                )
            self._checked.add(s)
            _VERIFIED.add(key)

    def tokenizer(self) -> Any:
        """The data's tokenizer, checked against meta.json (its hash where recorded, and its
        vocabulary size)."""
        if self._tokenizer is None:
            from discdiff.tokenizers import load_tokenizer

            folder = self.path / "tokenizer"
            want = self.meta.get("tokenizer_sha256")
            if want is not None and folder.is_dir() and sha256_tree(folder) != want:
                raise ValueError(
                    f"{str(folder)!r} changed after the data were prepared: prepare them again"
                )
            tok = load_tokenizer(folder)
            if tok.vocab_size != self.vocab_size:
                raise ValueError(
                    f"{str(folder)!r} has {tok.vocab_size} ids but meta.json says "
                    f"{self.vocab_size}: the data dir was edited; prepare it again"
                )
            self._tokenizer = tok
        return self._tokenizer

    def tokens(self, split: str) -> np.memmap:
        """The split's token ids, memory-mapped (read-only), (n,); checked on first use
        (:meth:`verify`)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {', '.join(map(repr, SPLITS))}")
        self.verify(split)
        return np.memmap(self.path / f"{split}.bin", dtype=self.dtype, mode="r")

    def chars(self, split: str) -> int:
        """Characters of the split (the denominator of bits per character)."""
        return int(self.meta["splits"][split]["chars"])
