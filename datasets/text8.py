"""text8 (Mahoney's first 10^8 characters of cleaned English Wikipedia) and its normalisation.

The data is not downloaded here: point ``load_text8`` at ``text8.zip`` or the extracted
``text8`` file (or a folder holding one of them; default: the discdiff cache folder). The
standard split is by character position: the first 90,000,000 characters train, the next
5,000,000 validate, the last 5,000,000 test.

``text8_normalize`` applies the same character mapping as the final step of Mahoney's
``wikifil.pl`` to any text, giving a 27-symbol corpus (a-z and space):

1. ASCII upper-case letters A-Z become a-z (nothing else is case-folded: non-ASCII letters
   such as "e with acute" are not letters of the alphabet and become spaces, as in wikifil.pl);
2. each digit becomes its English name padded with spaces ("1" -> " one ", "0" -> " zero ");
3. every maximal run of characters outside a-z becomes a single space;
4. (our addition) leading and trailing spaces are removed, so the result starts and ends
   with a letter (the text8 file itself starts with one space).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

from discdiff.datasets._fetch import cache_dir
from discdiff.datasets.text_files import SPLITS

__all__ = [
    "TEXT8_ALPHABET",
    "TEXT8_SIZES",
    "text8_normalize",
    "find_text8",
    "read_text8",
    "load_text8",
]

TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"
"""The 27 symbols of text8, space first (sorted order)."""

TEXT8_SIZES = (90_000_000, 5_000_000, 5_000_000)
"""Standard (train, val, test) sizes in characters; they sum to the file's 10^8 characters."""

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TABLE = str.maketrans(
    {
        **{chr(65 + i): chr(97 + i) for i in range(26)},
        **{str(d): f" {w} " for d, w in enumerate(_DIGITS)},
    }
)
_NON_LETTERS = re.compile(r"[^a-z]+")
_ALPHABET_BYTES = TEXT8_ALPHABET.encode("ascii")


def text8_normalize(text: str) -> str:
    """Map ``text`` onto the 27-symbol text8 alphabet (rules in the module docstring)."""
    return _NON_LETTERS.sub(" ", text.translate(_TABLE)).strip(" ")


def find_text8(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve ``path`` (file, or folder holding ``text8`` / ``text8.zip``; None = the cache)."""
    folder = cache_dir() if path is None else Path(path).expanduser()
    if folder.is_file():
        return folder
    if folder.is_dir():
        for name in ("text8", "text8.zip"):
            if (folder / name).is_file():
                return folder / name
        raise FileNotFoundError(
            f"no 'text8' or 'text8.zip' in folder {str(folder)!r}; put the file there or pass its path"
        )
    raise FileNotFoundError(f"text8 path {str(folder)!r} does not exist")


def read_text8(path: str | os.PathLike[str] | None = None) -> str:
    """The whole text8 corpus from a zip (member ``text8``, or its only member) or a plain file.

    Raises ValueError if the content has any byte outside a-z and space.
    """
    file = find_text8(path)
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            member = "text8" if "text8" in names else (names[0] if len(names) == 1 else None)
            if member is None:
                raise ValueError(f"{str(file)!r} holds no member 'text8' (members: {names[:5]})")
            data = zf.read(member)
    else:
        data = file.read_bytes()
    stray = data.translate(None, _ALPHABET_BYTES)
    if stray:
        raise ValueError(
            f"{str(file)!r} is not text8: it holds {len(stray)} bytes outside a-z and space "
            f"(first {stray[:1]!r})"
        )
    return data.decode("ascii")


def load_text8(
    path: str | os.PathLike[str] | None = None,
    split: str = "train",
    sizes: Sequence[int] = TEXT8_SIZES,
) -> str:
    """One split of text8: ``sizes`` = (train, val, test) characters, taken in that order.

    The corpus length must equal sum(sizes) (10^8 for the standard file), so a truncated
    or different file is an error rather than a shifted split. split="all" returns everything.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split={split!r} is not one of 'train', 'val', 'test', 'all'")
    if len(sizes) != 3 or any(not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"sizes={tuple(sizes)!r}: expected three non-negative integers")
    text = read_text8(path)
    if len(text) != sum(sizes):
        raise ValueError(
            f"text8 corpus has {len(text)} characters but sizes={tuple(sizes)} sum to {sum(sizes)}"
        )
    if split == "all":
        return text
    a, b = sizes[0], sizes[0] + sizes[1]
    return {"train": text[:a], "val": text[a:b], "test": text[b:]}[split]
