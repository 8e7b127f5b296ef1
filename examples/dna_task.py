"""A fourth task in public API only: DNA sequences over A/C/G/T through the generic spine.

The data are made here: a first-order Markov chain over the four bases with a strongly
structured transition matrix, so the exact entropy of the data is known and the model's
held-out bound (bits per base) can be set beside it. Train, evaluate, sample, reload:

    python examples/dna_task.py --steps 300 --out runs/dna

The task is registered as "dna": `discdiff task sample runs/dna` and the conformance suite
(`tests/conformance/test_tasks.py`, once this module is imported) treat it like the built-in
tasks.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import discdiff as dd

BASES = "ACGT"
#: P(next base | base): a chain that prefers a few dinucleotides (entropy rate ~1.2 bits)
TRANSITIONS = torch.tensor(
    [
        [0.70, 0.10, 0.10, 0.10],
        [0.05, 0.15, 0.75, 0.05],
        [0.30, 0.30, 0.10, 0.30],
        [0.10, 0.10, 0.10, 0.70],
    ],
    dtype=torch.float64,
)


def make_sequences(n: int, length: int, seed: int) -> torch.Tensor:
    """n chains of ``length`` bases, (n, L) ids; the first base is uniform."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, length, dtype=torch.long)
    x[:, 0] = torch.randint(0, 4, (n,), generator=g)
    for i in range(1, length):
        x[:, i] = torch.multinomial(TRANSITIONS[x[:, i - 1]], 1, generator=g).squeeze(1)
    return x


def exact_bits_per_base(x: torch.Tensor) -> float:
    """-log2 p(x) / L under the true chain, averaged over sequences (the optimum)."""
    logp = math.log(0.25) + torch.log(TRANSITIONS[x[:, :-1], x[:, 1:]]).sum(1)  # (N,)
    return float(-logp.mean() / math.log(2) / x.shape[1])


@dataclass(frozen=True)
class DNAConfig(dd.TaskConfig):
    """Sequence length, data sizes and seed, and the registered process to diffuse with."""

    length: int = 64
    num_train: int = 4000
    num_test: int = 500
    seed: int = 0
    process: str = "absorbing"


class Sequences(torch.utils.data.Dataset):
    """Items {"x": (L,) ids}."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i]}


@dd.register_task("dna")
class DNATask(dd.Task):
    """DNA over A/C/G/T: one field of bases, any registered process with a continuous ELBO."""

    config_class = DNAConfig
    unit = "bits/base"

    def __init__(self, config: DNAConfig) -> None:
        self.config = config
        self.process = dd.make_process(config.process, 4, schedule="loglinear")
        self.processes = {"bases": self.process}
        sizes = {"train": config.num_train, "val": config.num_test, "test": config.num_test}
        offsets = {"train": 0, "val": 1, "test": 2}
        self._data = {
            s: make_sequences(n, config.length, config.seed * 3 + offsets[s])
            for s, n in sizes.items()
        }

    @classmethod
    def example(cls, folder: Path) -> tuple[DNATask, dict[str, Any]]:
        return cls(DNAConfig(length=16, num_train=64, num_test=16)), {
            "num_layers": 1,
            "d_model": 32,
            "num_heads": 2,
            "cond_dim": 16,
        }

    def build_denoiser(self, **sizes: Any) -> dd.TransformerDenoiser:
        cfg = dd.TransformerConfig(
            num_states=self.process.num_states, num_classes=4, max_len=self.config.length, **sizes
        )
        return dd.TransformerDenoiser(cfg)

    def dataset(self, split: str) -> Sequences:
        return Sequences(self._data[split])

    def loss(self, model, batch, generator):
        return dd.continuous_elbo(
            self.process, model, batch["x"], boundary=False, generator=generator
        )

    def nll(self, model, batch, generator):
        return dd.continuous_elbo(
            self.process, model, batch["x"], boundary=True, generator=generator
        )

    def units(self, batch) -> torch.Tensor:
        return torch.full((batch["x"].shape[0],), float(self.config.length), dtype=torch.float64)

    def sample(self, model, n, sampler, *, generator=None, progress=False, **conditioning):
        res = sampler.sample(
            model, self.process, (n, self.config.length), generator=generator, progress=progress
        )
        return ["".join(BASES[i] for i in row) for row in res.samples.tolist()]


def transition_tv(seqs: list[str]) -> float:
    """Mean total-variation distance of the samples' base-to-base frequencies from the chain's."""
    counts = torch.zeros(4, 4, dtype=torch.float64)
    for s in seqs:
        for a, b in zip(s, s[1:], strict=False):
            counts[BASES.index(a), BASES.index(b)] += 1
    freq = counts / counts.sum(1, keepdim=True).clamp_min(1)
    return float(0.5 * (freq - TRANSITIONS).abs().sum(1).mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("runs/dna"))
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    task = DNATask(DNAConfig(length=args.length))
    torch.manual_seed(0)
    model = task.build_denoiser(num_layers=2, d_model=64, num_heads=4, cond_dim=32)
    cfg = dd.TrainConfig(
        steps=args.steps,
        batch_size=64,
        lr=1e-3,
        warmup_steps=20,
        eval_every=0,
        ckpt_every=args.steps,
    )
    dd.train_task(
        task, model, cfg, args.out, resume=(args.out / "checkpoints").is_dir(), progress=False
    )

    task, model = dd.load_run(args.out)  # the generic loader finds the "dna" task by name
    ev = task.evaluate(model, "test", batch_size=100, samples=2)
    best = exact_bits_per_base(task.dataset("test").x)
    seqs = task.sample(
        model,
        args.samples,
        dd.make_sampler("first-hitting"),
        generator=torch.Generator().manual_seed(0),
    )
    tv = transition_tv(seqs)
    print(f"test {ev.format()}; exact data entropy {best:.4f} bits/base; uniform 2.0")
    print(f"{args.samples} samples, e.g. {seqs[0]}; transition TV from the true chain {tv:.3f}")
    return {"bits_per_base": ev.value, "se": ev.se, "exact": best, "tv": tv}


if __name__ == "__main__":
    main()
