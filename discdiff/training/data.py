"""Batches for the Trainer: a resumable, rank-sharded stream of training batches and the
held-out batches of an evaluation.

``train_data`` is either a map-style ``Dataset`` of examples, batched here with a seeded
``DistributedSampler`` (reshuffled each epoch, sharded across ranks), or any re-iterable of
ready-made batches (under DDP rank r takes batches r, r + W, r + 2W, ... of that stream).
The stream's position (epoch, batch within the epoch) is what a checkpoint saves, so a
resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

__all__ = [
    "BatchStream",
    "resident_fields",
    "fits_on_device",
    "eval_batches",
    "is_map_dataset",
    "batch_len",
    "round_robin",
    "permute",
]


def is_map_dataset(data: object) -> bool:
    """A map-style Dataset (len + getitem), as opposed to an iterable of batches."""
    return (
        isinstance(data, Dataset)
        and not isinstance(data, IterableDataset)
        and hasattr(data, "__len__")
        and hasattr(data, "__getitem__")
    )


def batch_len(batch: Any) -> int:
    """Examples in a batch: leading size of its first tensor (or ``num_graphs`` / ``len``)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    num_graphs = getattr(batch, "num_graphs", None)
    if isinstance(num_graphs, int):
        return num_graphs
    if isinstance(batch, Mapping):
        for value in batch.values():
            return batch_len(value)
    if isinstance(batch, list | tuple) and batch:
        return batch_len(batch[0])
    return 0


def resident_fields(data: object) -> dict[str, Tensor] | None:
    """The tensors of a map-style dataset that batches by indexing, or None.

    A dataset qualifies by a ``fields`` mapping of tensors whose first dimension is its length,
    with ``collate([data[i] for i in idx]) == {k: v[idx] for k, v in fields.items()}`` (as
    :class:`discdiff.tasks.molecules.data.GraphDataset` promises): its batches can then be
    gathered on the device from one resident copy, with no DataLoader and no Python per item.
    """
    fields = getattr(data, "fields", None)
    if not is_map_dataset(data) or not isinstance(fields, Mapping) or not fields:
        return None
    n = len(data)  # type: ignore[arg-type]
    ok = all(isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == n for v in fields.values())
    return dict(fields) if ok else None


def fits_on_device(fields: Mapping[str, Tensor], device: torch.device, share: float = 0.25) -> bool:
    """Whether the fields take at most ``share`` of the device's free memory (always on a CPU,
    where they are in memory already)."""
    if device.type != "cuda":
        return True
    nbytes = sum(v.numel() * v.element_size() for v in fields.values())
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def round_robin(stream: Iterable[Any], world: int, rank: int, start: int) -> Iterator[Any]:
    """This rank's share of a batch stream: batch ``k * world + rank`` for k >= ``start``.

    Only whole rounds of ``world`` batches are used, so every rank gets the same number of
    batches (an uneven tail would leave one rank waiting in DDP's all-reduce forever).
    """
    group: list[Any] = []
    k = 0
    for batch in stream:
        group.append(batch)
        if len(group) < world:
            continue
        if k >= start:
            yield group[rank]
        group = []
        k += 1


def _loader(
    dataset: Dataset,
    batches: Iterable[list[int]],
    collate_fn: Callable[[list[Any]], Any],
    num_workers: int,
    pin_memory: bool,
    seed: int,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # A private generator, so creating the loader never consumes the global RNG.
        generator=torch.Generator().manual_seed(seed),
    )


