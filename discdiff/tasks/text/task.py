"""Text: corpora, tokenizers and the transformer denoiser plugged into the shared loops.

This module owns no training or sampling loop; it supplies what the shared ones need:

- data: a corpus (Shakespeare raw or text8-style, text8, a file / folder of ``*.txt`` or JSON
  lines, or a data dir of ``discdiff text prepare``) is prepared once into flat token files
  (:mod:`discdiff.datasets.token_files`; a raw corpus into the cache) with its tokenizer
  (characters, or byte-level BPE), and read through memory maps as windows of ``seq_len``
  tokens (:class:`PreparedWindows`); the padding mask of the last partial window is the
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

:class:`TextTask` is a :class:`~discdiff.tasks.base.Task`: the spine
(:mod:`discdiff.tasks.runs`) trains, resumes, loads, evaluates and samples it like any other
task; its run directory adds ``tokenizer/`` beside ``task.json``. Data live in
:mod:`discdiff.tasks.text.data`, scores and infill templates in :mod:`discdiff.tasks.text.evaluation`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from discdiff.checks import reads_are_free
from discdiff.nn import TransformerConfig, TransformerDenoiser
from discdiff.processes import Process, make_process
from discdiff.tasks.base import Task, register_task, task_objective
from discdiff.tasks.text.ar import AutoregressiveYardstick
from discdiff.tasks.text.config import (
    OBJECTIVES,
    TOKENIZERS,
    TextDenoiser,
    TextTaskConfig,
    _text_cond,
    collate_text,
    text_processes,
)
from discdiff.tasks.text.data import (
    CORPORA,
    PreparedWindows,
    TextChunks,
    encode_text,
    load_corpus,
)
from discdiff.tasks.text.evaluation import TextEval, _ratio_se, parse_infill, summarise
from discdiff.tasks.text.metrics import CharNGram, word_coverage, words
from discdiff.tasks.text.sampling import TextSampling
from discdiff.tokenizers import CharTokenizer, Tokenizer, load_tokenizer
from discdiff.training.timing import seconds_per_step

__all__ = [
    "CORPORA",
    "OBJECTIVES",
    "TOKENIZERS",
    "load_corpus",
    "TextTaskConfig",
    "TextChunks",
    "encode_text",
    "TextDenoiser",
    "TextEval",
    "TextTask",
    "parse_infill",
    "seconds_per_step",
    "CharNGram",
    "word_coverage",
    "words",
    "text_processes",
]

TOKENIZER_DIR = "tokenizer"
_ = (_ratio_se, encode_text)  # re-exported for callers of the old single module


# ---- the task --------------------------------------------------------------------------------
@register_task("text")
class TextTask(AutoregressiveYardstick, TextSampling, Task):
    """A text task: config + tokenizer + process, and the pieces the shared loops take."""

    config_class = TextTaskConfig
    unit = "bits/char"
    #: the text task's training defaults (flags override; --resume keeps the run's); the
    #: warm-up is at most a tenth of the steps
    default_denoiser: ClassVar[str] = "transformer"
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 10_000,
        "batch_size": 64,
        "lr": 3e-4,
        "warmup_steps": 1000,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "ema_decay": None,
        "precision": "auto",
        "compile": False,
        "eval_every": 500,
        "eval_batches": 8,
        "ckpt_every": 1000,
        "log_every": 10,
    }

    def __init__(self, config: TextTaskConfig, tokenizer: Tokenizer) -> None:
        if not isinstance(config, TextTaskConfig):
            raise TypeError(f"config must be a TextTaskConfig, got {type(config).__name__}")
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be a Tokenizer, got {type(tokenizer).__name__}")
        self.config = config
        self.tokenizer = tokenizer
        K = tokenizer.vocab_size
        self.process: Process = make_process(config.process, K, schedule=config.schedule)
        self.processes = {"tokens": self.process}
        self.objective = task_objective(config, self.process)
        self._chunks: dict[str, PreparedWindows] = {}
        self._files: Any = None
        self._data_record: dict[str, Any] | None = None  # data.json of a saved run

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def example(cls, folder: Path) -> tuple[TextTask, dict[str, Any]]:
        """A character task on a small made-up corpus written into ``folder``."""
        import random

        rng = random.Random(0)
        vocab = "the king and queen of england went to war with france in spring".split()
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / "corpus.txt"
        path.write_text(
            "\n".join(" ".join(rng.choice(vocab) for _ in range(8)) for _ in range(200))
        )
        task = cls.create(TextTaskConfig(corpus=str(path), seq_len=16))
        return task, {"num_layers": 1, "d_model": 32, "num_heads": 2, "cond_dim": 16}

    @classmethod
    def create(cls, config: TextTaskConfig, *, progress: bool = False) -> TextTask:
        """The task of a corpus: a prepared data dir (``discdiff text prepare``) as it is, any
        other corpus prepared into the cache first (:func:`prepared_cache`; once, reused after).

        The tokenizer is the prepared one (characters of the whole corpus plus the
        end-of-document mark, or BPE trained on the training split): the config's tokenizer and
        vocab_size are set from it; its ``corpus`` stays what the user named.
        """
        files = _prepared(config, progress)
        tok_kind = files.meta["tokenizer"]
        config = dataclasses.replace(
            config,
            tokenizer=tok_kind,
            vocab_size=max(256, files.meta["vocab_size"])
            if tok_kind == "bpe"
            else config.vocab_size,
        )
        labelled = files.meta.get("labels")
        if config.labels is not None and labelled is None:
            raise ValueError(f"{config.corpus!r}: its prepared data hold no labels")
        if labelled is not None:  # a labelled data dir trains with its labels
            config = dataclasses.replace(
                config, labels=files.meta["settings"].get("labels", "folders"),
                label_names=tuple(labelled["names"]),
            )  # fmt: skip
        task = cls(config, files.tokenizer())
        task._files = files
        return task

    def save_files(self, folder: Path) -> None:
        """The tokenizer, in ``tokenizer/`` (task.json is the spine's), and ``data.json``: the
        prepared data's hashes (source and splits) the run trains on, so that data prepared
        again from another text are refused rather than trained or scored as if the same."""
        self.tokenizer.save(folder / TOKENIZER_DIR)
        record = self._data_record
        if record is None and self._files is not None:
            record = _data_record(self._files.meta)
        if record is not None:
            from discdiff.files import write_json_atomic

            write_json_atomic(folder / DATA_RECORD, record)

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: Path | None = None) -> TextTask:
        """The task of a saved config; its tokenizer is read from ``folder/tokenizer``."""
        if folder is None or not (Path(folder) / TOKENIZER_DIR).is_dir():
            raise FileNotFoundError(
                f"the text task needs its tokenizer: no {TOKENIZER_DIR}/ in {str(folder)!r}"
            )
        task = cls(TextTaskConfig.from_dict(config), load_tokenizer(Path(folder) / TOKENIZER_DIR))
        record = Path(folder) / DATA_RECORD
        if record.is_file():
            try:
                task._data_record = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as err:
                raise ValueError(f"cannot read {str(record)!r}: {err}") from None
        return task

    # -- data -----------------------------------------------------------------------------
    def dataset(self, split: str) -> PreparedWindows:
        """The split's chunks (the spine's data)."""
        return self.chunks(split)

    def chunks(self, split: str) -> PreparedWindows:
        """The split's windows of seq_len tokens (cached), read from the prepared token files
        through memory maps: memory flat in the corpus. Training draws windows at any start
        (full windows only); evaluation reads consecutive ones, the last padded."""
        if split not in self._chunks and split.startswith("file:"):
            self._chunks[split] = self._outside(split.partition(":")[2])
        if split not in self._chunks:
            train = split == "train"
            self._chunks[split] = PreparedWindows(
                self.files(), split, self.config.seq_len, drop_partial=train, random_windows=train
            )
        return self._chunks[split]

    def outside_split(self, spec: str) -> str:
        """Register a corpus other than the training one (a file, folder or built-in name)
        for evaluation; returns its split name ``"file:SPEC"`` for :meth:`evaluate`. It is
        encoded with this task's tokenizer (read whole: for held-out files, not corpora)."""
        name = f"file:{spec}"
        self._chunks.pop(name, None)
        self.chunks(name)
        if name not in self.splits:
            self.splits = (*type(self).splits, name)
        return name

    def _outside(self, spec: str) -> TextChunks:
        text = load_corpus(spec, "all")
        if not text:
            raise ValueError(f"corpus {spec!r} is empty")
        if isinstance(self.tokenizer, CharTokenizer):
            unknown = sorted(set(text) - set(self.tokenizer.alphabet))
            if unknown and self.tokenizer.unk is None:
                shown = ", ".join(repr(c) for c in unknown[:5])
                raise ValueError(
                    f"{spec!r} has {len(unknown)} character(s) the run's tokenizer does not "
                    f"know ({shown}); bits per character are undefined for them"
                )
        return TextChunks.from_text(text, self.tokenizer, self.config.seq_len)

    def files(self) -> Any:
        """The corpus's prepared token files (:class:`TokenFiles`), prepared into the cache
        if need be; their tokenizer must be this task's (else the corpus changed)."""
        if self._files is None:
            files = _prepared(self.config, False, self.tokenizer)
            if not _same_tokenizer(files.tokenizer(), self.tokenizer):
                raise ValueError(
                    f"the corpus {self.config.corpus!r} now gives another tokenizer than the "
                    f"run's ({files.path}); it changed since training"
                )
            now, then = _data_record(files.meta), self._data_record
            if then is not None and now != then:
                changed = [
                    k for k in ("source", *now.get("splits", {})) if _part(now, k) != _part(then, k)
                ]
                raise ValueError(
                    f"the prepared data of {self.config.corpus!r} ({files.path}) are not the ones "
                    f"this run was trained on ({', '.join(changed) or 'their record'} changed): "
                    "prepare them from the run's text, or score other text with --file"
                )
            self._files = files
        return self._files

    @staticmethod
    def count_tokens(batch: dict[str, Tensor]) -> int | Tensor:
        """Real tokens in a batch (the Trainer's tokens/s and nats per token); a device scalar
        where reading it would be a host sync."""
        total = batch["mask"].sum()
        return int(total) if reads_are_free(total) else total

    def collate(self) -> Any:
        """Batches that say on the host whether they are padded (:func:`collate_text`)."""
        return collate_text

    def sampler_defaults(self) -> dict[str, Any]:
        """256 reverse steps (first-hitting takes none: one call per masked token)."""
        return {"steps": 256}

    def units(self, batch: dict[str, Tensor]) -> Tensor:
        """Characters per chunk, (B,): the denominator of bits per character."""
        return batch["chars"]

    # -- model ----------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        """Classes of a labelled corpus (0: none)."""
        return len(self.config.label_names or ())

    @property
    def null_label(self) -> int | None:
        """The label id meaning "no label" (classifier-free guidance), or None: no labels."""
        return self.num_labels or None

    def label_id(self, label: int | str) -> int:
        """A class's id from its name (or id); ValueError naming the classes otherwise."""
        names = self.config.label_names or ()
        if not names:
            raise ValueError("this text model has no labels (train on a labelled corpus)")
        if isinstance(label, str) and label in names:
            return names.index(label)
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
            return label
        if isinstance(label, str) and label.isdigit() and int(label) < len(names):
            return int(label)
        raise ValueError(f"label {label!r} is not one of {', '.join(names)}")

    def denoiser_fields(self) -> dict[str, Any]:
        """Input ids (K, or K + 1 with a mask), output classes K, the longest sequence,
        whether the model takes its previous estimate and is told t (and a block size, a
        label count)."""
        return (
            {
                "num_states": self.process.num_states,
                "num_classes": self.process.num_classes,
                "max_len": self.config.seq_len,
                "self_conditioning": self.config.self_conditioning,
                "time_conditioning": self.config.time_conditioned,
            }
            | (
                {"block_size": b, "time_conditioning": False}
                if (b := self.config.block_size)
                else {}
            )
            | ({"num_labels": k} if (k := self.num_labels) else {})
        )

    def model_config(self, **options: Any) -> TransformerConfig:
        """The diffusion denoiser's TransformerConfig; ``options`` set its sizes
        (num_layers, d_model, num_heads, mlp_ratio, dropout, cond_dim, ...). A model the task
        does not tell t (an absorbing ELBO's default) has no time embedding to carry."""
        return TransformerConfig(**(self.denoiser_fields() | options))

    def build_other_denoiser(self, name: str, **sizes: Any) -> nn.Module:
        """Another denoiser for this corpus; refused when the run asks for self-conditioning
        and its config cannot say so (the model would silently go without)."""
        model = super().build_other_denoiser(name, **sizes)
        cfg = getattr(model, "config", None)
        if self.config.self_conditioning and not getattr(cfg, "self_conditioning", False):
            raise ValueError(
                f"--self-conditioning: denoiser {name!r} has no self_conditioning field; "
                f"it would train without its previous estimate"
            )
        if self.config.block_size and getattr(cfg, "block_size", 0) != self.config.block_size:
            raise ValueError(
                f"--block-size: denoiser {name!r} has no block_size field; only a block-diffusion "
                f"transformer trains over blocks"
            )
        return model

    def run_model_config(self, model: nn.Module) -> dict[str, Any]:
        """What the Trainer saves as the model config (the spine's model entry)."""
        return self.model_entry(model)

    def build_denoiser(self, **sizes: Any) -> TransformerDenoiser:
        """A fresh diffusion transformer of :meth:`model_config`'s shape."""
        return TransformerDenoiser(self.model_config(**sizes))

    def check_model(self, model: nn.Module) -> None:
        """The model's vocabulary must be the tokenizer's (a diffusion or a causal model)."""
        cfg = getattr(model, "config", None)
        K = self.tokenizer.vocab_size
        if cfg is not None and getattr(cfg, "num_classes", K) != K:
            raise ValueError(
                f"the denoiser predicts {cfg.num_classes} classes; the tokenizer has {K} tokens"
            )

    def denoiser(self, model: nn.Module) -> nn.Module:
        """``model`` as the losses' / samplers' denoiser (drops t unless time-conditioned;
        wrapped in :class:`SelfConditioned` when the model takes its previous estimate)."""
        den = TextDenoiser(model, self.config.time_conditioned)
        if getattr(getattr(model, "config", None), "self_conditioning", False):
            from discdiff.nn import SelfConditioned

            return SelfConditioned(den)
        return den

    # -- losses ---------------------------------------------------------------------------
    def loss(
        self,
        model: nn.Module,
        batch: dict[str, Tensor],
        generator: torch.Generator | None,
        *,
        boundary: bool = False,
    ) -> Tensor:
        """The configured objective on a batch, (B,) nats (the ELBO with or without boundary
        terms, or the SUNDAE loss)."""
        ids, mask = batch["ids"], batch["mask"]  # (B, L), (B, L)
        return self.objective.loss(
            self.process, self.denoiser(model), ids, mask,
            cond=self._cond(model, batch, None if boundary else generator),
            generator=generator, boundary=boundary, config=self.config,
        )  # fmt: skip

    def loss_fn(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
    ) -> Tensor:
        """Training loss for the Trainer, (B,) nats."""
        return self.loss(model, batch, generator, boundary=False)

    def nll(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator | None
    ) -> Tensor:
        """The spine's bound: the ELBO with boundary terms, or the exact NLL of a causal model."""
        if getattr(getattr(model, "config", None), "causal", False):
            return self.ar_loss_fn(model, batch, generator)
        return self.elbo_fn(model, batch, generator)

    def elbo_fn(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
    ) -> Tensor:
        """Negative ELBO with boundary terms (a true bound), (B,) nats: the score-entropy bound
        of a score model, the continuous ELBO of the denoiser read as an x_0 predictor
        otherwise (for SUNDAE: a bound, though not the objective it was trained on)."""
        ids, mask = batch["ids"], batch["mask"]
        return self.objective.evaluate(
            self.process, self.denoiser(model), ids, mask, cond=self._cond(model, batch),
            generator=generator, config=self.config,
        )  # fmt: skip

    def _cond(
        self, model: nn.Module, batch: dict[str, Tensor], dropout: torch.Generator | None = None
    ) -> dict[str, Tensor] | None:
        """The denoiser's cond for a batch (padding; a block model's clean ids; the labels,
        each replaced by the null label with probability ``label_dropout`` when a ``dropout``
        generator is given: training)."""
        block = bool(getattr(getattr(model, "config", None), "block_size", 0))
        label = batch.get("label") if self.num_labels else None
        if label is not None and dropout is not None and self.config.label_dropout > 0:
            u = torch.rand(label.shape, generator=dropout, device=dropout.device).to(label.device)
            label = torch.where(u < self.config.label_dropout, self.num_labels, label)
        return _text_cond(batch["ids"], batch["mask"], batch.get("full"), block, label)

    def evaluate(
        self,
        model: nn.Module,
        split: str = "test",
        *,
        batch_size: int = 32,
        samples: int = 1,
        max_chunks: int | None = None,
        generator: torch.Generator | None = None,
        limit: int | None = None,
        max_tokens: int | None = None,
        progress: bool = False,
    ) -> TextEval:
        """Negative ELBO (boundary terms on) over the split's chunks, averaged over ``samples``
        Monte-Carlo draws per chunk, as bits per character with its standard error (a causal
        model: its exact NLL, :meth:`evaluate_ar`). The split streams from its token file;
        ``max_chunks`` / ``max_tokens`` score only its start (whole windows). ``progress``: a
        bar over the denoiser calls."""
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples={samples!r}: expected an int >= 1")
        limit = max_chunks if max_chunks is not None else limit
        limit = self.window_limit(limit, max_tokens)
        if getattr(getattr(model, "config", None), "causal", False):
            return self.evaluate_ar(model, split, batch_size=batch_size, max_chunks=limit)
        return self._score(
            model, split, batch_size, limit, samples, exact=False, generator=generator,
            progress=progress,
        )  # fmt: skip

    def num_examples(self, split: str) -> int | None:
        """The split's windows of seq_len tokens."""
        return len(self.chunks(split))

    def window_limit(self, max_chunks: int | None, max_tokens: int | None) -> int | None:
        """The windows to score for at most ``max_tokens`` tokens (whole windows), or
        ``max_chunks``; at most one of the two."""
        if max_tokens is None:
            return max_chunks
        if max_chunks is not None:
            raise ValueError("give max_chunks or max_tokens, not both")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens!r}: expected None or an int >= 1")
        return -(-max_tokens // self.config.seq_len)

    def _score(
        self,
        model: nn.Module,
        split: str,
        batch_size: int,
        max_chunks: int | None,
        samples: int,
        exact: bool,
        fn: Callable[[dict[str, Tensor]], Tensor] | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> TextEval:
        if max_chunks is not None and (not isinstance(max_chunks, int) or max_chunks < 1):
            raise ValueError(f"max_chunks={max_chunks!r}: expected None or an int >= 1")
        if len(self.chunks(split)) == 0:
            raise ValueError(f"split {split!r} of {self.config.corpus!r} holds no tokens")
        if fn is None:
            fn = lambda b: self.elbo_fn(model, b, gen)  # noqa: E731
            gen = generator or torch.Generator(device=next(model.parameters()).device).manual_seed(
                0
            )
        nats, seen = self.score(
            model,
            split,
            batch_size=batch_size,
            limit=max_chunks,
            samples=samples,
            fn=fn,
            keep=lambda b: (b["mask"].sum(1), b["chars"]),  # counts only: memory bounded
            progress=progress,
        )
        tokens = torch.cat([t for t, _ in seen])
        chars = torch.cat([c for _, c in seen])
        return summarise(nats, tokens, chars, samples, exact)

    def batches(self, split: str, batch_size: int, limit: int | None = None) -> Any:
        """The split's chunks in order (:meth:`TextChunks.batches`)."""
        return self.chunks(split).batches(batch_size, limit)


def _prepared(config: TextTaskConfig, progress: bool, tokenizer: Tokenizer | None = None) -> Any:
    """The prepared files of the config's corpus; a run on a published vocabulary prepares with
    its own ``tokenizer`` (its config says only "pretrained")."""
    from discdiff.datasets.token_files import TokenFiles, prepared_cache

    tok: Any = tokenizer if config.tokenizer == "pretrained" else config.tokenizer
    path, _ = prepared_cache(
        config.corpus, tokenizer=tok, vocab_size=config.vocab_size,
        progress=progress, doc_sep=config.doc_sep, labels=config.labels,
    )  # fmt: skip
    return TokenFiles(path)


def _same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    if type(a) is not type(b) or a.vocab_size != b.vocab_size:
        return False
    if isinstance(a, CharTokenizer):
        return a.alphabet == b.alphabet
    return a._tok.to_str() == b._tok.to_str()


#: the run's record of the prepared data it trains on (source and split hashes)
DATA_RECORD = "data.json"


def _data_record(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": (meta.get("source") or {}).get("sha256"),
        "splits": dict(meta.get("sha256") or {}),
    }


def _part(record: dict[str, Any], key: str) -> Any:
    return record.get("source") if key == "source" else record.get("splits", {}).get(key)
