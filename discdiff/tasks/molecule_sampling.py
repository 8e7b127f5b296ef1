"""Sampling molecule graphs: node counts from the data's histogram, padding held fixed, any
registered sampler that fits the task's processes (mixed into the molecule task)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from discdiff.chem.graph import dense_fields_to_graphs, num_edges, sample_node_counts
from discdiff.samplers import SAMPLERS, Sampler, make_sampler

__all__ = ["GraphSampling", "GRID_POWER", "SAMPLE_STEPS"]

Graph = tuple[Tensor, Tensor]
# Ancestral steps at t_k = (1 - k/n)^P. QM9 model at 20.5k steps, 10k samples, strict validity:
# 100 steps P=2 96.39%, 50 steps P=3 96.09% (half the time); 500 samples at 100 steps on the
# 13k-step weights: P = 1 / 1.5 / 2 / 3 / 4 -> 93.2 / 94.6 / 96.2 / 96.0 / 94.6%.
GRID_POWER = 3.0
SAMPLE_STEPS = 50


class GraphSampling:
    """``make_sampler`` / ``sample_fields`` / ``sample_graphs`` of
    :class:`~discdiff.tasks.molecules.MoleculeTask` (uses its ``config`` and ``processes``)."""

    # ---- sampling ---------------------------------------------------------------------------
    def make_sampler(
        self,
        steps: int,
        sampler: str = "ancestral",
        grid_power: float = GRID_POWER,
        valence_guard: bool = True,
        **options: Any,
    ) -> Sampler:
        """A registered sampler that fits this task's processes (checked now, one line).

        ``grid_power`` warps the ancestral time grid (t_k = (1 - k/n) ** power, see
        :func:`discdiff.samplers.time_grid`); samplers without a grid ignore it.
        ``valence_guard`` (ancestral): every reverse step draws x_0 under the valence
        constraint (:class:`~discdiff.chem.valence.ValenceGuardedSampler`), so no sampled atom
        has more bonds than its element and charge allow; False is plain ancestral sampling.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS.names()}")
        if sampler == "ancestral" and valence_guard:
            from discdiff.chem.valence import ValenceGuardedSampler

            return ValenceGuardedSampler(steps, self.vocab, grid_power=grid_power, **options)
        s = make_sampler(sampler, steps=steps, grid_power=grid_power, **options)
        try:
            s.check_processes(self.processes)
        except TypeError as err:
            raise ValueError(
                f"sampler {sampler!r} cannot serve the {self.config.process!r} process: {err}"
            ) from err
        return s

    def sample_fields(
        self,
        model: Callable[..., Any],
        node_counts: Tensor,
        *,
        steps: int = SAMPLE_STEPS,
        sampler: str | Sampler = "ancestral",
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
        if isinstance(sampler, str):
            sampler = self.make_sampler(steps, sampler, grid_power)
        result = sampler.sample(
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
        sampler: str | Sampler = "ancestral",
        batch_size: int = 250,
        grid_power: float = GRID_POWER,
        generator: torch.Generator | None = None,
        progress: Callable[[int], None] | None = None,
        valence_guard: bool = True,
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
        if isinstance(sampler, str):
            sampler = self.make_sampler(steps, sampler, grid_power, valence_guard)
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
