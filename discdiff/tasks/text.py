"""Text: corpora, tokenizers and the transformer denoiser plugged into the shared loops.

This module owns no training or sampling loop; it supplies what the shared ones need:

- data: a corpus (:func:`load_corpus`: Shakespeare raw or text8-style, text8, or any file /
  folder of ``*.txt``) -> a tokenizer (characters, or byte-level BPE) -> fixed-length chunks
  (:func:`discdiff.tokenizers.chunk_ids`); the padding mask of the last partial chunk is the
  loss's ``mask`` (padding is never noised nor scored) and the denoiser's ``padding_mask``.
- process: :class:`~discdiff.processes.Absorbing` or :class:`~discdiff.processes.Uniform` over
  the tokenizer's vocabulary with a continuous schedule (``loglinear`` or ``cosine``).
- loss for the :class:`~discdiff.training.Trainer`: :func:`discdiff.losses.continuous_elbo`
  (``boundary=False``: the cheap training form) or :func:`discdiff.losses.sundae_loss`.
- metrics: the ELBO (``boundary=True``) over the test chunks in bits per character with its
  standard error (per token and perplexity too for BPE); for samples, a character n-gram model
  fit on the training split (:class:`CharNGram`) and the share of words found in the training
  vocabulary (:func:`word_coverage`).
- sampling: any core sampler, with a fixed prefix or an infill template
  (``"The [MASK:20] of the"``) passed to it as ``fixed=`` positions.
- the autoregressive yardstick: the same transformer with ``causal=True``, trained and scored
  exactly by teacher forcing (:meth:`TextTask.ar_loss_fn`, :meth:`TextTask.evaluate_ar`).

Absorbing models are not told the time by default (``time_conditioning=None`` resolves to off
for absorbing, on for uniform): for a masking process p(x_0 | x_t) does not depend on t, as
in MDLM, and a time-free denoiser makes the caching sampler exact.

SUNDAE from library parts (what :func:`discdiff.losses.sundae_loss` does; uniform corruption,
``k`` unrolled steps feeding the model's own samples back, no gradient through sampling, the
cross-entropy of every step averaged)::

    from discdiff.losses import corrupt, sample_times
    t = sample_times(B, generator).float()                          # (B,)
    x_t = corrupt({"x": process}, {"x": x0}, t, {"x": mask}, generator)["x"]
    total = 0
    for _ in range(k):
        logits = denoiser(x_t, t)                                    # (B, L, K)
        ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")  # (B, L)
        total = total + (ce * mask).sum(1)
        with torch.no_grad():
            draw = torch.multinomial(logits.softmax(-1).reshape(-1, K), 1, generator=generator)
        x_t = torch.where(mask, draw.reshape(x0.shape), x0)
    loss = total / k                                                 # (B,) nats

A run directory holds the Trainer's files plus ``task.json`` (:class:`TextTaskConfig`) and
``tokenizer/`` (the tokenizer); :func:`load_text_run` rebuilds task and model from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from discdiff.datasets.shakespeare import load_shakespeare
from discdiff.datasets.text8 import TEXT8_ALPHABET, load_text8
from discdiff.datasets.text_files import load_text_files
from discdiff.losses import continuous_elbo, sundae_loss
from discdiff.nn import (
    TransformerConfig,
    denoiser_config,
    denoiser_from_config,
)
from discdiff.processes import Absorbing, Process, Uniform
from discdiff.samplers import (
    AncestralSampler,
    CachingSampler,
    ConfidenceSampler,
    FirstHittingSampler,
    Sampler,
    SundaeSampler,
)
from discdiff.schedules import CosineAlpha, LogLinear, Schedule
from discdiff.tasks.text_metrics import CharNGram, word_coverage, words
from discdiff.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, chunk_ids, load_tokenizer
from discdiff.training import TrainConfig, Trainer, autocast_context, latest_checkpoint, load_model

__all__ = [
    "CORPORA",
    "PROCESSES",
    "SCHEDULES",
    "OBJECTIVES",
    "TOKENIZERS",
    "SAMPLERS",
    "load_corpus",
    "TextTaskConfig",
    "TextChunks",
    "encode_text",
    "TextDenoiser",
    "TextEval",
    "TextTask",
    "parse_infill",
    "make_sampler",
    "train_text",
    "load_text_run",
    "seconds_per_step",
    "CharNGram",
    "word_coverage",
    "words",
]

CORPORA = ("shakespeare", "shakespeare-text8", "text8[:PATH]", "PATH (file or folder of *.txt)")
PROCESSES = ("absorbing", "uniform")
SCHEDULES = ("loglinear", "cosine")
OBJECTIVES = ("elbo", "sundae")
TOKENIZERS = ("char", "bpe")
SAMPLERS = ("ancestral", "caching", "first-hitting", "confidence", "sundae")
TASK_FILE = "task.json"
TOKENIZER_DIR = "tokenizer"


# ---- corpora ---------------------------------------------------------------------------------
def load_corpus(spec: str, split: str = "train") -> str:
    """One split ("train" | "val" | "test" | "all") of the corpus named by ``spec``.

    spec: "shakespeare" (raw text, 84 symbols), "shakespeare-text8" (27 symbols), "text8" or
    "text8:PATH" (the standard 90M/5M/5M split of text8 at PATH, default the cache folder), or
    a path to a text file or a folder of ``*.txt`` files (90/5/5 by character position).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"corpus={spec!r}: expected one of {', '.join(CORPORA)}")
    if spec == "shakespeare":
        return load_shakespeare("raw", split)
    if spec == "shakespeare-text8":
        return load_shakespeare("text8", split)
    if spec == "text8" or spec.startswith("text8:"):
        path = spec.partition(":")[2] or None
        return load_text8(path, split)
    if not Path(spec).expanduser().exists():
        raise FileNotFoundError(
            f"corpus {spec!r} is neither a known name (shakespeare, shakespeare-text8, "
            "text8[:PATH]) nor an existing file or folder"
        )
    return load_text_files(spec, split)


