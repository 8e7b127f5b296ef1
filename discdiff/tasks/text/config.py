"""The text task's configuration and the view of a model as its denoiser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from discdiff.checks import reads_are_free
from discdiff.datasets.token_files import doc_separator
from discdiff.objectives import OBJECTIVES, objective
from discdiff.tasks.base import TaskConfig, process_problem, usable_processes
from discdiff.tasks.probes import check_continuous_schedule

__all__ = ["OBJECTIVES", "TOKENIZERS", "TextTaskConfig", "TextDenoiser", "text_processes"]

#: the tokenizer kinds; ``tokenizer`` may also name a published ``tokenizer.json`` (its run
#: records "pretrained" and keeps the file)
TOKENIZERS = ("char", "bpe", "pretrained")


def text_processes() -> list[str]:
    """The registered processes a text task can use (a continuous ELBO from K alone)."""
    return usable_processes(continuous_elbo=True)


# ---- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TextTaskConfig(TaskConfig):
    """What defines a text task (saved as ``task.json`` in the run dir).

    corpus: see :func:`load_corpus`. process: a registered process with a continuous-time ELBO
    ("absorbing", "uniform", or a plug-in's). schedule: a registered continuous schedule
    ("loglinear", "cosine", ...). objective: "elbo" (continuous-time ELBO), "sundae"
    (SUNDAE's unrolled denoising loss with ``unroll_steps``; uniform process only) or
    "score_entropy" (SEDD: the output read as log concrete scores, trained on the
    diffusion-weighted score entropy, itself an ELBO; mixing processes) or "dfm" (discrete
    flow matching's generalized KL on the mixture path the process and schedule define, e.g.
    schedule "kappa-poly" / "kappa-cosine"; on a mask path it equals the ELBO's integral
    without its boundary terms; the held-out figure is the full ELBO).
    seq_len: tokens per chunk. tokenizer: "char" | "bpe" (``vocab_size`` for BPE only) | the
    path of a published ``tokenizer.json`` (GPT-2's; recorded as "pretrained").
    time_conditioning: tell the denoiser t (None: off for an absorbing ELBO and for SUNDAE,
    whose network is told no noise level, as in the paper; on for a uniform ELBO and for
    score entropy, whose scores depend on t).
    self_conditioning: the denoiser also sees its previous x_0 estimate (trained with it
    half the time; :class:`discdiff.nn.SelfConditioned`), in training, evaluation and sampling.
    t_min: lower end of the time integral of the ELBO.
    doc_sep: where a text file's documents end ("blank": blank lines; a literal string; None:
    a file is one document, so a single file's end-of-document mark lands in the test split).
    block_size: S > 0 trains a block-diffusion model (BD3-LM): each chunk is cut into blocks of
    S tokens, each denoised given the clean blocks before it (the same ELBO, summed over
    blocks: a bound on the block-autoregressive model's likelihood), and sampled block by
    block with a cache of the finished blocks' keys (:func:`discdiff.samplers.sample_block_diffusion`).
    It needs a time-free denoiser and no self-conditioning. 0: an ordinary model.
    labels: "folders" for a labelled corpus (one subfolder of text per class): the denoiser is
    told each window's class (``label_names``, read from the prepared data), trained with the
    null label instead with probability ``label_dropout`` (classifier-free guidance), scored
    given the class, and sampled for a class with ``--label`` (and ``--guidance``).
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
    self_conditioning: bool = False
    t_min: float = 1e-3
    doc_sep: str | None = None
    block_size: int = 0
    labels: str | None = None
    label_names: tuple[str, ...] | None = None
    label_dropout: float = 0.1

    def __post_init__(self) -> None:
        check_continuous_schedule(self.schedule)
        doc_separator(self.doc_sep)
        if process_problem(self.process, continuous_elbo=True) is not None:
            raise ValueError(
                f"process={self.process!r} is not one of "
                f"{', '.join(map(repr, text_processes()))} (registered processes with "
                "a continuous-time ELBO)"
            )
        if self.tokenizer not in TOKENIZERS:
            from discdiff.tokenizers import pretrained_file

            pretrained_file(self.tokenizer)  # a tokenizer.json, or one line naming the value
        problem = objective(self.objective).problem(self.process)  # a registered objective
        for name, low in (("unroll_steps", 1), ("seq_len", 1), ("vocab_size", 256)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: expected an int >= {low}")
        if problem is not None:
            raise ValueError(f"objective={self.objective!r} {problem}")
        if not isinstance(self.self_conditioning, bool):
            raise ValueError(f"self_conditioning={self.self_conditioning!r}: expected a bool")
        if self.time_conditioning is not None and not isinstance(self.time_conditioning, bool):
            raise ValueError(
                f"time_conditioning={self.time_conditioning!r}: expected a bool or None"
            )
        if not isinstance(self.t_min, int | float) or not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"t_min={self.t_min!r}: expected a number in [0, 1)")
        b = self.block_size
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= self.seq_len:
            raise ValueError(f"block_size={b!r}: expected an int in [0, seq_len={self.seq_len}]")
        if b and self.time_conditioned:
            raise ValueError(
                "block_size > 0 (block diffusion) needs a denoiser that is not told t (the "
                "finished blocks' keys are cached across steps): use --no-time-conditioning"
            )
        if b and self.self_conditioning:
            raise ValueError("block_size > 0 (block diffusion) does not take self-conditioning")
        if self.labels is not None and self.labels != "folders":
            raise ValueError(f"labels={self.labels!r}: expected None or 'folders'")
        if self.label_names is not None:
            names = tuple(self.label_names)
            if len(names) < 2 or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"label_names={self.label_names!r}: expected two names or more")
            object.__setattr__(self, "label_names", names)
        d = self.label_dropout
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= d < 1.0:
            raise ValueError(f"label_dropout={d!r}: expected a number in [0, 1)")

    @property
    def time_conditioned(self) -> bool:
        """Whether the denoiser sees t (the resolved ``time_conditioning``)."""
        if self.time_conditioning is None:
            default = objective(self.objective).time_conditioned
            return default if default is not None else self.process != "absorbing"
        return self.time_conditioning


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


def _text_cond(
    ids: Tensor, mask: Tensor, full: bool | None, block: bool, label: Tensor | None = None
) -> dict[str, Tensor] | None:
    """cond of a training or scoring batch: the padding mask where needed
    (:func:`_padding_cond`), for a block-diffusion model the clean ids ``x0``, and the
    windows' ``label`` (B,) of a labelled corpus."""
    cond = _padding_cond(mask, full)
    if block:
        cond = {**(cond or {}), "x0": ids}
    if label is not None:
        cond = {**(cond or {}), "label": label}
    return cond


def _padding_cond(mask: Tensor, full: bool | None = None) -> dict[str, Tensor] | None:
    """cond for the transformer: None when nothing is padded (keeps the fast attention path).
    ``full``: whether the batch is known to be unpadded (the text collate says so on the host,
    before the batch moves); unknown, it is read only where reading is free, and on an
    accelerator the mask is passed on (a read there would be a host sync per step)."""
    if full is None and reads_are_free(mask):
        full = bool(mask.all())
    return None if full else {"padding_mask": mask}


def collate_text(items: list[dict[str, Tensor]]) -> dict[str, Any]:
    """torch's default collate of text items, plus ``full``: a host bool saying whether no
    position is padded (read here on the CPU, so the loss need not read the device's mask)."""
    from torch.utils.data import default_collate

    batch = default_collate(items)
    batch["full"] = bool(batch["mask"].all())
    return batch
