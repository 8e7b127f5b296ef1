"""A graph transformer denoiser for molecules, in the spirit of DiGress (Vignac et al. 2023).

``GraphTransformerDenoiser(config)(x_t, t, cond) -> logits`` with
- x_t: ``{"atoms": (B, N) long in [0, atom_num_states), "bonds": (B, E) long in
  [0, bond_num_states)}`` where E = N(N-1)/2 and bonds list the strict upper triangle of the
  N x N adjacency in the row-major order of ``torch.triu_indices(N, N, 1)``; the graph is
  symmetric by construction;
- t: (B,) float in [0, 1];
- cond: optional ``{"node_mask": (B, N) bool}``, True = real node. Everything that touches a
  padded node (its attention, its pairs, pooled statistics) is masked out, so real outputs do
  not depend on padded nodes;
- returns float32 ``{"atoms": (B, N, atom_num_classes), "bonds": (B, E, bond_num_classes)}``;
  bond logits are the average of the (i, j) and (j, i) predictions.

Inside: dense node features X (B, N, dx), edge features E (B, N, N, de) and a global vector
y (B, dy) that carries time and graph-level statistics. Each layer runs attention over nodes
whose per-dimension query-key products are modulated by the edge features (FiLM: QK * (1 +
E1) + E2), takes those modulated products as the new edge features, lets y FiLM both nodes and
edges, and updates y from pooled nodes and edges (mean, min, max, std). Time conditions the
network through y. The network is permutation equivariant: permuting the nodes permutes the
outputs the same way.

Optional structural features (``structural_features=True``, cheap: a few batched N x N
matmuls) come from the noisy adjacency A (bond ids that are neither ``no_bond_id`` nor an
extra state such as the mask): closed-walk counts diag(A^k), k = 2..6, per node (these hold
degrees and the k-cycle counts DiGress adds, mixed with tree-like walks), A^2 and A^3 per
pair (common neighbours, paths of length 3), and their per-graph averages.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from discdiff.categorical import one_hot
from discdiff.checks import reads_are_free
from discdiff.nn.embeddings import LabelEmbedder, check_unit_time, sinusoidal_embedding

__all__ = [
    "GraphTransformerConfig",
    "GraphTransformerDenoiser",
    "dense_bonds",
    "grow_bond_classes",
    "triu_bonds",
]

_NODE_FEATS = 5  # closed walks of length 2..6
_EDGE_FEATS = 2  # walks of length 2, 3
_GLOBAL_FEATS = 1 + _NODE_FEATS  # node count fraction + mean closed walks


@dataclass(frozen=True)
class GraphTransformerConfig:
    """Hyper-parameters of :class:`GraphTransformerDenoiser` (JSON via to_dict/from_dict).

    atom_num_states / bond_num_states: ids the noisy input can hold (K or K + 1 with a mask);
    atom_num_classes / bond_num_classes: the K each output ranges over.
    max_nodes: largest N accepted (also normalises the node-count feature).
    no_bond_id: the bond class meaning "no edge" (for the structural features).
    node_dim, edge_dim, global_dim: widths dx, de, dy; *_ff_dim: feed-forward widths.
    num_properties / property_bins: conditioning on P binned properties (0 = unconditional):
    ``cond["label"]`` (B, P) long in [0, property_bins], ``property_bins`` being the null id
    (classifier-free guidance); each property's embedding is added to the global vector y.
    """

    atom_num_states: int
    atom_num_classes: int
    bond_num_states: int
    bond_num_classes: int
    max_nodes: int
    num_layers: int = 9
    node_dim: int = 256
    edge_dim: int = 64
    global_dim: int = 64
    num_heads: int = 8
    node_ff_dim: int = 256
    edge_ff_dim: int = 128
    global_ff_dim: int = 128
    dropout: float = 0.0
    structural_features: bool = True
    no_bond_id: int = 0
    time_scale: float = 1000.0
    time_freq_dim: int = 128
    num_properties: int = 0
    property_bins: int = 0

    def __post_init__(self) -> None:
        for name in (
            "atom_num_states",
            "atom_num_classes",
            "bond_num_states",
            "bond_num_classes",
            "max_nodes",
            "num_layers",
            "node_dim",
            "edge_dim",
            "global_dim",
            "num_heads",
            "node_ff_dim",
            "edge_ff_dim",
            "global_ff_dim",
            "time_freq_dim",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"GraphTransformerConfig.{name} must be a positive int, got {v!r}")
        if self.atom_num_classes > self.atom_num_states:
            raise ValueError(
                f"atom_num_classes ({self.atom_num_classes}) must be <= atom_num_states "
                f"({self.atom_num_states})"
            )
        if self.bond_num_classes > self.bond_num_states:
            raise ValueError(
                f"bond_num_classes ({self.bond_num_classes}) must be <= bond_num_states "
                f"({self.bond_num_states})"
            )
        if self.node_dim % self.num_heads:
            raise ValueError(
                f"node_dim ({self.node_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if not (0 <= self.no_bond_id < self.bond_num_classes):
            raise ValueError(
                f"no_bond_id must lie in [0, {self.bond_num_classes}), got {self.no_bond_id}"
            )
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.time_freq_dim % 2:
            raise ValueError(f"time_freq_dim must be even, got {self.time_freq_dim}")
        for name in ("num_properties", "property_bins"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"GraphTransformerConfig.{name} must be an int >= 0, got {v!r}")
        if (self.num_properties > 0) != (self.property_bins > 0):
            raise ValueError("num_properties and property_bins must both be 0 or both be > 0")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphTransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(d, dict):
            raise TypeError(
                f"GraphTransformerConfig.from_dict expects a dict, got {type(d).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown GraphTransformerConfig keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**d)


def dense_bonds(bonds: Tensor, num_nodes: int, diagonal: int) -> Tensor:
    """Upper-triangle bond ids (B, E) -> symmetric dense ids (B, N, N), ``diagonal`` on i == j."""
    B = bonds.shape[0]
    iu, ju = torch.triu_indices(num_nodes, num_nodes, 1, device=bonds.device)  # (E,) each
    dense = torch.full((B, num_nodes, num_nodes), diagonal, dtype=bonds.dtype, device=bonds.device)
    dense[:, iu, ju] = bonds
    dense[:, ju, iu] = bonds
    return dense  # (B, N, N)


def triu_bonds(dense: Tensor) -> Tensor:
    """Dense pair tensor (B, N, N, ...) -> its strict upper triangle (B, E, ...), row-major."""
    N = dense.shape[1]
    iu, ju = torch.triu_indices(N, N, 1, device=dense.device)
    return dense[:, iu, ju]


def _masked_pool(h: Tensor, mask: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Mean, min, max, std of h over ``dims`` where mask is True -> (B, 4 * C).

    h (B, ..., C), mask (B, ...) bool. Empty sets give zeros (no NaN, no inf)."""
    m = mask[..., None].to(h.dtype)  # (B, ..., 1)
    count = m.sum(dim=dims).clamp_min(1.0)  # (B, 1)
    B, C = h.shape[0], h.shape[-1]
    flat_h, flat_m = h.reshape(B, -1, C), m.reshape(B, 1, -1)  # views
    mean = torch.bmm(flat_m, flat_h)[:, 0] / count  # (B, C): masked sum without a temporary
    dev = (flat_h - mean[:, None]).mul_(flat_m.transpose(1, 2))  # (B, M, C), 0 where masked
    var = (dev * dev).sum(dim=1) / count  # (vector_norm over dim 1 is ~60x slower on CPU)
    std = torch.sqrt(var + 1e-6)
    # masked-out entries pushed below (above) every real one by adding -big (+big): a
    # broadcast add, ~10x cheaper on CPU than masked_fill with a (B, ..., 1) mask
    big = torch.finfo(h.dtype).max / 4
    off = (~mask[..., None]).to(h.dtype) * big  # (B, ..., 1)
    hmax = (h - off).amax(dim=dims)  # (B, C)
    hmin = (h + off).amin(dim=dims)  # (B, C)
    nonempty = mask.flatten(1).any(dim=1)[:, None]  # (B, 1)
    hmax = torch.where(nonempty, hmax, torch.zeros_like(hmax))
    hmin = torch.where(nonempty, hmin, torch.zeros_like(hmin))
    return torch.cat([mean, hmin, hmax, std], dim=-1)


