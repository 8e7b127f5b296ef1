"""A bidirectional transformer denoiser for sequences and images (DiT / MDLM-style).

``TransformerDenoiser(config)(x_t, t, cond) -> logits`` with
- x_t: (B, L) long ids in [0, num_states) (num_states = K, or K + 1 with an absorbing mask);
- t: (B,) float in [0, 1] (a float scalar is broadcast);
- cond: optional dict with ``"padding_mask"`` (B, L) bool, True = real token (padded keys get
  no attention; outputs at padded positions are finite but meaningless) and ``"label"`` (B,)
  long in [0, num_labels] (``num_labels`` is the null id; a missing label means null);
- returns float32 logits (B, L, num_classes) over x_0.

Time enters through adaptive layer norm with zero-initialised gates (adaLN-Zero, Peebles &
Xie 2023): a sinusoidal embedding of 1000 t goes through an MLP (plus the label embedding)
to a conditioning vector that sets per-block shift, scale and gate. Positions are rotary:
1-D for sequences, or 2-D (half of each head's dimensions per axis) for a row-major
flattened H x W image when ``grid=(H, W)``.

Patches (``patch=p`` with a grid, as in ViT/DiT): each p x p block of pixels becomes one token
(the sum of one embedding per pixel and in-patch position), attention runs over the
(H/p) x (W/p) patch grid, and the head emits p*p pixel distributions per token. Input and output
stay per pixel (B, H*W) -> (B, H*W, K); the cost per image drops about p^2-fold (attention p^4).

Causal mode (``causal=True``): the same network as an autoregressive yardstick. Attention is
masked so position i sees only positions <= i, and the logits at position i are a
distribution over the NEXT token x[i + 1] given x[<= i]; the logits at the last position
predict a token past the end and are unused. ``t`` is ignored (may be None). To score a
sequence, feed [BOS, x_0, ..., x_{L-2}] and read the logits against [x_0, ..., x_{L-1}].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from discdiff.nn.embeddings import (
    LabelEmbedder,
    TimestepEmbedder,
    apply_rotary,
    modulate,
    rotary_tables_1d,
    rotary_tables_2d,
)

__all__ = ["TransformerConfig", "TransformerDenoiser", "flops_per_token"]


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of :class:`TransformerDenoiser` (JSON round trip via to_dict/from_dict).

    num_states: input ids per position (K, or K + 1 with the absorbing mask).
    num_classes: K, the classes the output logits range over.
    grid: (H, W) for images: 2-D rotary positions over a row-major H*W sequence.
    num_labels: number of class labels for conditioning (0 = unconditional model).
    cond_dim: width of the time/label conditioning vector that drives adaLN.
    causal: autoregressive mode (see the module docstring for the shift convention).
    time_conditioning: feed t through adaLN. MDLM shows absorbing models need no time input
    (the mask count carries it); without it the output depends on x_t alone, which makes the
    caching sampler exact.
    self_conditioning: the model also takes its previous x_0 estimate, ``cond["self_cond"]``
    (B, L, num_classes) probabilities (zeros: none), added to the token embeddings through a
    zero-initialised linear map (Chen et al. 2022); see :class:`discdiff.nn.SelfConditioned`.
    grad_checkpointing: in training, keep only each block's input and recompute its
    activations in the backward pass (``torch.utils.checkpoint``): activation memory falls
    from about num_layers blocks' worth to one, for about a third more compute. Same
    gradients (dropout masks are replayed).
    """

    num_states: int
    num_classes: int
    num_layers: int = 6
    d_model: int = 384
    num_heads: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_len: int = 256
    grid: tuple[int, int] | None = None
    num_labels: int = 0
    cond_dim: int = 128
    causal: bool = False
    time_conditioning: bool = True
    time_scale: float = 1000.0
    rope_base: float = 10000.0
    patch: int = 1
    grad_checkpointing: bool = False
    self_conditioning: bool = False

    def __post_init__(self) -> None:
        for name in (
            "num_states",
            "num_classes",
            "num_layers",
            "d_model",
            "num_heads",
            "max_len",
            "cond_dim",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {v!r}")
        if self.num_classes > self.num_states:
            raise ValueError(
                f"num_classes ({self.num_classes}) must be <= num_states ({self.num_states})"
            )
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})"
            )
        head_dim = self.d_model // self.num_heads
        if self.grid is not None:
            grid = tuple(self.grid)
            if len(grid) != 2 or not all(isinstance(g, int) and g >= 1 for g in grid):
                raise ValueError(f"grid must be (H, W) with positive ints, got {self.grid!r}")
            object.__setattr__(self, "grid", grid)
            if head_dim % 4:
                raise ValueError(f"2-D rotary needs head_dim % 4 == 0, got head_dim {head_dim}")
        elif head_dim % 2:
            raise ValueError(f"rotary needs an even head_dim, got {head_dim}")
        if not (self.mlp_ratio > 0):
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not isinstance(self.num_labels, int) or self.num_labels < 0:
            raise ValueError(f"num_labels must be an int >= 0, got {self.num_labels!r}")
        if not isinstance(self.self_conditioning, bool):
            raise ValueError(f"self_conditioning must be a bool, got {self.self_conditioning!r}")
        if self.self_conditioning and self.patch > 1:
            raise ValueError("self_conditioning works on per-token inputs: it needs patch = 1")
        if not isinstance(self.grad_checkpointing, bool):
            raise ValueError(f"grad_checkpointing must be a bool, got {self.grad_checkpointing!r}")
        if not isinstance(self.patch, int) or isinstance(self.patch, bool) or self.patch < 1:
            raise ValueError(f"patch must be a positive int, got {self.patch!r}")
        if self.patch > 1:
            if self.grid is None or self.causal:
                raise ValueError("patch > 1 needs a grid (an image) and a non-causal model")
            if self.grid[0] % self.patch or self.grid[1] % self.patch:
                raise ValueError(f"patch {self.patch} does not divide the grid {self.grid}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def seq_len(self) -> int:
        """Longest input accepted: H*W with a grid, else max_len."""
        return self.grid[0] * self.grid[1] if self.grid is not None else self.max_len

    @property
    def token_grid(self) -> tuple[int, int] | None:
        """(H/p, W/p): the grid the attention runs over (the pixel grid when patch = 1)."""
        if self.grid is None:
            return None
        return self.grid[0] // self.patch, self.grid[1] // self.patch

    @property
    def mlp_dim(self) -> int:
        return int(round(self.mlp_ratio * self.d_model))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (grid as a list)."""
        d = dataclasses.asdict(self)
        if d["grid"] is not None:
            d["grid"] = list(d["grid"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass)."""
        if not isinstance(d, dict):
            raise TypeError(f"TransformerConfig.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown TransformerConfig keys {unknown}; expected some of {sorted(known)}"
            )
        d = dict(d)
        if d.get("grid") is not None:
            d["grid"] = tuple(d["grid"])
        return cls(**d)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions, via scaled_dot_product_attention."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.sections = 2 if cfg.grid is not None else 1
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        """x (B, L, D); cos, sin (L, hd); mask (B, 1, L, L) bool True = attend, or None."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim)  # (B, L, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, hd) each
        q = apply_rotary(q, cos, sin, self.sections)
        k = apply_rotary(k, cos, sin, self.sections)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )  # (B, H, L, hd)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.proj(y)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation from a conditioning vector."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.mlp_dim, d)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cfg.cond_dim, 6 * d))

    def forward(
        self, x: Tensor, c: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        """x (B, L, D), c (B, cond_dim) -> (B, L, D)."""
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)  # (B, D) each
        h = self.attn(modulate(self.norm1(x), sh1, sc1), cos, sin, mask, is_causal)
        x = x + g1[:, None, :] * self.drop(h)
        h = self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x + g2[:, None, :] * self.drop(h)  # (B, L, D)


class TransformerDenoiser(nn.Module):
    """Transformer over (B, L) ids -> (B, L, K) logits over x_0; see the module docstring."""

    @classmethod
    def conformance_example(
        cls, generator: torch.Generator
    ) -> tuple[TransformerConfig, Tensor, Tensor, dict[str, Tensor] | None]:
        """(a small config, x_t (3, 8) ids with masks among them, t (3,), cond): what the
        denoiser conformance suite (tests/conformance/test_denoisers.py) runs it on."""
        cfg = TransformerConfig(num_states=7, num_classes=6, num_layers=1, d_model=16,
                                num_heads=2, cond_dim=8, max_len=8)  # fmt: skip
        x_t = torch.randint(0, 7, (3, 8), generator=generator)
        return cfg, x_t, torch.rand(3, generator=generator), None

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        cfg = config
        pp = cfg.patch * cfg.patch
        # one table row per (in-patch position, state): a patch token sums p*p rows
        self.embed = nn.Embedding(pp * cfg.num_states, cfg.d_model)
        timed = cfg.time_conditioning and not cfg.causal
        self.time = TimestepEmbedder(cfg.cond_dim, time_scale=cfg.time_scale) if timed else None
        #: whether the output depends on t (samplers that reuse outputs check this)
        self.time_conditioned = timed
        self.label = LabelEmbedder(cfg.num_labels, cfg.cond_dim) if cfg.num_labels else None
        self.self_cond = (
            nn.Linear(cfg.num_classes, cfg.d_model, bias=False) if cfg.self_conditioning else None
        )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm_out = nn.LayerNorm(cfg.d_model, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(cfg.cond_dim, 2 * cfg.d_model))
        self.head = nn.Linear(cfg.d_model, pp * cfg.num_classes)
        self.register_buffer(
            "patch_offsets", torch.arange(pp) * cfg.num_states, persistent=False
        )  # (p*p,)
        if cfg.token_grid is not None:
            gh, gw = cfg.token_grid
            cos, sin = rotary_tables_2d(gh, gw, cfg.head_dim, cfg.rope_base)
        else:
            cos, sin = rotary_tables_1d(cfg.max_len, cfg.head_dim, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)  # (seq_len, hd)
        self.register_buffer("rope_sin", sin, persistent=False)  # (seq_len, hd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, zero biases; adaLN projections and the output head start at zero,
        so every block starts as the identity and the initial prediction is uniform."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        if self.self_cond is not None:
            nn.init.zeros_(self.self_cond.weight)  # starts as the model without it
        for blk in self.blocks:
            nn.init.zeros_(blk.ada[1].weight)
            nn.init.zeros_(blk.ada[1].bias)
        nn.init.zeros_(self.ada_out[1].weight)
        nn.init.zeros_(self.ada_out[1].bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def null_label(self) -> int:
        """Label id meaning "unconditional" (classifier-free guidance)."""
        if self.label is None:
            raise ValueError("this denoiser has num_labels = 0: it takes no labels")
        return self.label.null_label

    def set_grad_checkpointing(self, enabled: bool = True) -> TransformerDenoiser:
        """Turn gradient checkpointing on or off (see :class:`TransformerConfig`); returns self."""
        self.config = dataclasses.replace(self.config, grad_checkpointing=bool(enabled))
        return self

    def forward(
        self,
        x_t: Tensor,
        t: Tensor | float | None,
        cond: dict[str, Tensor | None] | None = None,
        *,
        padding_mask: Tensor | None = None,
        label: Tensor | None = None,
    ) -> Tensor:
        """x_t (B, L) long, t (B,) float in [0, 1] -> logits (B, L, num_classes) float32.

        ``padding_mask`` (B, L) bool (True = real) and ``label`` (B,) long may be given in
        ``cond`` or as keywords (keywords win).
        """
        cfg = self.config
        if not isinstance(x_t, Tensor) or x_t.dim() != 2:
            raise ValueError(f"x_t must be a (B, L) id tensor, got {getattr(x_t, 'shape', x_t)!r}")
        if x_t.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"x_t must hold integer ids (int64/int32), got dtype {x_t.dtype}")
        B, L = x_t.shape
        if L > cfg.seq_len:
            raise ValueError(f"sequence length {L} exceeds the model's maximum {cfg.seq_len}")
        if cfg.patch > 1 and L != cfg.seq_len:
            raise ValueError(
                f"a patched model takes whole {cfg.grid[0]}x{cfg.grid[1]} images "
                f"({cfg.seq_len} ids), got length {L}"
            )
        if cond is not None:
            if not isinstance(cond, dict):
                raise TypeError(f"cond must be a dict or None, got {type(cond).__name__}")
            unknown = set(cond) - {"padding_mask", "label", "self_cond"}
            if unknown:
                raise ValueError(
                    f"unknown cond keys {sorted(unknown)}; expected padding_mask, label, self_cond"
                )
            padding_mask = padding_mask if padding_mask is not None else cond.get("padding_mask")
            label = label if label is not None else cond.get("label")
        self_cond = cond.get("self_cond") if cond is not None else None
        if self_cond is not None and self.self_cond is None:
            raise ValueError("got cond['self_cond'] but the model has self_conditioning = False")

        # conditioning vector c (B, cond_dim): time (if time-conditioned) + label
        c = torch.zeros(B, cfg.cond_dim, device=x_t.device)
        if self.time is not None:
            if t is None:
                raise ValueError("t is required unless the model is causal or time-free")
            if not isinstance(t, Tensor):
                t = torch.full((B,), float(t), device=x_t.device)
            elif t.dim() == 0:
                t = t.expand(B)
            if t.shape != (B,):
                raise ValueError(f"t must have shape ({B},), got {tuple(t.shape)}")
            c = c + self.time(t)
        if self.label is not None:
            if label is not None and label.shape != (B,):
                raise ValueError(f"label must have shape ({B},), got {tuple(label.shape)}")
            c = c + self.label(label, B, x_t.device)
        elif label is not None:
            raise ValueError("got a label but the model has num_labels = 0")

        # attention mask (B, 1, L, L) True = attend; every query may attend to itself so that
        # fully padded rows stay finite (this changes nothing for real queries).
        mask = None
        if padding_mask is not None and cfg.patch > 1:
            raise ValueError("a patched model takes whole images: padding_mask is not supported")
        if padding_mask is not None:
            if padding_mask.shape != (B, L) or padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"padding_mask must be a ({B}, {L}) bool tensor, got "
                    f"{tuple(padding_mask.shape)} {padding_mask.dtype}"
                )
            eye = torch.eye(L, dtype=torch.bool, device=x_t.device)  # (L, L)
            mask = padding_mask[:, None, None, :] | eye  # (B, 1, L, L)
            if cfg.causal:
                mask = mask & torch.ones(L, L, dtype=torch.bool, device=x_t.device).tril()

        if cfg.patch > 1:
            h = self.embed(self._to_patches(x_t) + self.patch_offsets).sum(2)  # (B, Lp, D)
        else:
            h = self.embed(x_t)  # (B, L, D)
        if self_cond is not None:
            want = (B, L, cfg.num_classes)
            if tuple(self_cond.shape) != want:
                raise ValueError(f"self_cond must have shape {want}, got {tuple(self_cond.shape)}")
            h = h + self.self_cond(self_cond.to(h.dtype))
        Lt = h.shape[1]
        cos, sin = self.rope_cos[:Lt], self.rope_sin[:Lt]  # (Lt, hd)
        recompute = cfg.grad_checkpointing and self.training and torch.is_grad_enabled()
        for blk in self.blocks:
            if recompute:
                h = checkpoint(blk, h, c, cos, sin, mask, cfg.causal, use_reentrant=False)
            else:
                h = blk(h, c, cos, sin, mask, cfg.causal)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)  # (B, D) each
        h = modulate(self.norm_out(h), shift, scale)  # (B, Lt, D)
        out = self.head(h).float()  # (B, Lt, p*p*K)
        return self._from_patches(out) if cfg.patch > 1 else out  # (B, L, K)

    def _to_patches(self, x: Tensor) -> Tensor:
        """Row-major pixels (B, H*W) -> (B, Lp, p*p), patches and in-patch pixels row-major."""
        (gh, gw), p = self.config.token_grid, self.config.patch
        x = x.reshape(x.shape[0], gh, p, gw, p).permute(0, 1, 3, 2, 4)  # (B, gh, gw, p, p)
        return x.reshape(x.shape[0], gh * gw, p * p)

    def _from_patches(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`_to_patches` for logits: (B, Lp, p*p*K) -> (B, H*W, K)."""
        (gh, gw), p = self.config.token_grid, self.config.patch
        B, K = y.shape[0], self.config.num_classes
        y = y.reshape(B, gh, gw, p, p, K).permute(0, 1, 3, 2, 4, 5)  # (B, gh, p, gw, p, K)
        return y.reshape(B, gh * p * gw * p, K)


def flops_per_token(config: TransformerConfig, seq_len: int | None = None) -> float:
    """Forward-pass matmul FLOPs per token (per pixel for images) for ``seq_len`` ids.

    2 FLOPs per multiply-add: 2 x (weights used per token: qkv, proj, MLP, output head)
    + attention 4 * L * d_model per layer (QK^T and AV, counted in full even when causal, the
    usual convention) + the per-sequence adaLN and time MLP spread over the L tokens.
    With patches the network runs on L / p^2 tokens and the figure is divided by p^2.
    Embedding look-ups cost nothing. Training (forward + backward) is about 3x this.
    """
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
    L = config.seq_len if seq_len is None else seq_len
    if not isinstance(L, int) or L < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    pp = config.patch * config.patch
    if L % pp:
        raise ValueError(
            f"seq_len {L} is not a whole number of {config.patch}x{config.patch} patches"
        )
    Lt = L // pp  # tokens the network runs on
    d, n, m = config.d_model, config.num_layers, config.mlp_dim
    per_layer = 3 * d * d + d * d + 2 * d * m  # qkv, proj, mlp weights
    dense = n * per_layer + d * config.num_classes * pp  # + output head
    attn = n * 2 * Lt * d  # multiply-adds in QK^T and AV
    per_seq = (n * 6 * d + 2 * d) * config.cond_dim  # adaLN projections
    if not config.causal:
        per_seq += 256 * config.cond_dim + config.cond_dim**2  # time MLP
    return 2.0 * (dense + attn + per_seq / Lt) / pp
