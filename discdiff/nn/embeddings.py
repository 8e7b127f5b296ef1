"""Building blocks shared by the denoisers: time and label embeddings, rotary positions.

Everything here is shape-driven (no branching on tensor values), so the modules that use it
stay free of graph breaks under ``torch.compile``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from discdiff.checks import reads_are_free

__all__ = [
    "sinusoidal_embedding",
    "TimestepEmbedder",
    "check_unit_time",
    "LabelEmbedder",
    "rotary_tables_1d",
    "rotary_tables_2d",
    "apply_rotary",
    "modulate",
]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of a (B,) float tensor, (B, dim), as in "Attention is all you need".

    ``t`` is used as given (callers scale time in [0, 1] up, e.g. by 1000, so the lowest
    frequencies still separate nearby times). Computed in float32 whatever the autocast state.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be an even integer >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )  # (dim/2,)
    args = t.float()[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


def check_unit_time(t: Tensor) -> None:
    """ValueError unless every t lies in [0, 1] (a denoiser given t = 1000 by mistake would
    otherwise embed it silently). Checked on the CPU only: on an accelerator it would cost a
    host sync per call, and under torch.compile it would be a data-dependent branch (a graph
    break; an error with fullgraph=True)."""
    if not t.numel() or not reads_are_free(t):
        return
    bad = (t < 0) | (t > 1) | t.isnan()
    if bool(bad.any()):
        raise ValueError(f"the denoiser was given t = {t[bad][0].item()}; times lie in [0, 1]")


class TimestepEmbedder(nn.Module):
    """Time t in [0, 1] (B,) -> conditioning vector (B, out_dim): sinusoid(t * scale) then MLP."""

    def __init__(self, out_dim: int, freq_dim: int = 256, time_scale: float = 1000.0) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_scale = time_scale
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, t: Tensor) -> Tensor:
        """(B,) float -> (B, out_dim)."""
        check_unit_time(t)
        freq = sinusoidal_embedding(t * self.time_scale, self.freq_dim)  # (B, freq_dim)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class label (B,) -> (B, dim), with one extra "null" id (= num_labels) for guidance.

    Classifier-free guidance trains with some labels replaced by ``null_label`` (done by the
    caller with its own generator) and samples by mixing conditional and null predictions.
    """

    def __init__(self, num_labels: int, dim: int) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.num_labels = num_labels
        self.table = nn.Embedding(num_labels + 1, dim)

    @property
    def null_label(self) -> int:
        """The id meaning "no label" (unconditional)."""
        return self.num_labels

    def forward(self, label: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """(B,) long ids in [0, num_labels] (or None: all null) -> (B, dim)."""
        if label is None:
            label = torch.full((batch,), self.num_labels, dtype=torch.long, device=device)
        return self.table(label)


def _angles(pos: Tensor, dim: int, base: float) -> Tensor:
    """Rotation angles (L, dim/2) for integer positions (L,), rotary frequencies over ``dim``."""
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    return pos.double()[:, None] * inv_freq[None, :]  # (L, dim/2)


def rotary_tables_1d(
    length: int, head_dim: int, base: float = 10000.0, start: int = 0
) -> tuple[Tensor, Tensor]:
    """cos, sin tables (length, head_dim) for rotary positions start..start+length-1 (one
    section)."""
    if head_dim % 2:
        raise ValueError(f"rotary positions need an even head dimension, got {head_dim}")
    ang = _angles(torch.arange(start, start + length), head_dim, base)  # (L, hd/2)
    ang = torch.cat([ang, ang], dim=-1)  # (L, hd): "rotate half" layout
    return ang.cos().float(), ang.sin().float()


def rotary_tables_2d(
    height: int, width: int, head_dim: int, base: float = 10000.0
) -> tuple[Tensor, Tensor]:
    """cos, sin tables (H*W, head_dim) for a row-major H x W grid (two sections).

    The first half of each head's dimensions rotates with the row index, the second half with
    the column index, so q.k depends only on the (row, column) offset between two pixels.
    """
    if head_dim % 4:
        raise ValueError(
            f"2-D rotary positions need a head dimension divisible by 4, got {head_dim}"
        )
    sec = head_dim // 2
    rows = torch.arange(height).repeat_interleave(width)  # (H*W,)
    cols = torch.arange(width).repeat(height)  # (H*W,)
    a_r = _angles(rows, sec, base)  # (HW, sec/2)
    a_c = _angles(cols, sec, base)  # (HW, sec/2)
    ang = torch.cat([a_r, a_r, a_c, a_c], dim=-1)  # (HW, hd)
    return ang.cos().float(), ang.sin().float()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, sections: int = 1) -> Tensor:
    """Rotate x (..., L, hd) by position tables (L, hd); hd is split into ``sections`` equal
    parts, each rotated "half against half" (GPT-NeoX layout). Keeps x's dtype."""
    shape = x.shape
    xs = x.reshape(*shape[:-1], sections, 2, shape[-1] // (2 * sections))  # (..., L, s, 2, d)
    x1, x2 = xs.unbind(dim=-2)  # (..., L, s, d) each
    rot = torch.stack([-x2, x1], dim=-2).reshape(shape)  # (..., L, hd)
    return x * cos.to(x.dtype) + rot * sin.to(x.dtype)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation: x (B, L, D) * (1 + scale) + shift with shift, scale (B, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]