def _is_text8_style(spec: str) -> bool:
    return spec in ("shakespeare-text8", "text8") or spec.startswith("text8:")


# ---- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TextTaskConfig:
    """What defines a text task (saved as ``task.json`` in the run dir).

    corpus: see :func:`load_corpus`. process: "absorbing" | "uniform". schedule: "loglinear" |
    "cosine" (continuous alpha(t)). objective: "elbo" (continuous-time ELBO) or "sundae"
    (SUNDAE's unrolled denoising loss with ``unroll_steps``; uniform process only).
    seq_len: tokens per chunk. tokenizer: "char" | "bpe" (``vocab_size`` for BPE only).
    time_conditioning: tell the denoiser t (None: off for absorbing, on for uniform).
    t_min: lower end of the time integral of the ELBO.
    """

    corpus: str = "shakespeare-text8"
    process: str = "absorbing"
    schedule: str = "loglinear"
    objective: str = "elbo"
    unroll_steps: int = 2
    seq_len: int = 256
    tokenizer: str = "char"
    vocab_size: int = 1024
    time_conditioning: bool | None = None
    t_min: float = 1e-3

    def __post_init__(self) -> None:
        for name, allowed in (
            ("process", PROCESSES),
            ("schedule", SCHEDULES),
            ("objective", OBJECTIVES),
            ("tokenizer", TOKENIZERS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
        for name, low in (("unroll_steps", 1), ("seq_len", 1), ("vocab_size", 256)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: expected an int >= {low}")
        if self.objective == "sundae" and self.process != "uniform":
            raise ValueError(
                f"objective='sundae' needs process='uniform' (SUNDAE corrupts uniformly), "
                f"got process={self.process!r}"
            )
        if self.time_conditioning is not None and not isinstance(self.time_conditioning, bool):
            raise ValueError(
                f"time_conditioning={self.time_conditioning!r}: expected a bool or None"
            )
        if not isinstance(self.t_min, int | float) or not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"t_min={self.t_min!r}: expected a number in [0, 1)")

    @property
    def time_conditioned(self) -> bool:
        """Whether the denoiser sees t (the resolved ``time_conditioning``)."""
        if self.time_conditioning is None:
            return self.process != "absorbing"
        return self.time_conditioning

    def to_dict(self) -> dict[str, Any]:
        """JSON-able field values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextTaskConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(d, dict):
            raise TypeError(f"TextTaskConfig.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown TextTaskConfig keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**d)


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


def _schedule(name: str) -> Schedule:
    return LogLinear() if name == "loglinear" else CosineAlpha()


class TextDenoiser(nn.Module):
    """A view of the model as the losses' and samplers' denoiser ``(x_t, t, cond) -> logits``.

    With ``time_conditioned=False`` the model is given t = 0 whatever the time, so its output
    depends on x_t only (the caching sampler checks the ``time_conditioned`` attribute).
    It holds the model without copying it; it is never saved.
    """

    def __init__(self, model: nn.Module, time_conditioned: bool) -> None:
        super().__init__()
        self.model = model
        self.time_conditioned = bool(time_conditioned)

    def forward(self, x_t: Tensor, t: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """x_t (B, L) ids, t (B,) -> logits (B, L, K)."""
        if not self.time_conditioned:
            t = torch.zeros_like(t)
        return self.model(x_t, t, cond)


def _padding_cond(mask: Tensor) -> dict[str, Tensor] | None:
    """cond for the transformer: None when nothing is padded (keeps the fast attention path)."""
    return None if bool(mask.all()) else {"padding_mask": mask}


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

    def format(self, per_token: bool = False) -> str:
        """One line for humans."""
        kind = "NLL" if self.exact else f"ELBO ({self.samples} sample(s) per chunk)"
        line = (
            f"{kind}: {self.bpc:.4f} +- {self.bpc_se:.4f} bits/char over {self.num_chars} "
            f"characters in {self.num_chunks} chunks"
        )
        if per_token:
            line += (
                f"; {self.bits_per_token:.4f} +- {self.bits_per_token_se:.4f} bits/token, "
                f"perplexity {self.perplexity:.2f} over {self.num_tokens} tokens"
            )
        return line


def _ratio_se(nats: Tensor, denom: Tensor) -> float:
    """Standard error of sum(nats) / sum(denom) over N units (delta method), in nats per unit."""
    n = nats.numel()
    if n < 2:
        return float("nan")
    r = nats.sum() / denom.sum()
    resid = nats - r * denom
    return float(torch.sqrt((resid**2).sum() / (n * (n - 1))) / denom.mean())


def _summarise(nats: Tensor, tokens: Tensor, chars: Tensor, samples: int, exact: bool) -> TextEval:
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
        perplexity=2.0**bpt,
        num_chunks=int(nats.numel()),
        num_tokens=int(tokens.sum()),
        num_chars=int(chars.sum()),
        samples=samples,
        exact=exact,
    )


# ---- sampling with given text ----------------------------------------------------------------
_MASK_RE = re.compile(r"\[MASK(?::(\d+))?\]")


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
        piece = tokenizer.encode(template[pos : m.start()]) if m.start() > pos else []
        values += piece
        given += [True] * len(piece)
        n = int(m.group(1)) if m.group(1) is not None else 1
        if n < 1:
            raise ValueError(f"{m.group(0)!r} in the template: a blank needs n >= 1 tokens")
        values += [0] * n
        given += [False] * n
        pos = m.end()
    piece = tokenizer.encode(template[pos:]) if pos < len(template) else []
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


def make_sampler(name: str, steps: int = 256, temperature: float = 1.0, **options: Any) -> Sampler:
    """A core sampler by name: "ancestral", "caching", "first-hitting" (ignores ``steps``: one
    call per masked token), "confidence" or "sundae"; ``options`` go to its constructor."""
    if name == "ancestral":
        return AncestralSampler(steps, temperature=temperature, **options)
    if name == "caching":
        return CachingSampler(steps, temperature=temperature, **options)
    if name == "first-hitting":
        return FirstHittingSampler(temperature=temperature, **options)
    if name == "confidence":
        return ConfidenceSampler(steps, temperature=temperature, **options)
    if name == "sundae":
        return SundaeSampler(steps, temperature=temperature, **options)
    raise ValueError(f"sampler={name!r} is not one of {', '.join(map(repr, SAMPLERS))}")


# ---- the task --------------------------------------------------------------------------------
class TextTask:
    """A text task: config + tokenizer + process, and the pieces the shared loops take."""

    def __init__(self, config: TextTaskConfig, tokenizer: Tokenizer) -> None:
        if not isinstance(config, TextTaskConfig):
            raise TypeError(f"config must be a TextTaskConfig, got {type(config).__name__}")
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be a Tokenizer, got {type(tokenizer).__name__}")
        self.config = config
        self.tokenizer = tokenizer
        K = tokenizer.vocab_size
        cls = Absorbing if config.process == "absorbing" else Uniform
        self.process: Process = cls(K, _schedule(config.schedule))
        self._chunks: dict[str, TextChunks] = {}

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, config: TextTaskConfig) -> TextTask:
        """Build the tokenizer from the corpus (characters of all splits, or BPE on train)."""
        if config.tokenizer == "bpe":
            tok: Tokenizer = BPETokenizer.train(
                [load_corpus(config.corpus, "train")], config.vocab_size
            )
        elif _is_text8_style(config.corpus):
            tok = CharTokenizer(TEXT8_ALPHABET)
        else:
            tok = CharTokenizer.from_text(load_corpus(config.corpus, "all"))
        return cls(config, tok)

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``task.json`` and ``tokenizer/`` into ``run_dir``."""
        folder = Path(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TASK_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        self.tokenizer.save(folder / TOKENIZER_DIR)
        return folder

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> TextTask:
        """Read what :meth:`save` wrote."""
        folder = Path(run_dir)
        path = folder / TASK_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{str(folder)!r} is not a text run dir (no {TASK_FILE})")
        config = TextTaskConfig.from_dict(json.loads(path.read_text()))
        return cls(config, load_tokenizer(folder / TOKENIZER_DIR))

    # -- data -----------------------------------------------------------------------------
    def chunks(self, split: str) -> TextChunks:
        """The split's chunks (cached); the training split keeps full chunks only."""
        if split not in self._chunks:
            text = load_corpus(self.config.corpus, split)
            self._chunks[split] = TextChunks.from_text(
                text, self.tokenizer, self.config.seq_len, drop_partial=split == "train"
            )
        return self._chunks[split]

    @staticmethod
    def count_tokens(batch: dict[str, Tensor]) -> int:
        """Real tokens in a batch (the Trainer's tokens/s and nats per token)."""
        return int(batch["mask"].sum())

    # -- model ----------------------------------------------------------------------------
    def model_config(self, **options: Any) -> TransformerConfig:
        """The diffusion denoiser's TransformerConfig; ``options`` set its sizes
        (num_layers, d_model, num_heads, mlp_ratio, dropout, cond_dim, ...)."""
        return TransformerConfig(
            num_states=self.process.num_states,
            num_classes=self.process.num_classes,
            max_len=self.config.seq_len,
            **options,
        )

    def ar_model_config(self, **options: Any) -> TransformerConfig:
        """The same transformer run causally (one extra input id: BOS = K)."""
        K = self.tokenizer.vocab_size
        return TransformerConfig(
            num_states=K + 1, num_classes=K, max_len=self.config.seq_len, causal=True, **options
        )

    def run_model_config(self, model: nn.Module) -> dict[str, Any]:
        """What the Trainer saves as the model config: denoiser + task (checked on resume)."""
        return {"denoiser": denoiser_config(model), "task": self.config.to_dict()}

    @staticmethod
    def build_model(model_config: dict[str, Any]) -> nn.Module:
        """Rebuild the architecture from :meth:`run_model_config`'s output (or a bare
        ``{"type", "config"}`` denoiser config)."""
        if isinstance(model_config, dict) and "denoiser" in model_config:
            model_config = model_config["denoiser"]
        return denoiser_from_config(model_config)

    def denoiser(self, model: nn.Module) -> TextDenoiser:
        """``model`` as the losses' / samplers' denoiser (drops t unless time-conditioned)."""
        return TextDenoiser(model, self.config.time_conditioned)

    # -- losses ---------------------------------------------------------------------------
    def loss(
        self,
        model: nn.Module,
        batch: dict[str, Tensor],
        generator: torch.Generator,
        *,
        boundary: bool,
    ) -> Tensor:
        """The configured objective on a batch, (B,) nats (the ELBO with or without boundary
        terms, or the SUNDAE loss)."""
        ids, mask = batch["ids"], batch["mask"]  # (B, L), (B, L)
        den = self.denoiser(model)
        cond = _padding_cond(mask)
        if self.config.objective == "sundae":
            return sundae_loss(
                self.process,
                den,
                ids,
                mask,
                unroll_steps=self.config.unroll_steps,
                cond=cond,
                generator=generator,
            )
        return continuous_elbo(
            self.process,
            den,
            ids,
            mask,
            cond=cond,
            t_min=self.config.t_min,
            boundary=boundary,
            generator=generator,
        )

    def loss_fn(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
    ) -> Tensor:
        """Training loss for the Trainer, (B,) nats."""
        return self.loss(model, batch, generator, boundary=False)

    def elbo_fn(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
    ) -> Tensor:
        """Negative ELBO with boundary terms (a true bound), (B,) nats, whatever the objective."""
        ids, mask = batch["ids"], batch["mask"]
        return continuous_elbo(
            self.process,
            self.denoiser(model),
            ids,
            mask,
            cond=_padding_cond(mask),
            t_min=self.config.t_min,
            boundary=True,
            generator=generator,
        )

    @staticmethod
    def ar_nll(model: nn.Module, ids: Tensor, mask: Tensor, bos: int) -> Tensor:
        """Exact NLL of a causal model by teacher forcing, (B,) nats.

        Input [BOS, x_0, ..., x_{L-2}]; the logits at i predict x_i. Padding sits at the end, so
        causal attention keeps it out of every real position's context.
        """
        inp = torch.cat([torch.full_like(ids[:, :1], bos), ids[:, :-1]], dim=1)  # (B, L)
        logits = model(inp, None)  # (B, L, K)
        nll = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # (B, L)
        return torch.where(mask, nll, torch.zeros_like(nll)).sum(1)

    def ar_loss_fn(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
    ) -> Tensor:
        """Trainer loss of the AR yardstick (exact NLL), (B,) nats."""
        return self.ar_nll(model, batch["ids"], batch["mask"], self.tokenizer.vocab_size)

    # -- metrics --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str = "test",
        *,
        batch_size: int = 32,
        samples: int = 1,
        max_chunks: int | None = None,
        generator: torch.Generator | None = None,
    ) -> TextEval:
        """Negative ELBO (boundary terms on) over the split's chunks, averaged over ``samples``
        Monte-Carlo draws per chunk, as bits per character with its standard error."""
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples={samples!r}: expected an int >= 1")
        device = next(model.parameters()).device
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(0)
        was = model.training
        model.eval()
        try:
            return self._score(
                split,
                batch_size,
                max_chunks,
                samples,
                exact=False,
                fn=lambda b: self.elbo_fn(model, b, generator),
                device=device,
            )
        finally:
            model.train(was)

    @torch.no_grad()
    def evaluate_ar(
        self,
        model: nn.Module,
        split: str = "test",
        *,
        batch_size: int = 32,
        max_chunks: int | None = None,
    ) -> TextEval:
        """Exact teacher-forced NLL of a causal model over the split, as bits per character."""
        device = next(model.parameters()).device
        bos = self.tokenizer.vocab_size
        was = model.training
        model.eval()
        try:
            return self._score(
                split,
                batch_size,
                max_chunks,
                1,
                exact=True,
                fn=lambda b: self.ar_nll(model, b["ids"], b["mask"], bos),
                device=device,
            )
        finally:
            model.train(was)

    def _score(
        self,
        split: str,
        batch_size: int,
        max_chunks: int | None,
        samples: int,
        exact: bool,
        fn: Callable[[dict[str, Tensor]], Tensor],
        device: torch.device,
    ) -> TextEval:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected an int >= 1")
        if max_chunks is not None and (not isinstance(max_chunks, int) or max_chunks < 1):
            raise ValueError(f"max_chunks={max_chunks!r}: expected None or an int >= 1")
        data = self.chunks(split)
        if len(data) == 0:
            raise ValueError(f"split {split!r} of {self.config.corpus!r} holds no tokens")
        nats, tokens, chars = [], [], []
        for batch in data.batches(batch_size, max_chunks):
            b = {k: v.to(device) for k, v in batch.items()}
            total = sum(fn(b).double() for _ in range(samples)) / samples  # (B,)
            nats.append(total.cpu())
            tokens.append(batch["mask"].sum(1))
            chars.append(batch["chars"])
        return _summarise(torch.cat(nats), torch.cat(tokens), torch.cat(chars), samples, exact)

    # -- sampling -------------------------------------------------------------------------
    def sample(
        self,
        model: nn.Module,
        n: int,
        sampler: Sampler,
        *,
        length: int | None = None,
        prefix: str | None = None,
        infill: str | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> tuple[list[str], Tensor, int]:
        """Draw ``n`` texts of ``length`` tokens (default seq_len).

        prefix: literal text the samples start with; infill: a template with ``[MASK:n]``
        blanks (see :func:`parse_infill`); at most one of the two. Returns (texts, ids (n, L),
        denoiser calls).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}: expected an int >= 1")
        L = self.config.seq_len if length is None else length
        if isinstance(L, bool) or not isinstance(L, int) or not 1 <= L <= self.config.seq_len:
            raise ValueError(f"length={length!r}: expected an int in [1, {self.config.seq_len}]")
        if prefix is not None and infill is not None:
            raise ValueError("give either prefix or infill, not both")
        fixed = None
        if prefix is not None or infill is not None:
            if prefix is not None:
                ids = self.tokenizer.encode(prefix)
                if len(ids) > L:
                    raise ValueError(
                        f"the prefix takes {len(ids)} tokens, more than the length {L}"
                    )
                values = torch.tensor(ids + [0] * (L - len(ids)), dtype=torch.long)
                given = torch.arange(L) < len(ids)
            else:
                values, given = parse_infill(infill, self.tokenizer, L)
            fixed = (values.expand(n, L).clone(), given.expand(n, L).clone())  # (n, L) each
        was = model.training
        model.eval()
        try:
            res = sampler.sample(
                self.denoiser(model),
                self.process,
                (n, L),
                fixed=fixed,
                generator=generator,
                progress=progress,
            )
        finally:
            model.train(was)
        ids_out = res.samples.cpu()  # (n, L)
        if bool((ids_out >= self.tokenizer.vocab_size).any()):
            raise ValueError("the sampler left masked positions; use more steps")
        return [self.tokenizer.decode(row) for row in ids_out], ids_out, res.num_calls


# ---- runs ------------------------------------------------------------------------------------
def train_text(
    task: TextTask,
    model: nn.Module,
    train_config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    loss_fn: Callable[[nn.Module, Any, torch.Generator], Tensor] | None = None,
    eval_fn: Callable[[nn.Module, Any, torch.Generator], Tensor] | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, float]:
    """Train ``model`` on the task's training chunks with the shared Trainer (eval on "val").

    loss_fn defaults to the task's objective, eval_fn to the ELBO (pass the AR functions for a
    causal model). Saves the task beside the checkpoints (a resumed run must have the same
    task). Returns the Trainer's last metrics.
    """
    if latest_checkpoint(run_dir) is None:
        task.save(run_dir)
    elif not resume:
        raise ValueError(
            f"run dir {str(run_dir)!r} already has checkpoints; pass resume=True (--resume) to "
            "continue it or choose a new run dir"
        )
    else:
        saved = TextTask.load(run_dir).config
        if saved != task.config:
            raise ValueError(
                f"the task saved in {str(run_dir)!r} differs from this one: "
                f"{saved.to_dict()} != {task.config.to_dict()}"
            )
    trainer = Trainer(
        model,
        loss_fn if loss_fn is not None else task.loss_fn,
        task.chunks("train"),
        train_config,
        run_dir,
        model_config=task.run_model_config(model),
        eval_data=task.chunks("val") if train_config.eval_every else None,
        eval_fn=eval_fn if eval_fn is not None else task.elbo_fn,
        count_tokens=task.count_tokens,
        device=device,
        progress=progress,
    )
    return trainer.fit(resume=resume)


def load_text_run(
    run_dir: str | os.PathLike[str], device: str = "cpu", use_ema: bool | None = None
) -> tuple[TextTask, nn.Module]:
    """(task, model in eval mode) from a run dir written by :func:`train_text`."""
    task = TextTask.load(run_dir)
    model = load_model(run_dir, task.build_model, use_ema=use_ema, device=device)
    return task, model


def seconds_per_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any, torch.Generator], Tensor],
    data: TextChunks,
    batch_size: int,
    trials: int = 3,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> float:
    """Measured seconds of one training step (forward, backward, AdamW) on ``batch_size`` chunks.

    Runs on a copy of ``model`` (the original is untouched) after one warm-up step, under the
    Trainer's autocast for ``precision``; used to turn a wall-clock budget into a step count so
    a cosine schedule can anneal within the budget.
    """
    import copy

    if len(data) < 1:
        raise ValueError("no training chunks to time a step on")
    probe = copy.deepcopy(model).to(device).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    idx = torch.arange(batch_size) % len(data)
    batch = {"ids": data.ids[idx].to(device), "mask": data.mask[idx].to(device)}
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for i in range(trials + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast_context(torch.device(device), precision):
            loss = loss_fn(probe, batch, gen).float().mean()
        loss.backward()
        opt.step()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


# ---- sample metrics --------------------------------------------------------------------------
