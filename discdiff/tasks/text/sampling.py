"""Sampling of the text task (mixed into :class:`~discdiff.tasks.text.TextTask`): any core
sampler with a fixed prefix or an infill template, semi-autoregressive generation past the
context, variable length at the end-of-document token. Uses the task's ``config``,
``tokenizer``, ``process`` and ``denoiser``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from discdiff.samplers import Sampler
from discdiff.tasks.base import x0_denoiser
from discdiff.tasks.probes import check_denoiser_calls, check_sampling_size
from discdiff.tasks.text.evaluation import parse_infill

__all__ = ["TextSampling"]


class TextSampling:
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
        block: int | None = None,
        stop_at_eod: bool = False,
        label: int | str | None = None,
        **conditioning: Any,
    ) -> tuple[list[str], Tensor, int]:
        """Draw ``n`` texts of ``length`` tokens (default seq_len).

        prefix: literal text the samples start with; infill: a template with ``[MASK:n]``
        blanks (see :func:`parse_infill`); at most one of the two. A ``length`` past seq_len
        is generated semi-autoregressively (:func:`~discdiff.samplers.sample_blocks`, ``block``
        new tokens per window, default seq_len // 2). ``stop_at_eod``: each text ends at its
        first end-of-document token (variable length). ``label``: the class (name or id) of a
        model trained on a labelled corpus (none: the null label, unconditional; the sampler's
        guidance scale applies classifier-free guidance). Returns (texts, ids (n, L), calls).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}: expected an int >= 1")
        if conditioning:
            raise ValueError(f"text samples take a label only, not {sorted(conditioning)}")
        y = None
        if label is not None or self.num_labels:
            y = self.label_id(label) if label is not None else self.num_labels  # null: none
        if y is None and getattr(sampler, "guidance", 1.0) != 1.0:
            raise ValueError("guidance needs a model trained on a labelled corpus")
        W = self.config.seq_len
        L = W if length is None else length
        if isinstance(L, bool) or not isinstance(L, int) or L < 1:
            raise ValueError(f"length={length!r}: expected an int >= 1")
        if L > W and infill is not None:
            raise ValueError(f"an infill template must fit in one window of {W} tokens")
        S = getattr(getattr(model, "config", None), "block_size", 0)
        if S and block is not None:
            raise ValueError(
                f"block={block}: the new tokens per window of an ordinary model; a "
                f"block-diffusion model draws its own blocks of {S}"
            )
        if S and infill is not None:
            raise ValueError(
                "a block-diffusion model reads left to right, block by block: an infill "
                "template needs an ordinary model (a prefix works)"
            )
        steps = getattr(sampler, "steps", None)
        if S and isinstance(steps, int):  # ``steps`` calls per block, and one to cache it
            check_denoiser_calls(-(-L // S) * (steps + 1), f"a sample of {L:,} tokens in blocks of {S}",
                                 "ask for a shorter length or fewer steps")  # fmt: skip
        elif isinstance(steps, int) and L > W:  # one window of ``steps`` calls per block
            b = W // 2 if block is None else max(1, int(block))
            windows = 1 + -(-(L - W) // b)
            check_denoiser_calls(windows * steps, f"a sample of {L:,} tokens in windows of {W}",
                                 "ask for a shorter length, fewer steps or larger blocks")  # fmt: skip
        mc = getattr(model, "config", None)
        check_sampling_size(
            n, min(L, W), self.process.num_states, getattr(mc, "d_model", 0),
            getattr(mc, "num_heads", 0), output_bytes=n * L * 9,  # int64 ids, a byte of text
            device=next(model.parameters()).device,
        )  # fmt: skip
        eod = self._eod_id() if stop_at_eod else None
        if stop_at_eod and eod is None:
            raise ValueError("this tokenizer has no end-of-document token to stop at")
        if prefix is not None and infill is not None:
            raise ValueError("give either prefix or infill, not both")
        fixed = None
        if prefix is not None or infill is not None:
            first = min(L, W)
            if prefix is not None:
                ids = self.tokenizer.encode(prefix)
                if len(ids) > first:
                    raise ValueError(
                        f"the prefix takes {len(ids)} tokens, more than the length {first}"
                    )
                values = torch.tensor(ids + [0] * (first - len(ids)), dtype=torch.long)
                given = torch.arange(first) < len(ids)
            else:
                values, given = parse_infill(infill, self.tokenizer, first)
            fixed = (values.expand(n, first).clone(), given.expand(n, first).clone())
        if getattr(sampler, "starts", 1) > 1 and getattr(sampler, "scorer", False) is None:
            import copy

            sampler = copy.copy(sampler)  # the caller's keeps its settings
            sampler.scorer = self.elbo_scorer(model)
        was = model.training
        model.eval()
        try:
            den: Any = self.denoiser(model)
            if getattr(sampler, "output", "x0") == "scores":
                raise ValueError(
                    "the task hands samplers x0 logits (a score model is converted exactly): "
                    "use output='x0' (the default)"
                )
            den = x0_denoiser(den, self.objective, self.process)  # every sampler reads x_0
            device = next(model.parameters()).device
            labels = None if y is None else torch.full((n,), y, dtype=torch.long, device=device)
            cond = None if labels is None else {"label": labels}
            if S:
                from discdiff.samplers.blocks import sample_block_diffusion

                res = sample_block_diffusion(
                    sampler, model, self.process, n, L, fixed=fixed, eos_id=eod, label=labels,
                    wrap=lambda m: x0_denoiser(self.denoiser(m), self.objective, self.process),
                    generator=generator, progress=progress,
                )  # fmt: skip
            elif L > W or eod is not None:
                from discdiff.samplers.blocks import sample_blocks

                res = sample_blocks(
                    sampler, den, self.process, n, L, W, block, fixed=fixed, eos_id=eod,
                    cond=cond, generator=generator, progress=progress,
                )  # fmt: skip
            else:
                res = sampler.sample(
                    den, self.process, (n, L), cond=cond, fixed=fixed, generator=generator,
                    progress=progress,
                )  # fmt: skip
        finally:
            model.train(was)
        ids_out = res.samples.cpu()  # (n, L)
        if bool((ids_out >= self.tokenizer.vocab_size).any()):
            raise ValueError("the sampler left masked positions; use more steps")
        texts = []
        for row in ids_out:
            if eod is not None and bool((row == eod).any()):
                row = row[: int((row == eod).nonzero()[0])]
            texts.append(self.tokenizer.decode(row))
        return texts, ids_out, res.num_calls

    def elbo_scorer(self, model: nn.Module, draws: int = 4) -> Any:
        """(ids (B, L), cond) -> (B,) minus the model's negative ELBO (the mean of ``draws``
        Monte-Carlo draws, boundary terms on, a fixed seed): how SUNDAE's argmax chains are
        ranked here, a likelihood bound that a degenerate fixed point cannot game as the
        model's own sum_i log p(x_i | x) can."""
        from discdiff.losses import continuous_elbo

        den = x0_denoiser(self.denoiser(model), self.objective, self.process)

        def score(ids: Tensor, cond: Any) -> Tensor:
            g = torch.Generator(device=ids.device).manual_seed(0)
            mask = torch.ones_like(ids, dtype=torch.bool)
            with torch.no_grad():
                nats = sum(
                    continuous_elbo(
                        self.process,
                        den,
                        ids,
                        mask,
                        cond=cond,
                        generator=g,
                        t_min=self.config.t_min,
                    )  # fmt: skip
                    for _ in range(draws)
                )
            return -nats / draws

        return score

    def _eod_id(self) -> int | None:
        """The end-of-document token id (prepared corpora end each document with it)."""
        from discdiff.datasets.token_files import EOD

        try:
            ids = self.tokenizer.encode(EOD)
        except (ValueError, KeyError):
            return None
        return ids[0] if len(ids) == 1 else None