def _key(seed: int, *parts: object) -> int:
    text = "/".join(map(str, (seed, *parts)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


_M64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def permute(positions: np.ndarray, n: int, key: int) -> np.ndarray:
    """pi(positions) for a pseudo-random permutation pi of [0, n) chosen by ``key``.

    A 4-round Feistel network on the smallest even number of bits that covers n, walked
    until it lands inside [0, n) (a bijection of [0, n) because the network is one of a
    power-of-two domain at most 4n): O(1) memory, any position computed on its own, so an
    epoch's shuffle never needs an index list.
    """
    if n <= 1:
        return np.zeros_like(np.asarray(positions, dtype=np.int64))
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = [np.uint64(_key(key, "round", r) & _M64) for r in range(4)]
    with np.errstate(over="ignore"):

        def once(x: np.ndarray) -> np.ndarray:
            left, right = x >> np.uint64(half), x & mask
            for k in keys:
                left, right = right, left ^ (_mix(right ^ k) & mask)
            return (left << np.uint64(half)) | right

        y = once(np.asarray(positions, dtype=np.uint64))
        out = y >= np.uint64(n)
        while out.any():
            y[out] = once(y[out])
            out = y >= np.uint64(n)
    return y.astype(np.int64)


class BatchStream:
    """This rank's training batches forever; ``epoch`` / ``position`` say where it stands."""

    def __init__(
        self,
        data: Dataset | Iterable[Any],
        micro_batch_size: int,
        *,
        seed: int,
        world: int = 1,
        rank: int = 0,
        collate_fn: Callable[[list[Any]], Any],
        num_workers: int = 0,
        pin_memory: bool = False,
        resident: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.data = data
        #: the dataset's fields on the training device (:func:`resident_fields`), or None
        self.resident = dict(resident) if resident is not None else None
        self.micro_batch_size = micro_batch_size
        self.seed, self.world, self.rank = seed, world, rank
        self.collate_fn, self.num_workers, self.pin_memory = collate_fn, num_workers, pin_memory
        self.epoch = 0
        self.position = 0

    def state(self) -> dict[str, int]:
        """What a checkpoint saves."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])

    def _epoch_batches(self, epoch: int, start: int) -> Iterator[Any]:
        """This rank's batches of ``epoch`` from its ``start``-th on."""
        if self.resident is not None:
            yield from self._resident_batches(epoch, start)
            return
        if is_map_dataset(self.data) and getattr(self.data, "epoch_items", None) is not None:
            yield from self._random_batches(epoch, start)
            return
        if is_map_dataset(self.data):
            sampler = DistributedSampler(
                self.data,
                num_replicas=self.world,
                rank=self.rank,
                shuffle=True,
                seed=self.seed,
                drop_last=True,
            )
            sampler.set_epoch(epoch)
            indices = list(sampler)
            size = self.micro_batch_size
            count = len(indices) // size
            if count == 0:
                raise ValueError(
                    f"train_data has {len(self.data)} examples, fewer than one global "
                    f"micro-batch of {size * self.world}"
                )
            batches = [indices[i * size : (i + 1) * size] for i in range(start, count)]
            if batches:
                yield from _loader(
                    self.data,
                    batches,
                    self.collate_fn,
                    self.num_workers,
                    self.pin_memory,
                    self.seed,
                )
            return
        yield from round_robin(self.data, self.world, self.rank, start)

    def _resident_batches(self, epoch: int, start: int) -> Iterator[dict[str, Tensor]]:
        """Batches gathered from the resident fields: epoch e visits the examples in the order
        of a permutation drawn on their device by a generator seeded with (seed, e); global
        micro-batch k is positions [k W m, (k + 1) W m) of it and rank r takes its m (the
        last partial batch is dropped). No host sync, no Python per example; resuming at batch
        k draws the same permutation and skips to k."""
        fields = self.resident
        assert fields is not None
        first_field = next(iter(fields.values()))
        n, device = int(first_field.shape[0]), first_field.device
        size, world = self.micro_batch_size, self.world
        count = n // (size * world)
        if count == 0:
            raise ValueError(
                f"train_data has {n} examples, fewer than one global micro-batch of {size * world}"
            )
        gen = torch.Generator(device=device)
        gen.manual_seed(_key(self.seed, "resident", epoch) & (2**63 - 1))
        order = torch.randperm(n, generator=gen, device=device)  # (n,)
        for k in range(start, count):
            first = (k * world + self.rank) * size
            idx = order[first : first + size]  # (m,)
            yield {name: v.index_select(0, idx) for name, v in fields.items()}

    def _random_batches(self, epoch: int, start: int) -> Iterator[Any]:
        """Random-access windows (a dataset with ``epoch_items`` and ``stride``: every window
        start of a token file, windows ``stride`` apart do not overlap).

        Epoch e starts its grid at a seeded offset o < stride and visits the windows
        o, o + stride, ... in the order of a seeded permutation (:func:`permute`); global
        micro-batch k holds permuted positions [k W m, (k + 1) W m) and rank r takes its m of
        them. So each token is seen once an epoch, ranks see disjoint windows, W ranks at
        micro-batch m see what one process sees at W m, and no index list is built (memory
        flat in the data size; resuming at batch k costs nothing).
        """
        size, world = self.micro_batch_size, self.world
        stride, n = int(self.data.stride), len(self.data)
        offset = _key(self.seed, "offset", epoch) % min(stride, max(n, 1))
        items = (n - 1 - offset) // stride + 1 if n > offset else 0
        count = items // (size * world)
        if count == 0:
            raise ValueError(
                f"train_data has {items} windows an epoch, fewer than one global "
                f"micro-batch of {size * world}"
            )
        key = _key(self.seed, "order", epoch)

        def draws() -> Iterator[list[int]]:
            for k in range(start, count):
                first = (k * world + self.rank) * size
                pos = permute(np.arange(first, first + size), items, key)
                yield (offset + pos * stride).tolist()

        yield from _loader(
            self.data, draws(), self.collate_fn, self.num_workers, self.pin_memory, self.seed
        )

    def __iter__(self) -> Iterator[Any]:
        """Batches forever, advancing (epoch, position) so that a checkpoint can resume here."""
        while True:
            start = self.position
            produced = False
            for batch in self._epoch_batches(self.epoch, start):
                produced = True
                self.position += 1
                yield batch
            if not produced and start == 0:
                raise ValueError(
                    "train_data produced no batches for a whole epoch; pass a re-iterable "
                    "(a list, Dataset or DataLoader), not a one-shot iterator"
                )
            self.epoch += 1
            self.position = 0


def eval_batches(
    data: Dataset | Iterable[Any],
    micro_batch_size: int,
    limit: int | None,
    *,
    world: int = 1,
    rank: int = 0,
    collate_fn: Callable[[list[Any]], Any],
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
) -> Iterator[Any]:
    """This rank's share of the first ``limit`` held-out batches, in order."""
    if is_map_dataset(data):
        size = micro_batch_size
        total = len(data)
        if limit is not None:
            total = min(total, limit * size * world)
        mine = list(range(rank, total, world))
        batches = [mine[i : i + size] for i in range(0, len(mine), size)]
        if batches:
            yield from _loader(data, batches, collate_fn, num_workers, pin_memory, seed)
        return
    for j, batch in enumerate(data):
        if limit is not None and j >= limit:
            return
        if j % world == rank:
            yield batch
