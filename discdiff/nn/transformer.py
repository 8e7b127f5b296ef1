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

Block diffusion (``block_size=S``, BD3-LM, Arriola et al. 2025): the sequence is cut into
blocks of S positions, each denoised given the clean blocks before it, so the model is
autoregressive over blocks and a diffusion model within one. In training and scoring the
clean ids come in ``cond["x0"]`` and the network runs once over [x_t ; x_0] (2L tokens, the
same rotary positions for both halves) under one mask: a noisy position sees its own noisy
block and the clean blocks before it, a clean position the clean blocks up to its own; the
logits are the noisy half's. In sampling, :meth:`TransformerDenoiser.extend_cache` runs each
finished block once and keeps its keys and values, and ``cond["kv"]`` (that cache) lets the
next block's steps run on its S positions alone (:func:`discdiff.samplers.sample_block_diffusion`).
A block model is never told t: the cached keys serve every step.
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
    block_size: S > 0 makes a block-diffusion model (see the module docstring); it needs
    time_conditioning off, no grid, no causal mask and no self-conditioning.
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
    block_size: int = 0

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

        b = self.block_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise ValueError(f"block_size must be an int >= 0, got {b!r}")
        if b:
            if b > self.max_len:
                raise ValueError(f"block_size {b} exceeds max_len {self.max_len}")
            if self.causal or self.grid is not None or self.self_conditioning:
                raise ValueError(
                    "block_size > 0 (block diffusion) needs a sequence model without causal, "
                    "grid or self_conditioning"
                )
            if self.time_conditioning:
                raise ValueError(
                    "block_size > 0 (block diffusion) needs time_conditioning=False: the keys of "
                    "finished blocks are cached and serve every step"
                )

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
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        past: tuple[Tensor, Tensor] | None = None,
        kept: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """x (B, L, D); cos, sin (L, hd); mask (B, 1, L, L) bool True = attend, or None.
        ``past``: keys and values (B, H, T, hd) before x's, attended to as well (a cache);
        ``kept``: a list that receives x's own keys and values."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim)  # (B, L, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, hd) each
        q = apply_rotary(q, cos, sin, self.sections)
        k = apply_rotary(k, cos, sin, self.sections)
        if kept is not None:
            kept.append((k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)  # (B, H, T + L, hd)
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
        self,
        x: Tensor,
        c: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        past: tuple[Tensor, Tensor] | None = None,
        kept: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """x (B, L, D), c (B, cond_dim) -> (B, L, D); ``past`` and ``kept`` as in Attention."""
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)  # (B, D) each
        h = self.attn(modulate(self.norm1(x), sh1, sc1), cos, sin, mask, is_causal, past, kept)
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
            unknown = set(cond) - {"padding_mask", "label", "self_cond", "x0", "kv"}
            if unknown:
                raise ValueError(
                    f"unknown cond keys {sorted(unknown)}; expected padding_mask, label, "
                    f"self_cond, x0, kv"
                )
            padding_mask = padding_mask if padding_mask is not None else cond.get("padding_mask")
            label = label if label is not None else cond.get("label")
        self_cond = cond.get("self_cond") if cond is not None else None
        if self_cond is not None and self.self_cond is None:
            raise ValueError("got cond['self_cond'] but the model has self_conditioning = False")
        x0 = cond.get("x0") if cond is not None else None
        kv = cond.get("kv") if cond is not None else None
        c = self._conditioning(B, t, label, x_t.device)  # (B, cond_dim)
        if cfg.block_size:
            return self._block_forward(x_t, x0, kv, c, padding_mask)
        if x0 is not None or kv is not None:
            raise ValueError(
                "cond['x0'] and cond['kv'] are for block-diffusion models (block_size > 0)"
            )

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
        out = self._logits(self._trunk(h, c, cos, sin, mask, cfg.causal), c)  # (B, Lt, p*p*K)
        return self._from_patches(out) if cfg.patch > 1 else out  # (B, L, K)

    def _conditioning(self, B: int, t: Any, label: Tensor | None, device: torch.device) -> Tensor:
        """The conditioning vector c (B, cond_dim): time (if time-conditioned) + label."""
        c = torch.zeros(B, self.config.cond_dim, device=device)
        if self.time is not None:
            if t is None:
                raise ValueError("t is required unless the model is causal or time-free")
            if not isinstance(t, Tensor):
                t = torch.full((B,), float(t), device=device)
            elif t.dim() == 0:
                t = t.expand(B)
            if t.shape != (B,):
                raise ValueError(f"t must have shape ({B},), got {tuple(t.shape)}")
            c = c + self.time(t)
        if self.label is not None:
            if label is not None and label.shape != (B,):
                raise ValueError(f"label must have shape ({B},), got {tuple(label.shape)}")
            c = c + self.label(label, B, device)
        elif label is not None:
            raise ValueError("got a label but the model has num_labels = 0")
        return c

    def _trunk(
        self,
        h: Tensor,
        c: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        past: dict[str, Any] | None = None,
        kept: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """The blocks over h (B, L, D); ``past`` a cache (:meth:`empty_cache`), ``kept`` a
        list that receives every layer's keys and values of h."""
        recompute = self.config.grad_checkpointing and self.training and torch.is_grad_enabled()
        for i, blk in enumerate(self.blocks):
            if recompute and past is None and kept is None:
                h = checkpoint(blk, h, c, cos, sin, mask, is_causal, use_reentrant=False)
            else:
                layer = None if past is None else (past["k"][:, i], past["v"][:, i])
                h = blk(h, c, cos, sin, mask, is_causal, layer, kept)
        return h

    def _logits(self, h: Tensor, c: Tensor) -> Tensor:
        """Final adaLN norm and head: (B, L, D) -> float32 (B, L, p*p*K)."""
        shift, scale = self.ada_out(c).chunk(2, dim=-1)  # (B, D) each
        return self.head(modulate(self.norm_out(h), shift, scale)).float()

    # -- block diffusion ----------------------------------------------------------------------
    def _block_forward(
        self,
        x_t: Tensor,
        x0: Tensor | None,
        kv: dict[str, Any] | None,
        c: Tensor,
        padding_mask: Tensor | None,
    ) -> Tensor:
        """Logits (B, L, K) of a block model: over [x_t ; x0] under the block mask, or of x_t
        as the block after a cache's positions."""
        B, L = x_t.shape
        if kv is not None:
            if x0 is not None or padding_mask is not None:
                raise ValueError("cond['kv'] (a cache) takes no x0 and no padding_mask")
            _check_cache(kv, self, B)
            cos, sin = self._rope(int(kv["start"]), L)
            return self._logits(self._trunk(self.embed(x_t), c, cos, sin, None, False, kv), c)
        if x0 is None:
            raise ValueError(
                "a block-diffusion model needs the clean ids cond['x0'] (training, scoring) or a "
                "cache cond['kv'] (sampling block by block: discdiff.samplers.sample_block_diffusion)"
            )
        if not isinstance(x0, Tensor) or x0.shape != x_t.shape:
            raise ValueError(
                f"cond['x0'] must be the clean ids of x_t's shape {tuple(x_t.shape)}, got "
                f"{tuple(getattr(x0, 'shape', ()))}"
            )
        h = self.embed(torch.cat([x_t, x0.to(x_t.dtype)], 1))  # (B, 2L, D)
        cos = self.rope_cos[:L].repeat(2, 1)  # (2L, hd): both halves at positions 0..L-1
        sin = self.rope_sin[:L].repeat(2, 1)
        mask = self._block_mask(L, x_t.device)  # (2L, 2L)
        if padding_mask is not None:
            if padding_mask.shape != (B, L) or padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"padding_mask must be a ({B}, {L}) bool tensor, got "
                    f"{tuple(padding_mask.shape)} {padding_mask.dtype}"
                )
            keys = padding_mask.repeat(1, 2)[:, None, None, :]  # (B, 1, 1, 2L)
            eye = torch.eye(2 * L, dtype=torch.bool, device=x_t.device)
            mask = mask & keys | eye  # (B, 1, 2L, 2L)
        h = self._trunk(h, c, cos, sin, mask, False)
        return self._logits(h[:, :L], c)  # the noisy half

    def _block_mask(self, L: int, device: torch.device) -> Tensor:
        """(2L, 2L) bool, True = attend: noisy block b sees itself and clean blocks < b, clean
        block b the clean blocks <= b (kept per length and device)."""
        key = (L, str(device))
        masks = self.__dict__.setdefault("_block_masks", {})
        if key not in masks:
            blk = torch.arange(L, device=device) // self.config.block_size
            same = blk[:, None] == blk[None, :]
            before = blk[None, :] < blk[:, None]
            upto = same | before
            top = torch.cat([same, before], 1)  # noisy queries
            bottom = torch.cat([torch.zeros_like(same), upto], 1)  # clean queries
            masks[key] = torch.cat([top, bottom], 0)
        return masks[key]

    def _rope(self, start: int, n: int) -> tuple[Tensor, Tensor]:
        """cos, sin (n, hd) for positions start..start+n-1 (past max_len: computed)."""
        if start + n <= self.rope_cos.shape[0]:
            return self.rope_cos[start : start + n], self.rope_sin[start : start + n]
        cos, sin = rotary_tables_1d(n, self.config.head_dim, self.config.rope_base, start=start)
        return cos.to(self.rope_cos.device), sin.to(self.rope_sin.device)

    def empty_cache(self, batch: int, device: torch.device | str | None = None) -> dict[str, Any]:
        """A block model's key/value cache holding nothing: ``{"k", "v"}`` (B, layers, H, 0, hd)
        and ``start``, the position of the next block (0)."""
        if not self.config.block_size:
            raise ValueError("a key/value cache is for block-diffusion models (block_size > 0)")
        cfg = self.config
        p = next(self.parameters())
        shape = (batch, cfg.num_layers, cfg.num_heads, 0, cfg.head_dim)
        device = p.device if device is None else torch.device(device)
        z = torch.zeros(shape, dtype=p.dtype, device=device)
        return {"k": z, "v": z.clone(), "start": 0}

    @torch.no_grad()
    def extend_cache(
        self, ids: Tensor, cache: dict[str, Any], *, label: Tensor | None = None
    ) -> dict[str, Any]:
        """The cache with the finished block ``ids`` (B, n) added: its keys and values at every
        layer, given the cache's blocks (one pass over n positions)."""
        B, n = ids.shape
        _check_cache(cache, self, B)
        c = self._conditioning(B, None, label, ids.device)
        cos, sin = self._rope(int(cache["start"]), n)
        kept: list[tuple[Tensor, Tensor]] = []
        self._trunk(self.embed(ids), c, cos, sin, None, False, cache, kept)
        k = torch.cat([cache["k"], torch.stack([k for k, _ in kept], 1)], 3)
        v = torch.cat([cache["v"], torch.stack([v for _, v in kept], 1)], 3)
        return {"k": k, "v": v, "start": int(cache["start"]) + n}

    @torch.no_grad()
    def context_cache(
        self, ids: Tensor, start: int = 0, *, label: Tensor | None = None
    ) -> dict[str, Any]:
        """A fresh cache of the clean ids (B, T) at positions start..start+T-1, whole blocks
        from their first position (one pass under the clean blocks' mask): the context of a
        sequence past max_len, whose cache cannot simply drop its oldest keys (the keys of the
        later blocks have seen them)."""
        B, T = ids.shape
        c = self._conditioning(B, None, label, ids.device)
        cos, sin = self._rope(int(start), T)
        mask = self._block_mask(T, ids.device)[T:, T:]  # (T, T) clean block b sees blocks <= b
        kept: list[tuple[Tensor, Tensor]] = []
        self._trunk(self.embed(ids), c, cos, sin, mask, False, None, kept)
        k = torch.stack([k for k, _ in kept], 1)
        v = torch.stack([v for _, v in kept], 1)
        return {"k": k, "v": v, "start": int(start) + T}

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
    A block-diffusion model's training forward runs 2L tokens (x_t and x_0) for L ids: twice
    the figure at length 2L (its mask counted in full, as a causal one is).
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
    if config.block_size:
        return 2.0 * flops_per_token(
            dataclasses.replace(config, block_size=0, max_len=2 * L), 2 * L
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


def _check_cache(kv: Any, model: TransformerDenoiser, batch: int) -> None:
    """ValueError unless ``kv`` is a cache of ``model`` (:meth:`~TransformerDenoiser.empty_cache`)
    for ``batch`` rows."""
    cfg = model.config
    if not isinstance(kv, dict) or not {"k", "v", "start"} <= set(kv):
        raise ValueError("cond['kv'] must be a cache from empty_cache / extend_cache")
    want = (batch, cfg.num_layers, cfg.num_heads)
    for name in ("k", "v"):
        got = tuple(kv[name].shape)
        if got[:3] != want or got[4:] != (cfg.head_dim,):
            raise ValueError(
                f"cond['kv']['{name}'] has shape {got}; expected {want} + (T, {cfg.head_dim})"
            )
