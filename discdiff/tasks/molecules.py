"""Molecule generation: graphs of atoms and bonds, both categorical and both diffused.

This module plugs molecule data, the graph denoiser and the molecule metrics into the shared
pieces; it owns no loop of its own:

- data: SMILES -> categorical graphs (:mod:`discdiff.chem`) -> padded fields ``atoms`` (B, N),
  ``bonds`` (B, E) (strict upper triangle, so bonds stay symmetric), ``node_mask`` (B, N) and
  ``edge_mask`` (B, E). Padded positions are neither noised nor scored: they are the loss's
  ``mask`` and the samplers' ``fixed`` positions, and the denoiser gets ``cond={"node_mask"}``.
- processes: one per field from ``kind`` = "marginal" (DiGress: the prior is the training
  frequency of atom classes over real nodes and of bond classes over real pairs), "uniform" or
  "absorbing", on a continuous schedule ("loglinear" or "cosine").
- loss: :func:`discdiff.losses.continuous_elbo` (``boundary=False`` to train, ``True`` to
  evaluate) with weight ``edge_weight`` on the bonds field.
- training: :class:`discdiff.training.Trainer` with :meth:`MoleculeTask.loss_fn`.
- sampling: node counts drawn from the training histogram, then a core sampler
  (ancestral for any process, first-hitting for absorbing), then graphs -> RDKit molecules.

A :class:`MoleculeTaskConfig` (vocabulary, process, priors, node histogram) is saved as JSON
beside the denoiser's config; together with safetensors weights it is a complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rdkit import Chem
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from discdiff.chem.graph import (
    GraphVocab,
    dense_fields_to_graphs,
    encode_smiles,
    graph_to_mol,
    node_count_histogram,
    num_edges,
    sample_node_counts,
    to_dense_fields,
)
from discdiff.chem.metrics import canonical_set, molecule_metrics
from discdiff.losses import continuous_elbo
from discdiff.nn.graph_transformer import GraphTransformerConfig, GraphTransformerDenoiser
from discdiff.processes import Absorbing, Marginal, Process, Uniform
from discdiff.samplers import AncestralSampler, FirstHittingSampler, Sampler
from discdiff.schedules import CosineAlpha, LogLinear, Schedule
from discdiff.training.checkpoint import load_model, load_weights
from discdiff.training.ema import module_tensors

__all__ = [
    "PROCESS_KINDS",
    "SCHEDULES",
    "SAMPLERS",
    "FIELDS",
    "MoleculeTaskConfig",
    "MoleculeTask",
    "GraphDataset",
    "load_training_smiles",
    "load_pretrained",
    "save_pretrained",
    "load_run",
    "shipped_checkpoint",
]

PROCESS_KINDS = ("marginal", "uniform", "absorbing")
SCHEDULES = ("loglinear", "cosine")
SAMPLERS = ("ancestral", "first_hitting")
FIELDS = ("atoms", "bonds")
# Ancestral steps at t_k = (1 - k/n)^P. QM9 model at 20.5k steps, 10k samples, strict validity:
# 100 steps P=2 96.39%, 50 steps P=3 96.09% (half the time); 500 samples at 100 steps on the
# 13k-step weights: P = 1 / 1.5 / 2 / 3 / 4 -> 93.2 / 94.6 / 96.2 / 96.0 / 94.6%.
GRID_POWER = 3.0
SAMPLE_STEPS = 50
_ASSETS = Path(__file__).resolve().parent.parent / "assets"
_SHIPPED = ("qm9_model.safetensors", "qm9_config.json")

Graph = tuple[Tensor, Tensor]


def _probs(values: Sequence[float] | None, name: str, size: int) -> tuple[float, ...] | None:
    if values is None:
        return None
    p = tuple(float(v) for v in values)
    if len(p) != size or any(not math.isfinite(v) or v < 0 for v in p) or not sum(p) > 0:
        raise ValueError(f"{name} must be {size} non-negative finite numbers with a positive sum")
    total = sum(p)
    return tuple(v / total for v in p)


@dataclass(frozen=True)
class MoleculeTaskConfig:
    """What the task needs besides the denoiser's weights (JSON via to_dict/from_dict).

    vocab: :meth:`GraphVocab.to_dict`. max_nodes: N of the padded fields. process: one of
    ``PROCESS_KINDS``; schedule: one of ``SCHEDULES``. atom_prior / bond_prior: class
    frequencies (needed by "marginal"). node_hist: (max_nodes + 1,) probabilities of graph
    sizes. edge_weight: loss weight of the bonds field. dataset: where the training SMILES
    came from ("qm9", "moses" or a file path), used for novelty.
    """

    vocab: dict[str, Any]
    max_nodes: int
    node_hist: tuple[float, ...]
    process: str = "marginal"
    schedule: str = "loglinear"
    atom_prior: tuple[float, ...] | None = None
    bond_prior: tuple[float, ...] | None = None
    edge_weight: float = 5.0
    dataset: str | None = None

    def __post_init__(self) -> None:
        vocab = GraphVocab.from_dict(self.vocab)  # validates
        object.__setattr__(self, "vocab", vocab.to_dict())
        if isinstance(self.max_nodes, bool) or not isinstance(self.max_nodes, int):
            raise TypeError(f"max_nodes must be an int, got {self.max_nodes!r}")
        if self.max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {self.max_nodes}")
        if self.process not in PROCESS_KINDS:
            raise ValueError(f"unknown process {self.process!r}; expected one of {PROCESS_KINDS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        hist = _probs(self.node_hist, "node_hist", self.max_nodes + 1)
        if hist is None or hist[0] > 0:
            raise ValueError("node_hist must give probability 0 to graphs with 0 nodes")
        object.__setattr__(self, "node_hist", hist)
        ka, kb = vocab.num_atom_classes, vocab.num_bond_classes
        object.__setattr__(self, "atom_prior", _probs(self.atom_prior, "atom_prior", ka))
        object.__setattr__(self, "bond_prior", _probs(self.bond_prior, "bond_prior", kb))
        if self.process == "marginal" and (self.atom_prior is None or self.bond_prior is None):
            raise ValueError("process 'marginal' needs atom_prior and bond_prior")
        if not (isinstance(self.edge_weight, int | float) and self.edge_weight > 0):
            raise ValueError(f"edge_weight must be a number > 0, got {self.edge_weight!r}")
        object.__setattr__(self, "edge_weight", float(self.edge_weight))

    @property
    def graph_vocab(self) -> GraphVocab:
        """The :class:`GraphVocab` of atoms and bonds."""
        return GraphVocab.from_dict(self.vocab)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = dataclasses.asdict(self)
        for k in ("node_hist", "atom_prior", "bond_prior"):
            d[k] = None if d[k] is None else list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoleculeTaskConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(d, dict):
            raise TypeError(f"MoleculeTaskConfig.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MoleculeTaskConfig keys {unknown}")
        return cls(**d)


class GraphDataset(torch.utils.data.Dataset):
    """Map-style dataset of padded molecule graphs; items are dicts the default collate stacks.

    Holds atoms (M, N), bonds (M, E), node_mask (M, N), edge_mask (M, E) for M molecules
    (stored once, padded to ``max_nodes``), so batching costs no Python work per graph.
    """

    def __init__(self, fields: dict[str, Tensor]) -> None:
        keys = ("atoms", "bonds", "node_mask", "edge_mask")
        missing = [k for k in keys if k not in fields]
        if missing:
            raise ValueError(f"GraphDataset fields lack {missing}")
        sizes = {int(fields[k].shape[0]) for k in keys}
        if len(sizes) != 1:
            raise ValueError(f"GraphDataset fields disagree on the number of graphs: {sizes}")
        self.fields = {
            "atoms": fields["atoms"].long(),
            "bonds": fields["bonds"].long(),
            "node_mask": fields["node_mask"].bool(),
            "edge_mask": fields["edge_mask"].bool(),
        }

    @classmethod
    def from_graphs(cls, graphs: Sequence[Graph], max_nodes: int) -> GraphDataset:
        """Pad (atoms (n,), bonds (n, n)) graphs to ``max_nodes``."""
        return cls(to_dense_fields(graphs, max_nodes))

    def __len__(self) -> int:
        return int(self.fields["atoms"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.fields.items()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fields as safetensors (uint8 ids, bool masks)."""
        out = {k: v.to(torch.uint8).contiguous() for k, v in self.fields.items()}
        save_file(out, str(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GraphDataset:
        """Inverse of :meth:`save`."""
        try:
            t = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"cannot read graph data {str(path)!r}: {err}") from err
        return cls(t)


def _schedule(name: str) -> Schedule:
    return LogLinear() if name == "loglinear" else CosineAlpha()


class MoleculeTask:
    """Processes, loss, sampling and decoding of molecule graphs for one :class:`MoleculeTaskConfig`."""

    def __init__(self, config: MoleculeTaskConfig) -> None:
        if not isinstance(config, MoleculeTaskConfig):
            raise TypeError(f"config must be a MoleculeTaskConfig, got {type(config).__name__}")
        self.config = config
        self.vocab = config.graph_vocab
        self.processes = self._build_processes()

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_graphs(
        cls,
        graphs: Sequence[Graph],
        vocab: GraphVocab,
        *,
        max_nodes: int | None = None,
        process: str = "marginal",
        schedule: str = "loglinear",
        edge_weight: float = 5.0,
        dataset: str | None = None,
    ) -> MoleculeTask:
        """Task whose priors and node histogram are the statistics of ``graphs``."""
        if not graphs:
            raise ValueError("no training graphs: cannot estimate the node histogram")
        n_max = max(int(a.shape[0]) for a, _ in graphs)
        max_nodes = n_max if max_nodes is None else int(max_nodes)
        if n_max > max_nodes:
            raise ValueError(f"a graph has {n_max} nodes, more than max_nodes={max_nodes}")
        hist = node_count_histogram(graphs, max_nodes)
        fields = to_dense_fields(graphs, max_nodes)
        atom_counts = torch.bincount(
            fields["atoms"][fields["node_mask"]], minlength=vocab.num_atom_classes
        ).double()
        bond_counts = torch.bincount(
            fields["bonds"][fields["edge_mask"]], minlength=vocab.num_bond_classes
        ).double()
        # one pseudo-count per class keeps every class reachable under the marginal prior
        atom_prior = (atom_counts + 1) / (atom_counts + 1).sum()
        bond_prior = (bond_counts + 1) / (bond_counts + 1).sum()
        cfg = MoleculeTaskConfig(
            vocab=vocab.to_dict(),
            max_nodes=max_nodes,
            node_hist=tuple(hist.tolist()),
            process=process,
            schedule=schedule,
            atom_prior=tuple(atom_prior.tolist()),
            bond_prior=tuple(bond_prior.tolist()),
            edge_weight=edge_weight,
            dataset=dataset,
        )
        return cls(cfg)

    def _build_processes(self) -> dict[str, Process]:
        cfg, sched = self.config, _schedule(self.config.schedule)
        ka, kb = self.vocab.num_atom_classes, self.vocab.num_bond_classes
        if cfg.process == "marginal":
            return {
                "atoms": Marginal(torch.tensor(cfg.atom_prior, dtype=torch.float64), sched),
                "bonds": Marginal(torch.tensor(cfg.bond_prior, dtype=torch.float64), sched),
            }
        family = Uniform if cfg.process == "uniform" else Absorbing
        return {"atoms": family(ka, sched), "bonds": family(kb, sched)}

    def denoiser_config(self, **sizes: Any) -> GraphTransformerConfig:
        """A :class:`GraphTransformerConfig` matching the processes; ``sizes`` set its widths."""
        pa, pb = self.processes["atoms"], self.processes["bonds"]
        return GraphTransformerConfig(
            atom_num_states=pa.num_states,
            atom_num_classes=pa.num_classes,
            bond_num_states=pb.num_states,
            bond_num_classes=pb.num_classes,
            max_nodes=self.config.max_nodes,
            no_bond_id=0,
            **sizes,
        )

    def build_model(self, model_config: dict[str, Any]) -> GraphTransformerDenoiser:
        """The denoiser of a saved model config: ``{"task": ..., "denoiser": ...}`` or the
        denoiser's dict alone. Checks that it fits this task's processes."""
        d = model_config.get("denoiser", model_config)
        cfg = GraphTransformerConfig.from_dict(dict(d))
        want = self.denoiser_config()
        for name in ("atom_num_states", "atom_num_classes", "bond_num_states", "bond_num_classes"):
            if getattr(cfg, name) != getattr(want, name):
                raise ValueError(
                    f"denoiser {name}={getattr(cfg, name)} does not fit the task "
                    f"({getattr(want, name)})"
                )
        return GraphTransformerDenoiser(cfg)

    # ---- data -------------------------------------------------------------------------------
    def encode(self, smiles: Sequence[str]) -> tuple[list[Graph], int]:
        """Graphs of ``smiles`` that fit the vocabulary and max_nodes; (graphs, n_skipped)."""
        graphs, skipped = encode_smiles(smiles, self.vocab)
        kept = [g for g in graphs if g[0].shape[0] <= self.config.max_nodes and g[0].shape[0] > 0]
        return kept, skipped + len(graphs) - len(kept)

    def dataset(self, graphs: Sequence[Graph]) -> GraphDataset:
        """A :class:`GraphDataset` padded to this task's max_nodes."""
        return GraphDataset.from_graphs(graphs, self.config.max_nodes)

    @staticmethod
    def fields(batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
        """(x0 fields, loss masks, denoiser cond) of a collated batch."""
        x0 = {"atoms": batch["atoms"], "bonds": batch["bonds"]}  # (B, N), (B, E)
        mask = {"atoms": batch["node_mask"], "bonds": batch["edge_mask"]}
        return x0, mask, {"node_mask": batch["node_mask"]}

    # ---- losses -----------------------------------------------------------------------------
    def loss(
        self,
        model: Callable[..., Any],
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        boundary: bool = False,
    ) -> Tensor:
        """Weighted continuous-time negative ELBO per molecule, (B,) nats."""
        x0, mask, cond = self.fields(batch)
        return continuous_elbo(
            self.processes,
            model,
            x0,
            mask,
            cond=cond,
            weights={"bonds": self.config.edge_weight},
            boundary=boundary,
            generator=generator,
        )

    def loss_fn(self, model: Callable[..., Any], batch: dict, generator: torch.Generator) -> Tensor:
        """The Trainer's training objective (no boundary terms), (B,) nats."""
        return self.loss(model, batch, generator, boundary=False)

    def nll_fn(self, model: Callable[..., Any], batch: dict, generator: torch.Generator) -> Tensor:
        """Unweighted full negative ELBO (a bound on -log p(graph | N)), (B,) nats."""
        x0, mask, cond = self.fields(batch)
        return continuous_elbo(
            self.processes, model, x0, mask, cond=cond, boundary=True, generator=generator
        )

    # ---- sampling ---------------------------------------------------------------------------
    def make_sampler(
        self, steps: int, sampler: str = "ancestral", grid_power: float = GRID_POWER
    ) -> Sampler:
        """A core sampler: "ancestral" (any process) or "first_hitting" (absorbing only).

        ``grid_power`` warps the ancestral time grid (t_k = (1 - k/n) ** power, see
        :func:`discdiff.samplers.time_grid`); first-hitting has no grid and ignores it.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
        if sampler == "first_hitting":
            if self.config.process != "absorbing":
                raise ValueError(
                    f"sampler 'first_hitting' needs the absorbing process, not {self.config.process!r}"
                )
            return FirstHittingSampler()
        return AncestralSampler(steps=steps, grid_power=grid_power)

    def sample_fields(
        self,
        model: Callable[..., Any],
        node_counts: Tensor,
        *,
        steps: int = SAMPLE_STEPS,
        sampler: str = "ancestral",
        grid_power: float = GRID_POWER,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """One batch of graphs with the given node counts (B,) -> padded fields.

        Returns atoms (B, N), bonds (B, E), node_mask (B, N), edge_mask (B, E) with
        N = max(node_counts); padded positions hold class 0 and are never sampled.
        """
        counts = torch.as_tensor(node_counts, dtype=torch.long).cpu()
        if counts.dim() != 1 or counts.numel() == 0:
            raise ValueError(
                f"node_counts must be a non-empty (B,) tensor, got {tuple(counts.shape)}"
            )
        if int(counts.min()) < 1 or int(counts.max()) > self.config.max_nodes:
            raise ValueError(f"node counts must lie in [1, max_nodes={self.config.max_nodes}]")
        dev = next((p.device for p in getattr(model, "parameters", list)()), torch.device("cpu"))
        B, N = counts.numel(), int(counts.max())
        node_mask = (torch.arange(N)[None, :] < counts[:, None]).to(dev)  # (B, N)
        ii, jj = torch.triu_indices(N, N, 1, device=dev)
        edge_mask = node_mask[:, ii] & node_mask[:, jj]  # (B, E)
        zeros_a = torch.zeros(B, N, dtype=torch.long, device=dev)
        zeros_b = torch.zeros(B, num_edges(N), dtype=torch.long, device=dev)
        fixed = {"atoms": (zeros_a, ~node_mask), "bonds": (zeros_b, ~edge_mask)}
        result = self.make_sampler(steps, sampler, grid_power).sample(
            model,
            self.processes,
            {"atoms": (B, N), "bonds": (B, num_edges(N))},
            cond={"node_mask": node_mask},
            fixed=fixed,
            generator=generator,
            device=dev,
        )
        out = result.samples
        return {
            "atoms": out["atoms"],
            "bonds": out["bonds"],
            "node_mask": node_mask,
            "edge_mask": edge_mask,
        }

    def sample_graphs(
        self,
        model: Callable[..., Any],
        num_samples: int,
        *,
        steps: int = SAMPLE_STEPS,
        sampler: str = "ancestral",
        batch_size: int = 250,
        grid_power: float = GRID_POWER,
        generator: torch.Generator | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Graph]:
        """``num_samples`` graphs (atoms (n,), bonds (n, n)) with n from the node histogram.

        Node counts are drawn first (in order), then sampled in batches of similar sizes
        (sorted, so little padding); the graphs come back in the order of the drawn counts.
        ``progress(k)`` is called after each batch with the number of graphs it produced.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        hist = torch.tensor(self.config.node_hist, dtype=torch.float64)
        counts = sample_node_counts(hist, num_samples, generator=generator)  # (num_samples,)
        order = torch.argsort(counts, stable=True)
        graphs: list[Graph | None] = [None] * num_samples
        for start in range(0, num_samples, batch_size):
            idx = order[start : start + batch_size]
            f = self.sample_fields(
                model,
                counts[idx],
                steps=steps,
                sampler=sampler,
                grid_power=grid_power,
                generator=generator,
            )
            f = {k: v.cpu() for k, v in f.items()}
            for i, g in zip(
                idx.tolist(),
                dense_fields_to_graphs(f["atoms"], f["bonds"], f["node_mask"]),
                strict=True,
            ):
                graphs[i] = g
            if progress is not None:
                progress(len(idx))
        return [g for g in graphs if g is not None]

    def to_mols(self, graphs: Sequence[Graph]) -> list[Chem.Mol]:
        """Unsanitised RDKit molecules of graphs (sanitise or repair them for metrics)."""
        return [graph_to_mol(a, b, self.vocab, sanitize=False) for a, b in graphs]

    def metrics(
        self, graphs: Sequence[Graph], train_smiles: Sequence[str] | set[str] | None = None
    ) -> dict[str, float]:
        """:func:`discdiff.chem.molecule_metrics` of sampled graphs (novelty with a train set)."""
        train = None
        if train_smiles is not None:
            train = train_smiles if isinstance(train_smiles, set) else canonical_set(train_smiles)
        return molecule_metrics(self.to_mols(graphs), train=train)


# ---- data sources ---------------------------------------------------------------------------
def load_training_smiles(source: str, split: str = "train", download: bool = True) -> list[str]:
    """SMILES of ``source``: "qm9", "moses" (a split of it) or a SMILES/CSV file path.

    ``download=False`` returns ``[]`` for qm9/moses when they are not in the cache yet
    (so that sampling never triggers a download just to report novelty).
    """
    from discdiff.datasets._fetch import cache_dir

    if source == "qm9":
        from discdiff.datasets.qm9 import load_qm9

        if not download and not (cache_dir() / "qm9" / f"{split}.txt").is_file():
            return []
        return load_qm9(split)
    if source == "moses":
        from discdiff.datasets._fetch import _find_archive
        from discdiff.datasets.moses import MOSES_PACKAGE, load_moses

        if not download and _find_archive(cache_dir() / "packages", *MOSES_PACKAGE) is None:
            return []
        return load_moses("test" if split == "val" else split)
    from discdiff.datasets.smiles import read_smiles_file

    return read_smiles_file(source)


# ---- saving and loading ---------------------------------------------------------------------
def save_pretrained(
    model: GraphTransformerDenoiser, task: MoleculeTask, weights: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write ``weights`` (safetensors) and its config JSON (same stem, ``_config.json`` for a
    ``*_model.safetensors`` name, else ``.json``): {"task": ..., "denoiser": ...}."""
    path = Path(weights)
    cfg_path = _config_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module_tensors(model).items()}, str(path))
    doc = {"task": task.config.to_dict(), "denoiser": model.config.to_dict()}
    cfg_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path, cfg_path


def _config_path(weights: Path) -> Path:
    stem = weights.name.removesuffix(".safetensors")
    if stem.endswith("_model"):
        return weights.with_name(stem.removesuffix("_model") + "_config.json")
    return weights.with_name(stem + ".json")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read checkpoint config {str(path)!r}: {err}") from err
    if not isinstance(doc, dict) or "task" not in doc or "denoiser" not in doc:
        raise ValueError(
            f"{str(path)!r} is not a molecule checkpoint config (needs task, denoiser)"
        )
    return doc


def load_pretrained(
    weights: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[GraphTransformerDenoiser, MoleculeTask]:
    """(denoiser in eval mode, task) from a safetensors file and its config JSON.

    ``weights`` may also be a training run directory (its latest checkpoint, EMA weights when
    present). Raises FileNotFoundError / ValueError with one line for missing or corrupt files.
    """
    path = Path(weights)
    if path.is_dir():
        return load_run(path, device=device)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    cfg_path = _config_path(path)
    if not cfg_path.is_file():
        raise FileNotFoundError(f"checkpoint config {str(cfg_path)!r} does not exist")
    doc = _read_config(cfg_path)
    task = MoleculeTask(MoleculeTaskConfig.from_dict(doc["task"]))
    model = task.build_model(doc)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"cannot read checkpoint weights {str(path)!r}: {err}") from err
    load_weights(model, tensors)
    return model.to(device).eval(), task


def load_run(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu", use_ema: bool | None = None
) -> tuple[GraphTransformerDenoiser, MoleculeTask]:
    """(denoiser, task) from a training run directory written by ``discdiff molecules train``."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {str(run)!r} does not exist")
    doc = _read_config(run / "task.json")
    task = MoleculeTask(MoleculeTaskConfig.from_dict(doc["task"]))
    model = load_model(run, task.build_model, use_ema=use_ema, device=device)
    return model, task  # type: ignore[return-value]


def shipped_checkpoint() -> Path:
    """Path of the QM9 checkpoint shipped with the package (weights; config beside it)."""
    path = _ASSETS / _SHIPPED[0]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped QM9 checkpoint {str(path)!r} is missing")
    return path


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def param_count(model: nn.Module) -> int:
    """Number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())
