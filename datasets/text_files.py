"""Plain-text corpora the user points at: one file, or every ``*.txt`` under a folder.

Files are read in a fixed order (sorted by path relative to the root, recursively), decoded
strictly (an undecodable byte is an error naming the file, never silently replaced), joined
with ``FILE_SEPARATOR`` and cut into train/val/test by character position: the first 90%
of the characters train, the next 5% validate, the last 5% test. Contiguous splits keep
held-out text unseen as a whole (no sentence straddles two splits except at the two cuts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "FILE_SEPARATOR",
    "SPLITS",
    "DEFAULT_FRACTIONS",
    "split_bounds",
    "split_text",
    "list_text_files",
    "read_text_files",
    "load_text_files",
]

FILE_SEPARATOR = "\n\n"
"""Put between consecutive files so the last word of one never fuses with the next."""

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)


def _check_split(split: str, allow_all: bool = True) -> None:
    names = (*SPLITS, "all") if allow_all else SPLITS
    if split not in names:
        raise ValueError(f"split={split!r} is not one of {', '.join(map(repr, names))}")


def split_bounds(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[int, int]:
    """Cut points (a, b) so that [0, a), [a, b), [b, n) are train/val/test of n characters.

    a = round(n * f_train) and b = round(n * (f_train + f_val)); the fractions must be three
    non-negative numbers summing to 1.
    """
    if len(fractions) != 3 or any(not isinstance(f, int | float) for f in fractions):
        raise ValueError(
            f"fractions={tuple(fractions)!r}: expected three numbers (train, val, test)"
        )
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(
            f"fractions={tuple(fractions)!r}: expected non-negative numbers summing to 1"
        )
    a = round(n * fractions[0])
    b = round(n * (fractions[0] + fractions[1]))
    return a, min(max(b, a), n)


def split_text(
    text: str, split: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, name: str = "corpus"
) -> str:
    """The ``split`` ("train", "val", "test" or "all") part of ``text``, cut by character position.

    Raises ValueError if the requested part has a positive fraction but would be empty (the
    corpus is too small to split), so a tiny corpus never yields a silently empty test set.
    """
    _check_split(split)
    if split == "all":
        return text
    a, b = split_bounds(len(text), fractions)
    start, stop = {"train": (0, a), "val": (a, b), "test": (b, len(text))}[split]
    if stop == start and fractions[SPLITS.index(split)] > 0:
        raise ValueError(
            f"{name} has {len(text)} characters, too few for a non-empty {split!r} split "
            f"with fractions {tuple(fractions)}"
        )
    return text[start:stop]


def list_text_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself if it is a file, else every ``*.txt`` below it (recursively), sorted."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"text corpus path {str(root)!r} does not exist")
    if root.is_file():
        return [root]
    if not root.is_dir():  # /dev/null, a FIFO, a device
        raise ValueError(f"corpus {str(root)!r} is neither a regular file nor a folder")
    files = sorted(
        (p for p in root.rglob("*.txt") if p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(f"no *.txt files under folder {str(root)!r}")
    return files


def read_text_files(path: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    """All text under ``path`` (see ``list_text_files``) joined with ``FILE_SEPARATOR``.

    Decoding is strict; a byte sequence that is not valid ``encoding`` raises ValueError
    naming the file and the byte offset. An all-empty corpus raises ValueError.
    """
    parts = []
    for f in list_text_files(path):
        data = f.read_bytes()
        try:
            parts.append(data.decode(encoding))
        except UnicodeDecodeError as err:
            raise ValueError(
                f"cannot decode {str(f)!r} as {encoding}: byte {err.start} "
                f"({data[err.start : err.start + 1]!r}); pass encoding=... or fix the file"
            ) from None
        except LookupError:
            raise ValueError(f"encoding={encoding!r} is not a known text encoding") from None
    text = FILE_SEPARATOR.join(parts)
    if not any(parts):
        raise ValueError(f"text corpus at {str(Path(path))!r} is empty (0 characters)")
    return text


def load_text_files(
    path: str | os.PathLike[str],
    split: str = "train",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    encoding: str = "utf-8",
) -> str:
    """One split of the corpus at ``path`` (a file or a folder of ``*.txt``), as a string.

    split: "train" | "val" | "test" | "all"; fractions: (train, val, test), default 90/5/5.
    """
    _check_split(split)
    split_bounds(0, fractions)  # validate fractions before reading anything
    return split_text(read_text_files(path, encoding), split, fractions, name=str(path))
