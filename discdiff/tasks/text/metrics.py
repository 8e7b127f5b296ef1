"""Sample-quality proxies for text that any generator can be scored on.

- :class:`CharNGram`: a character n-gram model with add-k smoothing fit on the training split;
  the bits per character it gives samples measure how text-like they are.
- :func:`word_coverage`: the share of generated words found in the training vocabulary.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Sequence

__all__ = ["CharNGram", "word_coverage", "words", "unigram_entropy"]

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters with inner apostrophes)."""
    return _WORD_RE.findall(text.lower())


def word_coverage(texts: Sequence[str], vocabulary: set[str], drop_edges: bool = True) -> float:
    """Share of the words in ``texts`` found in ``vocabulary`` (e.g. the training words).

    drop_edges: skip each text's first and last word, which a fixed-length window may cut.
    """
    hits = total = 0
    for text in texts:
        ws = words(text)
        if drop_edges:
            ws = ws[1:-1]
        hits += sum(w in vocabulary for w in ws)
        total += len(ws)
    return hits / total if total else float("nan")


class CharNGram:
    """Character n-gram model with add-k smoothing, fit on a training text.

    p(c | ctx) = (count(ctx + c) + k) / (count(ctx) + k V), ctx the previous n - 1 characters
    and V the training alphabet size plus one (for characters never seen). Scores samples of
    any model on the same footing, likelihood or not.
    """

    def __init__(self, text: str, n: int = 5, k: float = 0.1) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}: expected an int >= 1")
        if not k > 0:
            raise ValueError(f"k={k!r}: expected a number > 0")
        if len(text) < n:
            raise ValueError(f"the training text has {len(text)} characters, fewer than n={n}")
        self.n, self.k = n, float(k)
        self.vocab = len(set(text)) + 1
        self.grams = collections.Counter(text[i : i + n] for i in range(len(text) - n + 1))
        self.contexts = collections.Counter(text[i : i + n - 1] for i in range(len(text) - n + 1))

    def bits(self, text: str) -> tuple[float, int]:
        """(total bits, characters scored) of ``text``: every character with a full context."""
        n, k, V = self.n, self.k, self.vocab
        total = 0.0
        for i in range(n - 1, len(text)):
            g = text[i - n + 1 : i + 1]
            total -= math.log2((self.grams.get(g, 0) + k) / (self.contexts.get(g[:-1], 0) + k * V))
        return total, max(len(text) - n + 1, 0)

    def bits_per_char(self, texts: Sequence[str]) -> float:
        """Mean bits per scored character over ``texts`` (lower = more like the training text)."""
        bits = chars = 0
        for t in texts:
            b, c = self.bits(t)
            bits += b
            chars += c
        return bits / chars if chars else float("nan")


def unigram_entropy(ids: Sequence[Sequence[int]]) -> float:
    """Mean over samples of the entropy (nats) of each sample's own token frequencies: the
    diversity figure MDLM / ReMDM report beside generative perplexity (repetitive text has a
    low one; about 5.6 for GPT-2-tokenized web text of 1,024 tokens)."""
    values = []
    for row in ids:
        counts = collections.Counter(int(i) for i in row)
        n = sum(counts.values())
        if n:
            values.append(-sum(c / n * math.log(c / n) for c in counts.values()))
    return sum(values) / len(values) if values else float("nan")
