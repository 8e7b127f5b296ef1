"""Text training on one prepared data dir, for the DDP sharding test.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_text_worker.py
DATA_DIR RUN_DIR`` trains a tiny causal (autoregressive) text model under DDP; the same with
``python tests/_ddp_text_worker.py DATA_DIR RUN_DIR`` in one process. The causal model's loss is
exact (no noise draws), so the two runs are equal when the ranks together see the windows one
process sees. Each rank saves the windows it trained on (``seen-RANK.pt``: a list of (B, L)).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from discdiff.tasks import runs
from discdiff.tasks.text import TextTask, TextTaskConfig
from discdiff.training import TrainConfig, cleanup_distributed, get_rank

CONFIG = TrainConfig(steps=4, batch_size=8, lr=3e-3, warmup_steps=1, eval_every=0, seed=3)


def run(data_dir: str, out: str) -> None:
    task = TextTask.create(TextTaskConfig(corpus=data_dir, seq_len=16))
    torch.manual_seed(0)
    cfg = task.ar_model_config(num_layers=1, d_model=16, num_heads=2, cond_dim=8)
    model = task.build_model({"type": "transformer", "config": cfg.to_dict()})
    seen: list[torch.Tensor] = []

    def loss(model, batch, generator):  # noqa: ANN001, ANN202
        seen.append(batch["ids"].clone())
        return task.ar_loss_fn(model, batch, generator)

    runs.train(task, model, CONFIG, out, loss_fn=loss, device="cpu", progress=False)
    torch.save(seen, Path(out) / f"seen-{get_rank()}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], sys.argv[2])
    cleanup_distributed()
