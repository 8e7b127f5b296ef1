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
- loss: the config's registered objective, by default :func:`discdiff.losses.continuous_elbo`
  (``boundary=False`` to train, with weight ``edge_weight`` on the bonds field; ``True``: the
  unweighted bound that evaluates).
- training: :class:`discdiff.training.Trainer` with :meth:`MoleculeTask.loss_fn`.
- sampling: node counts drawn from the training histogram, then a core sampler
  (ancestral for any process, first-hitting for absorbing), then graphs -> RDKit molecules.

A :class:`MoleculeTaskConfig` (vocabulary, process, priors, node histogram) is saved as JSON
beside the denoiser's config; together with safetensors weights it is a complete checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from rdkit import Chem
from torch import Tensor, nn

from discdiff.catalogue import model_cards, model_path
from discdiff.checks import reads_are_free
from discdiff.chem.graph import (
    GraphVocab,
    encode_smiles,
    graph_to_mol,
    node_count_histogram,
    to_dense_fields,
)
from discdiff.chem.metrics import canonical_set, molecule_metrics
from discdiff.chem.properties import quantile_edges
from discdiff.nn import denoiser_from_config
from discdiff.nn.graph_transformer import (
    GraphTransformerConfig,
    GraphTransformerDenoiser,
    grow_bond_classes,
)
from discdiff.processes import Process, make_process
from discdiff.samplers import Sampler
from discdiff.tasks.base import Task, register_task, task_objective
from discdiff.tasks.molecules.conditioning import PropertyConditioning, graph_properties
from discdiff.tasks.molecules.config import MoleculeTaskConfig, takes_prior
from discdiff.tasks.molecules.data import (
    GraphDataset,
    PreparedData,
    load_training_smiles,
    prepare_molecule_data,
)
from discdiff.tasks.molecules.sampling import GRID_POWER, SAMPLE_STEPS, GraphSampling

__all__ = [
    "GRID_POWER",
    "SAMPLE_STEPS",
    "PROCESS_KINDS",
    "FIELDS",
    "MoleculeTaskConfig",
    "MoleculeTask",
    "GraphDataset",
    "load_training_smiles",
    "shipped_checkpoint",
    "grow_to_vocab",
    "SHIPPED",
]

PROCESS_KINDS = ("marginal", "uniform", "absorbing")  # the built-in ones; plug-ins join them
FIELDS = ("atoms", "bonds")
_DATA_FILES = {"train": "train.safetensors", "val": "val.safetensors"}
#: what ``task train molecules --config`` takes besides "data" (MoleculeTask.from_settings)
_SETTINGS = ("max_train", "max_nodes", "aromatic", "properties", "property_bins",
             "label_dropout", "workers", "process", "schedule", "edge_weight", "ce_weight",
             "objective")  # fmt: skip


Graph = tuple[Tensor, Tensor]