def _pair_linear(x: Tensor, lin: nn.Linear, shift: float = 0.0) -> Tensor:
    """``lin(x) + shift`` for a large (B, N, N, C) pair tensor, the shift folded into the bias
    (one GEMM with its bias: measured as fast as the bare product on CPU, where a product
    then an in-place bias add is a second pass over the largest tensors of the model)."""
    return F.linear(x, lin.weight, lin.bias + shift if shift else lin.bias)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class GraphLayer(nn.Module):
    """One node/edge/global update: edge-modulated attention, FiLM by y, pooled y update,
    then post-norm residual feed-forwards (as DiGress's XEy transformer layer).

    ``update_global=False`` (the last layer) leaves y as it is and owns no y-update weights:
    nothing reads y after the last layer, and unused parameters would trip DDP."""

    def __init__(self, cfg: GraphTransformerConfig, update_global: bool = True) -> None:
        super().__init__()
        dx, de, dy = cfg.node_dim, cfg.edge_dim, cfg.global_dim
        self.num_heads = cfg.num_heads
        self.head_dim = dx // cfg.num_heads
        self.q = nn.Linear(dx, dx)
        self.k = nn.Linear(dx, dx)
        self.v = nn.Linear(dx, dx)
        self.e_mul = nn.Linear(de, dx)  # FiLM of edges on the QK products
        self.e_add = nn.Linear(de, dx)
        self.ye_mul = nn.Linear(dy, dx)  # FiLM of globals on the new edges
        self.ye_add = nn.Linear(dy, dx)
        self.yx_mul = nn.Linear(dy, dx)  # FiLM of globals on the new nodes
        self.yx_add = nn.Linear(dy, dx)
        self.x_out = nn.Linear(dx, dx)
        self.e_out = nn.Linear(dx, de)
        self.norm_x1, self.norm_x2 = nn.LayerNorm(dx), nn.LayerNorm(dx)
        self.norm_e1, self.norm_e2 = nn.LayerNorm(de), nn.LayerNorm(de)
        self.ff_x = _mlp(dx, cfg.node_ff_dim, dx)
        self.ff_e = _mlp(de, cfg.edge_ff_dim, de)
        self.update_global = update_global
        if update_global:
            self.y_y = nn.Linear(dy, dy)
            self.x_y = nn.Linear(4 * dx, dy)
            self.e_y = nn.Linear(4 * de, dy)
            self.y_out = _mlp(dy, dy, dy)
            self.norm_y1, self.norm_y2 = nn.LayerNorm(dy), nn.LayerNorm(dy)
            self.ff_y = _mlp(dy, cfg.global_ff_dim, dy)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        X: Tensor,
        E: Tensor,
        y: Tensor,
        node_mask: Tensor,
        pair_mask: Tensor,
        attend: Tensor,
        padded: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """X (B, N, dx), E (B, N, N, de), y (B, dy); node_mask (B, N), pair_mask (B, N, N)
        real off-diagonal pairs, attend (B, N, N) allowed keys j for query i. ``padded=False``
        says every node is real (node_mask all True): the masks are then all ones and the
        passes that apply them are skipped (the same values: x * 1 and x + 0 are exact).

        The pair tensors (B, N, N, .) dominate the cost; each is written as few times as the
        algebra allows: 1 + e_mul(E) from the bias, the QK product in one addcmul, the FiLM of
        y on the new edges folded into e_out's weights (one batched matmul), and, when no
        gradient is recorded, in place."""
        B, N, dx = X.shape
        inplace = not torch.is_grad_enabled()
        xm = pm = None  # (B, N, 1), (B, N, N, 1): real nodes, real pairs + the diagonal
        if padded:
            xm = node_mask[..., None].to(X.dtype)
            pm = pair_mask | torch.eye(N, dtype=torch.bool, device=X.device)  # (B, N, N)
            pm = (pm & node_mask[:, :, None])[..., None].to(X.dtype)

        q = (self.q(X) * (1.0 / math.sqrt(self.head_dim))).view(B, N, 1, dx)
        k = self.k(X).view(B, 1, N, dx)
        em = _pair_linear(E, self.e_mul, 1.0)  # 1 + e_mul(E), (B, N, N, dx)
        ea = _pair_linear(E, self.e_add)
        if inplace:  # per-dimension scores, heads side by side
            s = em.mul_(q).mul_(k).add_(ea)
        else:
            s = torch.addcmul(ea, q * k, em)
        del em, ea

        # e_out(ye_add(y) + (1 + ye_mul(y)) * s) = s @ (W * g)^T + (W @ ye_add(y) + b)
        gain = 1.0 + self.ye_mul(y)  # (B, dx)
        w = self.e_out.weight[None] * gain[:, None, :]  # (B, de, dx)
        b = F.linear(self.ye_add(y), self.e_out.weight, self.e_out.bias)  # (B, de)
        new_e = torch.baddbmm(b[:, None, :], s.view(B, N * N, dx), w.transpose(1, 2))
        new_e = new_e.view(B, N, N, -1)  # (B, N, N, de)
        if pm is not None:
            new_e = new_e * pm

        # -inf added at blocked keys (a broadcast add: far cheaper than masked_fill on CPU)
        blocked = None
        if padded:
            blocked = torch.zeros_like(attend, dtype=s.dtype).masked_fill_(~attend, -torch.inf)
            blocked = blocked[..., None]  # (B, N, N, 1)
        v = self.v(X).view(B, 1, N, dx)
        if inplace:  # softmax over keys j in s's own memory, normalised after the sum over j
            if blocked is not None:
                s.add_(blocked)
            s.sub_(s.amax(dim=2, keepdim=True)).exp_()  # a node always attends to itself
            wv = s.sum(dim=2)  # (B, N, dx) normaliser, then the weighted values
            wv = torch.div(s.mul_(v).sum(dim=2), wv, out=wv)
        else:
            a = torch.softmax(s if blocked is None else s + blocked, dim=2)  # per dimension
            wv = (a * v).sum(dim=2)  # (B, N, dx)
        del s
        new_x = self.yx_add(y)[:, None] + (1 + self.yx_mul(y)[:, None]) * wv
        new_x = self.x_out(new_x)  # (B, N, dx)
        if xm is not None:
            new_x = new_x * xm

        if self.update_global:  # from the layer's inputs, as DiGress
            new_y = (
                self.y_y(y)
                + self.x_y(_masked_pool(X, node_mask, (1,)))
                + self.e_y(_masked_pool(E, pair_mask, (1, 2)))
            )
            y = self.norm_y1(y + self.drop(self.y_out(new_y)))  # (B, dy)
            y = self.norm_y2(y + self.drop(self.ff_y(y)))

        X = self.norm_x1(X + self.drop(new_x))
        new_e = self.drop(new_e)
        E = self.norm_e1(new_e.add_(E) if inplace else E + new_e)
        X = self.norm_x2(X + self.drop(self.ff_x(X)))
        E = self.norm_e2(E + self.drop(self._ff_e(E, inplace)))
        if xm is not None and pm is not None:
            X = X * xm
            E = E.mul_(pm) if inplace else E * pm
        return X, E, y

    def _ff_e(self, E: Tensor, inplace: bool) -> Tensor:
        """The edges' feed-forward (``ff_e``'s weights); the activation in place when no
        gradient is kept."""
        lin1, _, lin2 = self.ff_e
        h = _pair_linear(E, lin1)
        return _pair_linear(F.silu(h, inplace=True) if inplace else F.silu(h), lin2)


