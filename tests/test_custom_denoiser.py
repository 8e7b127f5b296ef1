"""A user's own denoiser (never registered) trains through the spine, is saved by import path
``module:Class``, and the CLI loads it back for sampling and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from discdiff.cli.main import main
from discdiff.nn import denoiser_config, denoiser_from_config
from discdiff.tasks import runs
from discdiff.tasks.base import TaskConfig
from discdiff.tasks.text import TextTask
from discdiff.training import TrainConfig


@dataclass(frozen=True)
class BagConfig(TaskConfig):
    num_states: int
    num_classes: int
    width: int = 16


class BagOfTokens(nn.Module):
    """A deliberately plain denoiser: each position sees its own token and the mean of all."""

    config_class = BagConfig

    def __init__(self, config: BagConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.num_states, config.width)
        self.out = nn.Linear(2 * config.width, config.num_classes)

    def forward(self, x_t, t, cond=None):
        h = self.embed(x_t)  # (B, L, W)
        ctx = h.mean(1, keepdim=True).expand_as(h)
        return self.out(torch.cat([h, ctx], -1))  # (B, L, K)


def test_unregistered_denoiser_round_trips_by_import_path(tmp_path, capsys):
    task, _ = TextTask.example(tmp_path / "data")
    cfg = BagConfig(num_states=task.process.num_states, num_classes=task.tokenizer.vocab_size)
    torch.manual_seed(0)
    model = BagOfTokens(cfg)
    entry = denoiser_config(model)
    assert entry["type"] == f"{__name__}:BagOfTokens"
    assert isinstance(denoiser_from_config(entry), BagOfTokens)
    train = TrainConfig(steps=2, batch_size=4, eval_every=0, ckpt_every=2, log_every=1)
    runs.train(task, model, train, tmp_path / "run", progress=False)
    capsys.readouterr()
    assert main(["text", "sample", str(tmp_path / "run"), "-n", "2", "--steps", "4"]) == 0
    assert capsys.readouterr().out.count("=== sample") == 2
    assert main(["text", "eval", str(tmp_path / "run"), "--max-chunks", "4"]) == 0
    assert "bits/char" in capsys.readouterr().out
