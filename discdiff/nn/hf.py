"""A Hugging Face masked language model as an absorbing-process denoiser.

Any ``AutoModelForMaskedLM`` (BERT, RoBERTa, ModernBERT, ...) predicts the token at each
``[MASK]`` from the rest: the x_0 prediction an absorbing (masked) diffusion asks of its
denoiser, as DiffusionBERT showed. :class:`HFMaskedLM` makes one the library's denoiser over
the model's vocabulary of V tokens: the absorbing process's mask state (id V, one past the
classes) is fed to the network as the model's own mask token, the logits are (B, L, V), and the
mask token itself is never predicted. The model is not told t (MDLM: an absorbing denoiser
needs no time input).

Diffusion checkpoints published the same way (MDLM's ``kuleshov-group/mdlm-owt``: custom code,
``trust_remote_code=True``) differ in two ways, both read here: their forward takes
``timesteps`` (given t, (B,)), and their mask is a token appended to a text vocabulary
(``mask_appended=True``: the last of the V ids, so x_0 ranges over V - 1 classes, GPT-2's 50,257
for MDLM's 50,258). A custom-code model is rebuilt from its ``source`` (the repository id or
folder it was loaded from, recorded), since transformers cannot make it from a config alone.

A task trains one from its published weights through :meth:`HFMaskedLMConfig.for_task`
(``pretrained``: the repository id or folder), e.g. DiffusionBERT-style fine-tuning from the
command line: ``discdiff task train text --config '{"corpus": C, "tokenizer": "bert/"}'
--denoiser hf-masked-lm --sizes '{"pretrained": "bert/"}'``; the task's tokenizer must be the
model's (``--tokenizer`` with its ``tokenizer.json``).

It needs the optional ``transformers`` package (``pip install 'discdiff[hf]'``), imported only
when a model is built. A checkpoint keeps the model's own config (``hf_config``) beside our
weights, so a run or an export rebuilds it offline; :meth:`HFMaskedLM.from_pretrained` loads
published weights by repository id or from a local folder.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["HFMaskedLMConfig", "HFMaskedLM"]

#: the logit given to the mask token (never an x_0 class); finite, so losses stay exact
_NEVER = -1e4


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "a Hugging Face denoiser needs the optional package: pip install 'discdiff[hf]'"
        ) from None
    return transformers


@dataclasses.dataclass(frozen=True)
class HFMaskedLMConfig:
    """hf_config: the model's ``config.to_dict()`` (its ``model_type`` names the architecture);
    mask_token_id: the id the model reads as ``[MASK]``; mask_appended: the mask is the last id,
    appended to the text vocabulary (MDLM), so it is no x_0 class at all; source and
    trust_remote_code: where a custom-code model is rebuilt from."""

    hf_config: dict[str, Any]
    mask_token_id: int
    mask_appended: bool = False
    source: str | None = None
    trust_remote_code: bool = False
    #: build the model with the source's published weights (a fresh run from ``for_task``);
    #: the model's own config records False, so a saved run rebuilds from the config
    load_weights: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.hf_config, dict) or "model_type" not in self.hf_config:
            raise ValueError("hf_config must be a transformers config dict with a model_type")
        vocab = self.hf_config.get("vocab_size")
        if not isinstance(vocab, int) or vocab < 2:
            raise ValueError(f"hf_config's vocab_size must be an int >= 2, got {vocab!r}")
        m = self.mask_token_id
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < vocab:
            raise ValueError(f"mask_token_id must be an id in [0, {vocab}), got {m!r}")
        if self.load_weights and not self.source:
            raise ValueError("load_weights needs a source (a repository id or folder)")
        if self.mask_appended and m != vocab - 1:
            raise ValueError(
                f"mask_appended: the mask must be the last id ({vocab - 1}), got mask_token_id {m}"
            )

    @property
    def num_classes(self) -> int:
        """The classes of x_0: the model's vocabulary V, or V - 1 with the mask appended."""
        return int(self.hf_config["vocab_size"]) - int(self.mask_appended)

    @property
    def num_states(self) -> int:
        """V + 1: the absorbing process's mask state is id V."""
        return self.num_classes + 1

    @classmethod
    def for_task(
        cls,
        fields: dict[str, Any],
        *,
        pretrained: str,
        mask_token_id: int | None = None,
        mask_appended: bool = False,
        trust_remote_code: bool = False,
    ) -> HFMaskedLMConfig:
        """The config of published model ``pretrained`` (repository id or folder) for a task
        whose ``fields`` (num_classes, max_len) it must fit: its weights are loaded when the
        model is built. ValueError when its classes are not the task's tokens or its positions
        are fewer than the task's length."""
        tf = _transformers()
        hf = tf.AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
        vocab = int(hf.vocab_size)
        if mask_appended and mask_token_id is None:
            mask_token_id = vocab - 1
        if mask_token_id is None:
            mask_token_id = _mask_id(tf, pretrained, hf)
        config = cls(hf.to_dict(), int(mask_token_id), bool(mask_appended), _source(pretrained),
                     bool(trust_remote_code), load_weights=True)  # fmt: skip
        K = fields.get("num_classes")
        if K is not None and K != config.num_classes:
            raise ValueError(
                f"{pretrained!r} predicts {config.num_classes} classes; the task's tokenizer has "
                f"{K} tokens: prepare the corpus with the model's tokenizer (--tokenizer its "
                "tokenizer.json)"
            )
        positions = getattr(hf, "max_position_embeddings", None)
        L = fields.get("max_len")
        if isinstance(positions, int) and L is not None and L > positions:
            raise ValueError(f"{pretrained!r} reads at most {positions} positions; seq_len is {L}")
        return config

    def to_dict(self) -> dict[str, Any]:
        return {
            "hf_config": dict(self.hf_config),
            "mask_token_id": self.mask_token_id,
            "mask_appended": self.mask_appended,
            "source": self.source,
            "trust_remote_code": self.trust_remote_code,
            "load_weights": self.load_weights,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HFMaskedLMConfig:
        return cls(
            hf_config=dict(d["hf_config"]),
            mask_token_id=int(d["mask_token_id"]),
            mask_appended=bool(d.get("mask_appended", False)),
            source=d.get("source"),
            trust_remote_code=bool(d.get("trust_remote_code", False)),
            load_weights=bool(d.get("load_weights", False)),
        )


class HFMaskedLM(nn.Module):
    """(B, L) ids in [0, V] (V: the absorbing mask) -> (B, L, V) logits over x_0."""

    config_class = HFMaskedLMConfig

    def __init__(self, config: HFMaskedLMConfig, model: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(config, HFMaskedLMConfig):
            raise TypeError(f"config must be a HFMaskedLMConfig, got {type(config).__name__}")
        building_shape_only = torch.get_default_device().type == "meta"  # a size count
        if model is None and config.load_weights and not building_shape_only:
            tf = _transformers()
            model = tf.AutoModelForMaskedLM.from_pretrained(
                config.source, trust_remote_code=config.trust_remote_code
            )
        elif model is None:
            model = _rebuild(config)
        config = dataclasses.replace(config, load_weights=False)  # the weights are the model's now
        self.config = config
        self.model = model
        params = inspect.signature(model.forward).parameters
        self._timesteps = "timesteps" in params
        self._attention = "attention_mask" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
        #: whether the output depends on t (the caching samplers reuse outputs only if not): a
        #: model told ``timesteps`` is, unless its config says ``time_conditioning: false``
        self.time_conditioned = (
            self._timesteps and config.hf_config.get("time_conditioning") is not False
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        mask_token_id: int | None = None,
        mask_appended: bool = False,
        **kwargs: Any,
    ) -> HFMaskedLM:
        """A published masked LM (a repository id, or a local folder of ``save_pretrained``)
        as a denoiser; ``mask_token_id`` defaults to its tokenizer's (or config's) mask token,
        or with ``mask_appended`` (a diffusion checkpoint such as MDLM's) to the last id.
        ``kwargs`` go to ``AutoModelForMaskedLM.from_pretrained`` (``trust_remote_code=True``
        for a checkpoint with its own code)."""
        tf = _transformers()
        model = tf.AutoModelForMaskedLM.from_pretrained(name_or_path, **kwargs)
        if mask_appended and mask_token_id is None:
            mask_token_id = model.config.vocab_size - 1
        if mask_token_id is None:
            mask_token_id = _mask_id(tf, name_or_path, model.config)
        config = HFMaskedLMConfig(
            model.config.to_dict(), int(mask_token_id), bool(mask_appended), _source(name_or_path),
            bool(kwargs.get("trust_remote_code", False)),
        )  # fmt: skip
        return cls(config, model)

    @classmethod
    def conformance_example(
        cls, generator: torch.Generator
    ) -> tuple[HFMaskedLMConfig, Tensor, Tensor, None]:
        """A two-layer BERT of 12 tokens at random, x_t (3, 8) with masks among the ids."""
        _transformers()
        hf = {"model_type": "bert", "vocab_size": 12, "hidden_size": 16, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 24, "max_position_embeddings": 16,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # fmt: skip
        x_t = torch.randint(0, 13, (3, 8), generator=generator)
        return HFMaskedLMConfig(hf, mask_token_id=3), x_t, torch.rand(3, generator=generator), None

    def forward(self, x_t: Tensor, t: Tensor | float | None = None, cond: Any = None) -> Tensor:
        """x_t (B, L) -> logits (B, L, V) float32; ``cond["padding_mask"]`` (B, L) True where a
        token is real (as the library's transformer reads it), if given."""
        V = self.config.num_classes
        ids = torch.where(x_t >= V, torch.full_like(x_t, self.config.mask_token_id), x_t)
        kwargs: dict[str, Any] = {"input_ids": ids}
        if isinstance(cond, dict) and cond.get("padding_mask") is not None:
            if not self._attention:
                raise ValueError("this model's forward takes no attention_mask: pad nothing")
            kwargs["attention_mask"] = cond["padding_mask"].long()
        if self._timesteps:
            B = x_t.shape[0]
            if t is None:
                t = torch.zeros(B, device=x_t.device)
            elif not isinstance(t, Tensor) or t.dim() == 0:
                t = torch.full((B,), float(t), device=x_t.device)
            kwargs["timesteps"] = t
        out = self.model(**kwargs)
        logits = (out if isinstance(out, Tensor) else out.logits).float()
        if self.config.mask_appended:
            return logits[..., :V]  # the mask, the last id, is no class
        never = torch.zeros(V, dtype=torch.bool, device=logits.device)
        never[self.config.mask_token_id] = True
        return logits.masked_fill(never, _NEVER)


def _mask_id(tf: Any, name_or_path: str, hf_config: Any) -> int:
    """The mask token id of a published model: its config's, else its tokenizer's (one of the
    model's own vocabulary size only); ValueError when neither names one."""
    mask = getattr(hf_config, "mask_token_id", None)
    if mask is None:
        try:
            tok = tf.AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError):
            tok = None
        # a folder without tokenizer files can still yield a default tokenizer: only one of the
        # model's own vocabulary size is believed
        if tok is not None and len(tok) == hf_config.vocab_size:
            mask = tok.mask_token_id
    if mask is None:
        raise ValueError(f"{name_or_path!r} names no mask token: pass mask_token_id=")
    return int(mask)


def _source(name_or_path: str) -> str:
    """A folder as its absolute path (a run rebuilds from it wherever it runs), else the id."""
    import os

    return os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else str(name_or_path)


def _rebuild(config: HFMaskedLMConfig) -> nn.Module:
    """The model of ``config`` with fresh weights: from its config where transformers knows the
    architecture, else (custom code) from its recorded source."""
    tf = _transformers()
    hf = dict(config.hf_config)
    kind = hf.pop("model_type")
    try:
        made = tf.AutoConfig.for_model(kind, **hf)
    except ValueError:
        if config.source is None:
            raise ValueError(
                f"transformers does not know model_type {kind!r} and the config records no "
                "source to load its code from"
            ) from None
        return tf.AutoModelForMaskedLM.from_pretrained(
            config.source, trust_remote_code=config.trust_remote_code
        )
    return tf.AutoModelForMaskedLM.from_config(made)


def _register() -> None:
    from discdiff.nn import register_denoiser

    register_denoiser("hf-masked-lm", HFMaskedLM, HFMaskedLMConfig)


_register()
