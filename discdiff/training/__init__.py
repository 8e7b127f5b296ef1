"""The one training loop and what it needs: checkpoints, EMA, devices, multi-process runs."""

from discdiff.training.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    load_weights,
    save_checkpoint,
)
from discdiff.training.device import (
    autocast_context,
    move_to_device,
    resolve_device,
    resolve_precision,
)
from discdiff.training.distributed import (
    DistInfo,
    cleanup_distributed,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
)
from discdiff.training.ema import EMA, module_tensors
from discdiff.training.logging import MetricsLogger, plot_loss_curve, read_metrics
from discdiff.training.trainer import LossFn, TrainConfig, Trainer, lr_at

__all__ = [
    "TrainConfig",
    "Trainer",
    "LossFn",
    "lr_at",
    "EMA",
    "module_tensors",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_weights",
    "load_model",
    "resolve_device",
    "resolve_precision",
    "autocast_context",
    "move_to_device",
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "MetricsLogger",
    "read_metrics",
    "plot_loss_curve",
]
