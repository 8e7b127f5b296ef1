"""Scores of text models: bits per character (and per token) with standard errors, and the
templates of infilling (``"The [MASK:20] of the"`` -> given positions)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from discdiff.tasks.base import ratio_se as _ratio_se
from discdiff.tokenizers import Tokenizer

__all__ = ["TextEval", "summarise", "parse_infill"]


# ---- evaluation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextEval:
    """Held-out score of a text model.

    bpc: bits per character (total nats / total characters / ln 2), with ``bpc_se`` its standard
    error over chunks (ratio estimator; it covers both data and Monte-Carlo variation, treating
    chunks as independent: the stratified times within a batch make it slightly conservative).
    The MDLM integrand is heavy-tailed near t_min, so use several ``samples`` on short splits.
    bits_per_token, perplexity = 2 ** bits_per_token: per token (differs from bpc for BPE).
    exact: True for teacher-forced AR scores, False for a Monte-Carlo ELBO (an upper bound).
    """

    bpc: float
    bpc_se: float
    bits_per_token: float
    bits_per_token_se: float
    perplexity: float
    num_chunks: int
    num_tokens: int
    num_chars: int
    samples: int
    exact: bool

    @property
    def value(self) -> float:
        """The task's unit (bits per character): what the spine reports."""
        return self.bpc

    @property
    def se(self) -> float:
        return self.bpc_se

    @property
    def unit(self) -> str:
        return "bits/char"

    def format(self, per_token: bool = False) -> str:
        """One line for humans."""
        kind = "NLL" if self.exact else f"ELBO ({self.samples} sample(s) per chunk)"
        line = (
            f"{kind}: {self.bpc:.4f}{_pm(self.bpc_se)} bits/char over {self.num_chars} "
            f"characters in {self.num_chunks} chunk{'s' if self.num_chunks != 1 else ''}"
        )
        if per_token:
            ppl = f"{self.perplexity:.2f}" if math.isfinite(self.perplexity) else "beyond 1e308"
            line += (
                f"; {self.bits_per_token:.4f}{_pm(self.bits_per_token_se)} bits/token, "
                f"perplexity {ppl} over {self.num_tokens} tokens"
            )
        if self.num_chunks < 2:
            line += " (one chunk: no standard error; evaluate more text for one)"
        return line


def _pm(se: float) -> str:
    """'' where there is no standard error (one chunk), else ' +- se'."""
    return f" +- {se:.4f}" if math.isfinite(se) else ""


def summarise(nats: Tensor, tokens: Tensor, chars: Tensor, samples: int, exact: bool) -> TextEval:
    nats, tokens, chars = nats.double(), tokens.double(), chars.double()
    ln2 = math.log(2.0)
    if chars.sum() <= 0:
        raise ValueError("the evaluation split holds no characters")
    bpt = float(nats.sum() / tokens.sum()) / ln2
    return TextEval(
        bpc=float(nats.sum() / chars.sum()) / ln2,
        bpc_se=_ratio_se(nats, chars) / ln2,
        bits_per_token=bpt,
        bits_per_token_se=_ratio_se(nats, tokens) / ln2,
        perplexity=2.0**bpt if bpt < 1024 else math.inf,  # 2.0 ** 1024 overflows a float
        num_chunks=int(nats.numel()),
        num_tokens=int(tokens.sum()),
        num_chars=int(chars.sum()),
        samples=samples,
        exact=exact,
    )


# ---- sampling with given text ----------------------------------------------------------------
_MASK_RE = re.compile(r"\[MASK(?::(\d+))?\]")
#: what looks like a blank but is not one ([mask], [MASK:-3], [MASK:abc], [MASK 4])
_NEAR_MASK_RE = re.compile(r"\[\s*mask\b[^\]]*\]", re.IGNORECASE)


def _encode_piece(tokenizer: Tokenizer, text: str) -> list[int]:
    """A given piece of a template as ids; a piece the model cannot spell is one line naming
    the character (the template is input, not a tokenizer setting to change)."""
    near = _NEAR_MASK_RE.search(text)
    if near is not None:
        raise ValueError(
            f"{near.group(0)!r} in the template is not a blank: write [MASK] or [MASK:n] with "
            "n >= 1 (capitals, no spaces)"
        )
    try:
        return tokenizer.encode(text)
    except ValueError as err:
        raise ValueError(
            f"the template's text cannot be spelled by this model's tokenizer: "
            f"{str(err).split('; build it with')[0]}"
        ) from None


def parse_infill(template: str, tokenizer: Tokenizer, length: int) -> tuple[Tensor, Tensor]:
    """Given positions of an infill template: (values (L,) long, given (L,) bool).

    The template is text with blanks ``[MASK]`` (one token) or ``[MASK:n]`` (n tokens; for the
    character tokenizer a token is a character). Text pieces are encoded separately and given;
    blanks and every position after the template are generated. A template with no blank is a
    prefix. Raises ValueError if the template needs more than ``length`` tokens.
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    values: list[int] = []
    given: list[bool] = []
    pos = 0
    for m in _MASK_RE.finditer(template):
        piece = _encode_piece(tokenizer, template[pos : m.start()]) if m.start() > pos else []
        values += piece
        given += [True] * len(piece)
        n = int(m.group(1)) if m.group(1) is not None else 1
        if n < 1:
            raise ValueError(f"{m.group(0)!r} in the template: a blank needs n >= 1 tokens")
        values += [0] * n
        given += [False] * n
        pos = m.end()
    piece = _encode_piece(tokenizer, template[pos:]) if pos < len(template) else []
    values += piece
    given += [True] * len(piece)
    if len(values) > length:
        raise ValueError(
            f"the template takes {len(values)} tokens, more than the sample length {length}"
        )
    pad = length - len(values)
    return (
        torch.tensor(values + [0] * pad, dtype=torch.long),
        torch.tensor(given + [False] * pad, dtype=torch.bool),
    )