class GraphTransformerDenoiser(nn.Module):
    """Graph transformer over (atoms, bonds) ids -> per-field logits; see the module docstring."""

    @classmethod
    def conformance_example(
        cls, generator: torch.Generator
    ) -> tuple[GraphTransformerConfig, dict[str, Tensor], Tensor, dict[str, Tensor]]:
        """(a small config, x_t {"atoms": (3, 5), "bonds": (3, 10)} ids, t (3,), cond with a
        node mask): what the denoiser conformance suite runs it on."""
        cfg = GraphTransformerConfig(
            atom_num_states=5, atom_num_classes=4, bond_num_states=4, bond_num_classes=4,
            max_nodes=6, num_layers=2, node_dim=16, edge_dim=8, global_dim=8, num_heads=2,
            node_ff_dim=16, edge_ff_dim=8, global_ff_dim=8, time_freq_dim=8,
        )  # fmt: skip
        x_t = {
            "atoms": torch.randint(0, 5, (3, 5), generator=generator),
            "bonds": torch.randint(0, 4, (3, 10), generator=generator),
        }
        cond = {"node_mask": torch.ones(3, 5, dtype=torch.bool)}
        return cfg, x_t, torch.rand(3, generator=generator), cond

    def __init__(self, config: GraphTransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, GraphTransformerConfig):
            raise TypeError(f"config must be a GraphTransformerConfig, got {type(config).__name__}")
        self.config = cfg = config
        nf = _NODE_FEATS if cfg.structural_features else 0
        ef = _EDGE_FEATS if cfg.structural_features else 0
        gf = _GLOBAL_FEATS if cfg.structural_features else 1
        self.x_in = _mlp(cfg.atom_num_states + nf, cfg.node_dim, cfg.node_dim)
        # one extra bond id marks the diagonal (a node paired with itself)
        self.e_in = _mlp(cfg.bond_num_states + 1 + ef, cfg.edge_dim, cfg.edge_dim)
        self.y_in = _mlp(cfg.time_freq_dim + gf, cfg.global_dim, cfg.global_dim)
        self.layers = nn.ModuleList(
            GraphLayer(cfg, update_global=i < cfg.num_layers - 1) for i in range(cfg.num_layers)
        )
        # zero-initialised, so that adding conditioning to a trained model starts from it exactly
        self.labels = nn.ModuleList(
            LabelEmbedder(cfg.property_bins, cfg.global_dim) for _ in range(cfg.num_properties)
        )
        for emb in self.labels:
            nn.init.zeros_(emb.table.weight)
        self.x_head = _mlp(cfg.node_dim, cfg.node_dim, cfg.atom_num_classes)
        self.e_head = _mlp(cfg.edge_dim, cfg.edge_dim, cfg.bond_num_classes)

    @property
    def null_label(self) -> int:
        """The property-bin id meaning "no target" (classifier-free guidance)."""
        if not self.labels:
            raise ValueError("this denoiser has num_properties = 0: it takes no labels")
        return self.config.property_bins

    def _label_embedding(self, label: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """(B, P) bins (None: all null) -> (B, dy), the sum of the properties' embeddings."""
        P, bins = self.config.num_properties, self.config.property_bins
        if label is None:
            label = torch.full((batch, P), bins, dtype=torch.long, device=device)
        if not isinstance(label, Tensor) or label.shape != (batch, P) or label.is_floating_point():
            raise ValueError(
                f"cond['label'] must be a ({batch}, {P}) integer tensor of property bins, got "
                f"{getattr(label, 'shape', label)!r}"
            )
        return sum(emb(label[:, p].long(), batch, device) for p, emb in enumerate(self.labels))

    def _structure(
        self, bonds_dense: Tensor, node_mask: Tensor, pair_mask: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """Walk-count features of the noisy adjacency: node (B, N, 5), edge (B, N, N, 2),
        global (B, 6); (None, None, node-count fraction (B, 1)) when switched off.
        Float32, no gradient (they are functions of integer ids)."""
        cfg = self.config
        n_real = node_mask.sum(dim=1, keepdim=True).float()  # (B, 1)
        size = n_real / cfg.max_nodes  # (B, 1)
        if not cfg.structural_features:
            return None, None, size
        with torch.no_grad(), torch.autocast(bonds_dense.device.type, enabled=False):
            present = (bonds_dense != cfg.no_bond_id) & (bonds_dense < cfg.bond_num_classes)
            A = (present & pair_mask).float()  # (B, N, N), zero diagonal
            powers, P = [], A
            for _ in range(_NODE_FEATS):
                P = P @ A
                powers.append(P)  # A^2 .. A^6, (B, N, N) each
            walks = [torch.diagonal(P, dim1=1, dim2=2) for P in powers]  # (B, N) each
            node = torch.log1p(torch.stack(walks, dim=-1))  # (B, N, 5)
            edge = torch.log1p(torch.stack(powers[:_EDGE_FEATS], dim=-1))  # (B, N, N, 2)
            edge = edge * pair_mask[..., None]
            node = node * node_mask[..., None]
            glob = node.sum(dim=1) / n_real.clamp_min(1.0)  # (B, 5)
            glob = torch.cat([size, glob], dim=-1)  # (B, 6)
        return node, edge, glob

    def forward(
        self,
        x_t: dict[str, Tensor],
        t: Tensor | float,
        cond: dict[str, Tensor] | None = None,
        *,
        node_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """{"atoms": (B, N), "bonds": (B, E)} ids, t (B,) -> {"atoms": (B, N, Ka), "bonds":
        (B, E, Kb)} float32 logits. ``node_mask`` (B, N) bool via cond or keyword; ``label``
        (B, P) property bins via cond (absent: unconditional)."""
        cfg = self.config
        label = None
        if not isinstance(x_t, dict) or set(x_t) != {"atoms", "bonds"}:
            got = sorted(x_t) if isinstance(x_t, dict) else type(x_t).__name__
            raise ValueError(f"x_t must be a dict with keys 'atoms' and 'bonds', got {got}")
        atoms, bonds = x_t["atoms"], x_t["bonds"]
        for name, v in (("atoms", atoms), ("bonds", bonds)):
            if not isinstance(v, Tensor) or v.dim() != 2:
                raise ValueError(
                    f"x_t[{name!r}] must be a 2-D id tensor, got {getattr(v, 'shape', v)!r}"
                )
            if v.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"x_t[{name!r}] must hold integer ids, got dtype {v.dtype}")
        for name, v, high in (
            ("atoms", atoms, cfg.atom_num_states),
            ("bonds", bonds, cfg.bond_num_states),
        ):  # read only where it is free; on an accelerator the ids come from checked callers
            if v.numel() and reads_are_free(v) and not (0 <= int(v.min()) <= int(v.max()) < high):
                raise ValueError(f"x_t[{name!r}] has ids outside [0, {high})")
        B, N = atoms.shape
        if N > cfg.max_nodes:
            raise ValueError(f"{N} nodes exceed max_nodes = {cfg.max_nodes}")
        if bonds.shape != (B, N * (N - 1) // 2):
            raise ValueError(
                f"x_t['bonds'] must have shape ({B}, {N * (N - 1) // 2}) = upper triangle of "
                f"{N} nodes, got {tuple(bonds.shape)}"
            )
        if cond is not None:
            if not isinstance(cond, dict):
                raise TypeError(f"cond must be a dict or None, got {type(cond).__name__}")
            unknown = set(cond) - {"node_mask", "label"}
            if unknown:
                raise ValueError(f"unknown cond keys {sorted(unknown)}; expected node_mask, label")
            node_mask = node_mask if node_mask is not None else cond.get("node_mask")
            label = cond.get("label")
        if node_mask is None:
            node_mask = torch.ones(B, N, dtype=torch.bool, device=atoms.device)
        elif node_mask.shape != (B, N) or node_mask.dtype != torch.bool:
            raise ValueError(
                f"node_mask must be a ({B}, {N}) bool tensor, got "
                f"{tuple(node_mask.shape)} {node_mask.dtype}"
            )
        if not isinstance(t, Tensor):
            t = torch.full((B,), float(t), device=atoms.device)
        elif t.dim() == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must have shape ({B},), got {tuple(t.shape)}")
        check_unit_time(t)

        eye = torch.eye(N, dtype=torch.bool, device=atoms.device)  # (N, N)
        pair_mask = node_mask[:, :, None] & node_mask[:, None, :] & ~eye  # (B, N, N)
        attend = node_mask[:, None, :] | eye  # (B, N, N): real keys, and self
        bonds_dense = dense_bonds(bonds.long(), N, cfg.bond_num_states)  # (B, N, N)
        node_f, edge_f, glob_f = self._structure(bonds_dense, node_mask, pair_mask)

        x = one_hot(atoms.long(), cfg.atom_num_states)  # (B, N, Sa)
        e = one_hot(bonds_dense, cfg.bond_num_states + 1)  # (B, N, N, Sb + 1)
        if node_f is not None:
            x = torch.cat([x, node_f], dim=-1)
            e = torch.cat([e, edge_f], dim=-1)
        time = sinusoidal_embedding(t * cfg.time_scale, cfg.time_freq_dim)  # (B, F)
        y = self.y_in(torch.cat([time, glob_f], dim=-1))  # (B, dy)
        if self.labels:
            y = y + self._label_embedding(label, B, atoms.device)
        elif label is not None:
            raise ValueError("this denoiser has num_properties = 0: it takes no label")
        X = self.x_in(x)  # (B, N, dx)
        E = self.e_in(e)  # (B, N, N, de)
        # no padded node: every mask is all ones, and the passes applying them are skipped.
        # Known for free on a CPU; on an accelerator the check would be a host sync per call,
        # and under torch.compile a data-dependent branch (a graph break): masks kept there.
        padded = not reads_are_free(node_mask) or not bool(node_mask.all())
        if padded:
            X = X * node_mask[..., None].float()
            E = E * ((pair_mask | eye) & node_mask[:, :, None])[..., None].float()
        for layer in self.layers:
            X, E, y = layer(X, E, y, node_mask, pair_mask, attend, padded=padded)

        atom_logits = self.x_head(X)  # (B, N, Ka)
        edge_logits = self.e_head(E)  # (B, N, N, Kb)
        edge_logits = 0.5 * (edge_logits + edge_logits.transpose(1, 2))
        return {"atoms": atom_logits.float(), "bonds": triu_bonds(edge_logits).float()}


@torch.no_grad()
def grow_bond_classes(
    model: GraphTransformerDenoiser, like: dict[int, tuple[int, ...]]
) -> GraphTransformerDenoiser:
    """A copy of ``model`` with more bond classes, for fine-tuning into a richer vocabulary.

    ``like`` maps each new class (numbered after the old ones, e.g. 4 = aromatic after none,
    single, double, triple) to the old classes whose mean weights it starts from (aromatic:
    single and double), in the bond input and in the bond head. Every other weight is copied.
    """
    cfg = model.config
    old = cfg.bond_num_classes
    if cfg.bond_num_states != old or sorted(like) != list(range(old, old + len(like))):
        raise ValueError(f"new bond classes must be numbered {old}, {old + 1}, ... after the old")
    if any(not src or min(src) < 0 or max(src) >= old for src in like.values()):
        raise ValueError(f"each new bond class must start from old classes in [0, {old})")
    new = old + len(like)
    grown = GraphTransformerDenoiser(
        dataclasses.replace(cfg, bond_num_states=new, bond_num_classes=new)
    )
    state = model.state_dict()
    w_in = state["e_in.0.weight"]  # (de, old + 1 + features): bond one-hot, diagonal, features
    cols = [w_in[:, :old]] + [w_in[:, list(src)].mean(1, keepdim=True) for src in like.values()]
    state["e_in.0.weight"] = torch.cat(cols + [w_in[:, old:]], dim=1)
    for name in ("e_head.2.weight", "e_head.2.bias"):
        rows = [state[name]] + [
            state[name][list(src)].mean(0, keepdim=True) for src in like.values()
        ]
        state[name] = torch.cat(rows, dim=0)
    grown.load_state_dict(state)
    return grown