@register_task("molecules")
class MoleculeTask(PropertyConditioning, GraphSampling, Task):
    """Processes, loss, sampling and decoding of molecule graphs for one :class:`MoleculeTaskConfig`."""

    config_class = MoleculeTaskConfig
    unit = "nats/molecule"
    #: the molecule task's training defaults (flags override; --resume keeps the run's)
    default_denoiser: ClassVar[str] = "graph_transformer"
    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 6000,
        "batch_size": 128,
        "lr": 1e-3,
        "warmup_steps": 200,
        "ema_decay": 0.999,
        "eval_every": 1000,
        "eval_batches": 4,
        "ckpt_every": 500,
        "log_every": 50,
    }

    def __init__(self, config: MoleculeTaskConfig) -> None:
        if not isinstance(config, MoleculeTaskConfig):
            raise TypeError(f"config must be a MoleculeTaskConfig, got {type(config).__name__}")
        self.config = config
        self.vocab = config.graph_vocab
        self.processes = self._build_processes()
        self.objective = task_objective(config, self.processes)
        self._data: dict[str, GraphDataset] = {}
        self._folder: Path | None = None

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
        properties: Sequence[str] = (),
        property_values: Tensor | None = None,
        property_bins: int = 16,
        ce_weight: float = 0.0,
        objective: str = "elbo",
    ) -> MoleculeTask:
        """Task whose priors and node histogram are the statistics of ``graphs``.

        With ``properties`` the denoiser is conditioned on them, binned at the quantiles of
        ``property_values`` (M, P) (computed from the graphs when not given)."""
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
        edges: tuple[tuple[float, ...], ...] = ()
        if properties:
            if property_values is None:
                property_values = graph_properties(graphs, vocab, properties)
            edges = tuple(
                quantile_edges(property_values[:, p], property_bins) for p in range(len(properties))
            )
        cfg = MoleculeTaskConfig(
            properties=tuple(properties),
            property_edges=edges,
            vocab=vocab.to_dict(),
            max_nodes=max_nodes,
            node_hist=tuple(hist.tolist()),
            process=process,
            schedule=schedule,
            atom_prior=tuple(atom_prior.tolist()),
            bond_prior=tuple(bond_prior.tolist()),
            edge_weight=edge_weight,
            dataset=dataset,
            ce_weight=ce_weight,
            objective=objective,
        )
        return cls(cfg)

    @classmethod
    def from_data(
        cls,
        data: str,
        *,
        max_train: int | None = None,
        max_nodes: int | None = None,
        aromatic: bool = False,
        properties: Sequence[str] = (),
        property_bins: int = 16,
        label_dropout: float = 0.1,
        workers: int = 1,
        progress: Callable[[int, int], None] | None = None,
        say: Callable[[str], None] | None = None,
        **config: Any,
    ) -> tuple[MoleculeTask, PreparedData]:
        """A task made from a data set ("qm9", "moses" or a SMILES / CSV file) with both splits
        attached: its graphs encoded (and cached), priors and node counts from the training
        split, conditioned on ``properties``. ``config``: the other
        :class:`MoleculeTaskConfig` fields (process, schedule, edge_weight, ce_weight,
        objective). Returns (task, the prepared data, whose ``report()`` says what was kept)."""
        prep = prepare_molecule_data(
            data, max_train=max_train, max_nodes=max_nodes, workers=workers, progress=progress,
            aromatic=aromatic,
        )  # fmt: skip
        task = cls.from_graphs(
            prep.graphs, prep.vocab, max_nodes=prep.max_nodes, dataset=prep.dataset, **config
        )
        return task.with_data(prep, properties, property_bins, label_dropout, say), prep

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, progress: bool = False) -> Task:
        """``discdiff task train molecules --config '{"data": "qm9", ...}'``: :meth:`from_data`'s
        options and the config fields it leaves to the data, by name."""
        d = dict(settings)
        data = d.pop("data", None) or d.pop("dataset", None)
        if not isinstance(data, str) or not data:
            raise ValueError(
                'the molecule task is made from data: give --config \'{"data": "qm9"}\' '
                "(qm9, moses or a SMILES file) and, if you like, " + ", ".join(_SETTINGS)
            )
        unknown = sorted(set(d) - set(_SETTINGS))
        if unknown:
            raise ValueError(
                f"--config: unknown molecule setting(s) {unknown}; expected data and some of "
                f"{', '.join(_SETTINGS)}"
            )
        if isinstance(d.get("properties"), str):
            d["properties"] = [p.strip() for p in d["properties"].split(",") if p.strip()]
        return cls.from_data(data, **d)[0]

    @classmethod
    def comparable_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """ "data" as the config's "dataset" (a file by its resolved path), properties as a list."""
        d = dict(settings)
        data = d.pop("data", None)
        if isinstance(data, str) and data:
            d["dataset"] = data if data in ("qm9", "moses") else str(Path(data).resolve())
        if isinstance(d.get("properties"), str):
            d["properties"] = [p.strip() for p in d["properties"].split(",") if p.strip()]
        return d

    def with_data(
        self,
        prep: PreparedData,
        properties: Sequence[str] = (),
        bins: int = 16,
        label_dropout: float = 0.1,
        say: Callable[[str], None] | None = None,
    ) -> MoleculeTask:
        """This task with ``prep``'s graphs attached as its splits, conditioned first on
        ``properties`` (their values computed from the graphs; ``say`` hears that it runs)."""
        task = self
        train_set = self.graph_dataset(prep.graphs)
        held = prep.val_graphs or prep.graphs[:1]
        val_set = self.graph_dataset(held)
        if properties:
            names = [str(p).strip().lower() for p in properties]
            if say is not None:
                say(f"computing {', '.join(names)} of {len(prep.graphs) + len(held)} molecules")
            values = graph_properties(prep.graphs, self.vocab, names)
            task = self.conditioned(names, values, bins, label_dropout)
            train_set = train_set.with_properties(values)
            val_set = val_set.with_properties(graph_properties(held, self.vocab, names))
        task.attach_data(train_set, val_set)
        return task

    def _build_processes(self) -> dict[str, Process]:
        cfg = self.config
        ka, kb = self.vocab.num_atom_classes, self.vocab.num_bond_classes
        prior = takes_prior(cfg.process)
        atoms = {"prior": list(cfg.atom_prior)} if prior else {}
        bonds = {"prior": list(cfg.bond_prior)} if prior else {}
        return {
            "atoms": make_process(cfg.process, ka, schedule=cfg.schedule, **atoms),
            "bonds": make_process(cfg.process, kb, schedule=cfg.schedule, **bonds),
        }

    # ---- the spine's pieces -----------------------------------------------------------------
    @classmethod
    def example(cls, folder: Path) -> tuple[MoleculeTask, dict[str, Any]]:
        """Eight small molecules in QM9's vocabulary (train and held-out alike)."""
        smiles = ["CCO", "CC(=O)O", "c1ccoc1", "CC#N", "OCC(O)CO", "CC(C)O", "C1CC1N", "COC=O"]
        vocab = GraphVocab.qm9()
        graphs, _ = encode_smiles(smiles, vocab)
        task = cls.from_graphs(graphs, vocab, dataset=None)
        task.attach_data(task.graph_dataset(graphs), task.graph_dataset(graphs[:4]))
        sizes = {
            "num_layers": 1,
            "node_dim": 16,
            "edge_dim": 8,
            "global_dim": 8,
            "num_heads": 2,
            "node_ff_dim": 16,
            "edge_ff_dim": 8,
            "global_ff_dim": 8,
            "time_freq_dim": 8,
        }
        return task, sizes

    def build_denoiser(self, **sizes: Any) -> GraphTransformerDenoiser:
        """A fresh graph transformer of :meth:`denoiser_config`'s shape."""
        return GraphTransformerDenoiser(self.denoiser_config(**sizes))

    def attach_data(self, train: Any, val: Any) -> None:
        """The training and held-out graphs: :class:`GraphDataset` s (padded) or PyG datasets
        (:class:`discdiff.chem.pyg.MoleculeGraphDataset`, batched as PyG ``Batch`` es); saved
        with the run by :meth:`save_files` as padded graph files either way."""
        self._data = {"train": train, "val": val}

    def collate(self) -> Callable[[Sequence[Any]], Any]:
        """PyG items -> a ``Batch``; padded items -> torch's default collate."""
        return collate_molecules

    def dataset(self, split: str | Sequence[Graph]) -> GraphDataset:
        """A split's graphs: attached, or saved in the run dir ("test" is the held-out split).
        Given graphs instead of a split name: those graphs, padded (:meth:`graph_dataset`)."""
        if not isinstance(split, str):
            return self.graph_dataset(split)
        split = "val" if split == "test" else split
        if split not in self._data and self._folder is not None:
            path = self._folder / _DATA_FILES[split]
            if path.is_file():
                self._data[split] = GraphDataset.load(path)
        if split not in self._data:
            raise ValueError(
                f"no {split!r} graphs: attach_data() or load a run dir that saved them"
            )
        return self._data[split]

    def save_files(self, folder: Path) -> None:
        """The attached graphs as ``train.safetensors`` / ``val.safetensors``."""
        for split, data in self._data.items():
            if not isinstance(data, GraphDataset):  # PyG: the run dir keeps one format
                data = self._padded(data)
            data.save(folder / _DATA_FILES[split])

    def _padded(self, data: Any) -> GraphDataset:
        """A PyG molecule dataset as a padded :class:`GraphDataset` (properties kept)."""
        from discdiff.chem.pyg import densify

        batch = self.collate()([data[i] for i in range(len(data))])
        return GraphDataset(densify(batch, self.config.max_nodes))

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: Path | None = None) -> MoleculeTask:
        task = cls(MoleculeTaskConfig.from_dict(config))
        task._folder = Path(folder) if folder is not None else None
        return task

    def nll(self, model: Callable[..., Any], batch: dict, generator: Any) -> Tensor:
        return self.nll_fn(model, batch, generator)

    def units(self, batch: Any) -> Tensor:
        """(B,) ones: the unit is one molecule (a padded batch or a PyG ``Batch``)."""
        size = batch["atoms"].shape[0] if isinstance(batch, dict) else int(batch.num_graphs)
        return torch.ones(size, dtype=torch.float64)

    def count_tokens(self, batch: Any) -> int | Tensor:
        """Real atoms and atom pairs in a batch: an int, or a device scalar for a batch on an
        accelerator (reading it there would be a host sync per step)."""
        if not isinstance(batch, dict):  # a PyG Batch: atoms, and pairs within each graph
            counts = torch.bincount(batch.batch, minlength=int(batch.num_graphs))
            return int(counts.sum()) + int((counts * (counts - 1) // 2).sum())
        total = batch["node_mask"].sum() + batch["edge_mask"].sum()
        return int(total) if reads_are_free(total) else total

    def sample(
        self,
        model: nn.Module,
        n: int,
        sampler: Sampler,
        *,
        generator: torch.Generator | None = None,
        progress: bool = False,
        batch_size: int = 250,
        **conditioning: Any,
    ) -> list[Graph]:
        """``n`` graphs with any sampler (node counts from the histogram); ``conditioning``:
        ``target``, ``guidance``, ``scaffold``, ``num_atoms`` of :meth:`sample_graphs`."""
        unknown = set(conditioning) - {"target", "guidance", "scaffold", "num_atoms"}
        if unknown:
            raise ValueError(f"molecule samples take no conditioning {sorted(unknown)}")
        return self.sample_graphs(
            model, n, sampler=sampler, batch_size=batch_size, generator=generator, **conditioning
        )

    def format_samples(self, samples: Any) -> list[str]:
        """A SMILES per sampled graph (RDKit's canonical form where it sanitises; the raw
        graph's SMILES, marked ``invalid``, where it does not)."""
        from discdiff.chem.metrics import sanitize_or_none

        out = []
        for mol in self.to_mols(samples):
            ok = sanitize_or_none(mol)
            if ok is not None:
                out.append(Chem.MolToSmiles(ok))
            else:
                out.append(f"{Chem.MolToSmiles(mol, canonical=False)}\tinvalid")
        return out

    def denoiser_fields(self) -> dict[str, Any]:
        """Atom and bond ids in and classes out, the largest graph, the no-bond class and the
        property labels."""
        pa, pb = self.processes["atoms"], self.processes["bonds"]
        return {
            "atom_num_states": pa.num_states,
            "atom_num_classes": pa.num_classes,
            "bond_num_states": pb.num_states,
            "bond_num_classes": pb.num_classes,
            "max_nodes": self.config.max_nodes,
            "no_bond_id": 0,
            "num_properties": len(self.config.properties),
            "property_bins": self.config.property_bins,
        }

    def denoiser_config(self, **sizes: Any) -> GraphTransformerConfig:
        """A :class:`GraphTransformerConfig` matching the processes; ``sizes`` set its widths."""
        return GraphTransformerConfig(**(self.denoiser_fields() | sizes))

    def build_model(self, model_config: dict[str, Any]) -> nn.Module:
        """The denoiser of a saved model entry ``{"task": ..., "denoiser": ...}`` or of the
        denoiser's config alone (a bare GraphTransformerConfig dict, as files before the task
        spine have it). Checks that it fits this task's processes."""
        d = model_config.get("denoiser", model_config)
        if not (isinstance(d, dict) and set(d) == {"type", "config"}):
            d = {"type": "graph_transformer", "config": dict(d)}
        model = denoiser_from_config(d)
        self.check_model(model)
        return model

    def check_model(self, model: nn.Module) -> None:
        cfg = getattr(model, "config", None)
        want = self.denoiser_config()
        names = ("atom_num_states", "atom_num_classes", "bond_num_states", "bond_num_classes")
        for name in (*names, "num_properties", "property_bins"):
            if cfg is not None and getattr(cfg, name, getattr(want, name)) != getattr(want, name):
                raise ValueError(
                    f"denoiser {name}={getattr(cfg, name)} does not fit the task "
                    f"({getattr(want, name)})"
                )

    # ---- data -------------------------------------------------------------------------------
    def encode(self, smiles: Sequence[str]) -> tuple[list[Graph], int]:
        """Graphs of ``smiles`` that fit the vocabulary and max_nodes; (graphs, n_skipped)."""
        graphs, skipped = encode_smiles(smiles, self.vocab)
        kept = [g for g in graphs if g[0].shape[0] <= self.config.max_nodes and g[0].shape[0] > 0]
        return kept, skipped + len(graphs) - len(kept)

    def graph_dataset(self, graphs: Sequence[Graph]) -> GraphDataset:
        """A :class:`GraphDataset` of ``graphs`` padded to this task's max_nodes."""
        return GraphDataset.from_graphs(graphs, self.config.max_nodes)

    def fields(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
        """(x0 fields, loss masks, denoiser cond) of a collated batch; a conditioned task's
        cond has the property bins ``label`` (B, P). A PyG ``Batch`` is densified first
        (:func:`discdiff.chem.pyg.densify`)."""
        if not isinstance(batch, dict):
            from discdiff.chem.pyg import densify, is_pyg_batch

            if not is_pyg_batch(batch):
                raise TypeError(f"a molecule batch is a dict or a PyG Batch, got {type(batch)}")
            batch = densify(batch, self.config.max_nodes)
        x0 = {"atoms": batch["atoms"], "bonds": batch["bonds"]}  # (B, N), (B, E)
        mask = {"atoms": batch["node_mask"], "bonds": batch["edge_mask"]}
        cond = {"node_mask": batch["node_mask"]}
        if self.config.properties:
            if "props" not in batch:
                raise ValueError(
                    f"the task is conditioned on {list(self.config.properties)} but the batch "
                    "has no property values ('props')"
                )
            cond["label"] = self.property_labels(batch["props"])
        return x0, mask, cond

    # ---- losses -----------------------------------------------------------------------------
    def loss(
        self,
        model: Callable[..., Any],
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        boundary: bool = False,
    ) -> Tensor:
        """The configured objective per molecule, (B,) nats (by default the continuous-time
        negative ELBO, bonds weighted by ``edge_weight``, plus ``ce_weight`` x_0 cross-entropy):
        the Trainer's loss. Training (``boundary=False``) drops property labels to null at
        random (:meth:`_drop_labels`, from the trainer's generator); ``boundary=True`` is the
        objective's unweighted bound, with every label kept."""
        x0, mask, cond = self.fields(batch)
        if "label" in cond and not boundary:
            cond["label"] = self._drop_labels(cond["label"], generator)
        return self.objective.loss(
            self.processes, model, x0, mask, cond=cond, generator=generator, boundary=boundary,
            config=self.config,
        )  # fmt: skip

    def loss_fn(self, model: Callable[..., Any], batch: dict, generator: torch.Generator) -> Tensor:
        """:meth:`loss` as the Trainer calls it (no boundary terms), (B,) nats."""
        return self.loss(model, batch, generator, boundary=False)

    def nll_fn(self, model: Callable[..., Any], batch: dict, generator: torch.Generator) -> Tensor:
        """The objective's unweighted bound (for the ELBO: a bound on -log p(graph | N), given
        the molecule's property bins for a conditioned task), (B,) nats."""
        x0, mask, cond = self.fields(batch)
        return self.objective.evaluate(
            self.processes, model, x0, mask, cond=cond, generator=generator, config=self.config
        )

    def to_mols(self, graphs: Sequence[Graph]) -> list[Chem.Mol]:
        """Unsanitised RDKit molecules of graphs (sanitise or repair them for metrics)."""
        return [graph_to_mol(a, b, self.vocab, sanitize=False) for a, b in graphs]

    def metrics(
        self,
        graphs: Sequence[Graph],
        train_smiles: Sequence[str] | set[str] | None = None,
        whole: set[str] | None = None,
        mols: Sequence[Chem.Mol] | None = None,
        reference: Any = None,
    ) -> dict[str, float]:
        """:func:`discdiff.chem.molecule_metrics` of sampled graphs (novelty with a train set,
        ``novelty_whole`` with the canonical set of the whole data set, the TV distances with a
        ``reference``); ``mols``: the graphs' :meth:`to_mols` when the caller has them already
        (they are not changed)."""
        train = None
        if train_smiles is not None:
            train = train_smiles if isinstance(train_smiles, set) else canonical_set(train_smiles)
        if mols is None:
            mols = self.to_mols(graphs)
        elif len(mols) != len(graphs):
            raise ValueError(f"got {len(mols)} molecules for {len(graphs)} graphs")
        return molecule_metrics(mols, train=train, whole=whole, reference=reference)


def _shipped() -> dict[str, Path]:
    """The shipped molecule models by name (from the catalogue: discdiff.catalogue)."""
    return {n: c.path for n, c in model_cards().items() if c.task == "molecules"}


class _ShippedNames(Mapping[str, Path]):
    """``SHIPPED``: the shipped molecule models' names -> weights, read from the catalogue."""

    def __getitem__(self, name: str) -> Path:
        return _shipped()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_shipped())

    def __len__(self) -> int:
        return len(_shipped())


SHIPPED: Mapping[str, Path] = _ShippedNames()


def shipped_checkpoint(name: str = "qm9") -> Path:
    """Path of a molecule model shipped with the package (weights; config JSON beside), checked
    against its card's sha256: ``"qm9"`` (unconditional) or ``"qm9-qed"`` (conditioned on QED,
    for ``--target qed=...``); ``discdiff models list`` shows them all."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped checkpoint {name!r}; the shipped ones are {sorted(SHIPPED)}")
    return model_path(name)


def grow_to_vocab(model: nn.Module, old: GraphVocab, new: GraphVocab) -> nn.Module:
    """A graph denoiser of vocabulary ``old`` made to serve ``new``: itself when they are the
    same; grown by an aromatic bond class (its rows started from single and double bonds) when
    ``new`` is ``old`` with aromatic bonds kept; anything else is one line."""
    if old == new:
        return model
    if old.atoms != new.atoms or not old.kekulize or new.kekulize:
        raise ValueError(f"a model of {old} cannot serve {new}: only an aromatic class is added")
    return grow_bond_classes(model, {4: (1, 2)})  # aromatic from single and double


def collate_molecules(items: Sequence[Any]) -> Any:
    """Padded items (dicts) -> torch's default collate; PyG ``Data`` items -> a PyG ``Batch``
    (torch-geometric is imported only then: with transformers beside it, that import alone
    costs seconds before the first step)."""
    if items and isinstance(items[0], dict):
        return torch.utils.data.default_collate(list(items))
    from discdiff.chem.pyg import collate_graphs

    return collate_graphs(items)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def param_count(model: nn.Module) -> int:
    """Number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())
