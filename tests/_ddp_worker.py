"""Toy model, data and losses for the training tests, and a torchrun worker entry point.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_worker.py RUN_DIR``
trains the toy model under DDP; ``run_toy(RUN_DIR)`` trains it in one process. The DDP test
compares the two.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from discdiff.training import TrainConfig, Trainer, cleanup_distributed

NUM_FEATURES = 6
NUM_CLASSES = 5


class ToyNet(nn.Module):
    """A two-layer classifier; ``dropout > 0`` makes the forward draw from the global RNG."""

    def __init__(self, hidden: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(NUM_FEATURES, hidden),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, F) -> (B, K)
        return self.net(x)


def build_toy(config: dict) -> ToyNet:
    """``build_model`` for checkpoints: the model config is ToyNet's keyword arguments."""
    return ToyNet(**config["config"])


def toy_dataset(n: int, seed: int = 0) -> TensorDataset:
    """``n`` examples: features (n, F) and labels (n,) from a fixed linear rule plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, NUM_FEATURES, generator=g)  # (n, F)
    w = torch.randn(NUM_FEATURES, NUM_CLASSES, generator=torch.Generator().manual_seed(99))
    y = (x @ w + 0.5 * torch.randn(n, NUM_CLASSES, generator=g)).argmax(-1)  # (n,)
    return TensorDataset(x, y)


def ce_loss(model: nn.Module, batch: list[Tensor], generator: torch.Generator) -> Tensor:
    """Per-example cross-entropy (B,), no randomness."""
    x, y = batch
    return nn.functional.cross_entropy(model(x), y, reduction="none")


def noisy_ce_loss(model: nn.Module, batch: list[Tensor], generator: torch.Generator) -> Tensor:
    """Cross-entropy on inputs jittered with noise drawn from ``generator`` (B,)."""
    x, y = batch
    noise = torch.randn(x.shape, generator=generator, device=x.device)  # (B, F)
    return nn.functional.cross_entropy(model(x + 0.3 * noise), y, reduction="none")


DDP_CONFIG = TrainConfig(
    steps=6,
    batch_size=8,
    lr=0.05,
    warmup_steps=2,
    grad_clip=0.5,
    grad_accum=2,
    ema_decay=0.9,
    eval_every=3,
    ckpt_every=3,
    log_every=1,
    seed=3,
)


def run_toy(run_dir: str | Path, config: TrainConfig = DDP_CONFIG) -> Trainer:
    """Train ToyNet on the toy data with ``config`` (plain cross-entropy) and return the trainer."""
    torch.manual_seed(0)
    model = ToyNet()
    trainer = Trainer(
        model,
        ce_loss,
        toy_dataset(40),
        config,
        run_dir,
        model_config={"type": "toy", "config": {}},
        eval_data=toy_dataset(13, seed=1),
        device="cpu",
        progress=False,
    )
    trainer.fit()
    return trainer


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_toy(sys.argv[1])
    cleanup_distributed()
