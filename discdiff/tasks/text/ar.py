"""The autoregressive yardstick of the text task: the same transformer run causally, trained
and scored exactly by teacher forcing (an exact NLL beside the diffusion models' bounds)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from discdiff.nn import TransformerConfig
from discdiff.tasks.text.evaluation import TextEval

__all__ = ["AutoregressiveYardstick"]


class AutoregressiveYardstick:
    """Mixed into :class:`~discdiff.tasks.text.TextTask`: the causal model's config, loss and
    exact evaluation (uses the task's ``tokenizer``, ``config`` and ``_score``)."""

    def ar_model_config(self, **options: Any) -> TransformerConfig:
        """The same transformer run causally (one extra input id: BOS = K)."""
        K = self.tokenizer.vocab_size
        return TransformerConfig(
            num_states=K + 1, num_classes=K, max_len=self.config.seq_len, causal=True, **options
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
    def evaluate_ar(
        self,
        model: nn.Module,
        split: str = "test",
        *,
        batch_size: int = 32,
        max_chunks: int | None = None,
        max_tokens: int | None = None,
    ) -> TextEval:
        """Exact teacher-forced NLL of a causal model over the split, as bits per character."""
        bos = self.tokenizer.vocab_size
        return self._score(
            model,
            split,
            batch_size,
            self.window_limit(max_chunks, max_tokens),
            1,
            exact=True,
            fn=lambda b: self.ar_nll(model, b["ids"], b["mask"], bos),
        )

    @torch.no_grad()
    def sample_ar(
        self,
        model: nn.Module,
        n: int,
        length: int,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        prefix: list[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Left-to-right samples of a causal model, (n, length) ids (``length`` forward passes
        at most: one per token after the prefix)."""
        from discdiff.categorical import process_logits, sample_categorical

        if not 1 <= length <= self.config.seq_len:
            raise ValueError(f"length={length}: a causal run samples at most {self.config.seq_len}")
        dev = next(model.parameters()).device
        bos = self.tokenizer.vocab_size
        given = list(prefix or [])
        ids = torch.full((n, length), 0, dtype=torch.long, device=dev)
        if given:
            ids[:, : len(given)] = torch.tensor(given[:length], device=dev)
        was = model.training
        model.eval()
        try:
            for i in range(min(len(given), length), length):
                inp = torch.cat([torch.full((n, 1), bos, device=dev), ids[:, :i]], 1)  # (n, i + 1)
                logits = model(inp, None)[:, -1]  # (n, K)
                lp = process_logits(torch.log_softmax(logits.float(), -1), temperature, top_p)
                ids[:, i] = sample_categorical(lp, generator)
        finally:
            model.train(was)
        return ids

    @torch.no_grad()
    def generative_perplexity(
        self, model: nn.Module, ids: Tensor, scored: Tensor | None = None
    ) -> tuple[float, int]:
        """(perplexity, tokens scored) of samples ``ids`` (n, L) under this causal run: the
        exp of its mean exact NLL per token (the MDLM / ReMDM yardstick of sample quality);
        windows of at most seq_len tokens. ``scored`` (n, L) bool: the positions that count
        (samples cut at their end-of-document token: the token itself, not the padding after
        it, which a judge predicts almost for free); default all."""
        if not getattr(getattr(model, "config", None), "causal", False):
            raise ValueError("generative perplexity needs an autoregressive (causal) judge run")
        if bool((ids >= self.tokenizer.vocab_size).any()):
            raise ValueError("the samples hold ids outside the judge's vocabulary")
        dev = next(model.parameters()).device
        W = self.config.seq_len
        nats, count = 0.0, 0
        if scored is not None and scored.shape != ids.shape:
            raise ValueError(f"scored must have the samples' shape {tuple(ids.shape)}")
        for start in range(0, ids.shape[1], W):
            piece = ids[:, start : start + W].to(dev)
            if scored is None:
                mask = torch.ones_like(piece, dtype=torch.bool)
            else:
                mask = scored[:, start : start + W].to(dev)
            if not bool(mask.any()):
                continue
            nats += float(self.ar_nll(model, piece, mask, self.tokenizer.vocab_size).sum())
            count += int(mask.sum())
        if count == 0:
            raise ValueError("no sample position to score")
        return float(torch.exp(torch.tensor(nats / count))), count
