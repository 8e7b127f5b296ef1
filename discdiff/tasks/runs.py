"""The spine around every task: one run-directory layout and one train / resume / load /
evaluate / sample / export flow, written once.

A run directory::

    run_dir/
      task.json              {"task_type": name, **the task's config}
      <task files>           what the task's save_files writes (text: tokenizer/)
      config.json            {"model": model entry, "train": TrainConfig}
      metrics.csv  loss_curve.png
      checkpoints/step_*/    weights (model, ema), training state, config.json, manifest

The model entry ``{"task_type", "task", "denoiser": {"type", "config"}}`` is the one
checkpoint format: a checkpoint's config.json holds it, and an exported model is its weights
(``NAME.safetensors``) with the same entry beside it (``NAME.json``, or ``X_config.json`` for
``X_model.safetensors``; task files in ``<stem>_files/``). :func:`from_pretrained` reads any
of the three (run dir, checkpoint dir, exported file) and returns ``(task, model)``, like
:func:`load_run`, for every task.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from discdiff.catalogue import model_cards, model_path
from discdiff.files import save_tensors, sha256_file, sha256_tree, usual_permissions
from discdiff.tasks.base import TASK_FILE, TASK_TYPE, TASKS, Task, read_task_file
from discdiff.training import (
    TrainConfig,
    Trainer,
    latest_checkpoint,
    load_checkpoint,
    load_model,
    load_weights,
)
from discdiff.training.checkpoint import write_json_atomic
from discdiff.training.device import resolve_device
from discdiff.training.ema import module_tensors
from discdiff.training.errors import TrainingInterrupted

__all__ = [
    "train",
    "load_task",
    "load_run",
    "from_pretrained",
    "export",
    "saved_settings",
    "expect_task",
    "warm_start",
    "config_path",
    # the training names the command line needs, so that it reaches training through the spine
    "TrainConfig",
    "TrainingInterrupted",
    "latest_checkpoint",
    "resolve_device",
]

LossFn = Callable[[nn.Module, Any, torch.Generator], Tensor]


def _check_same_task(run_dir: Path, task: Task) -> None:
    saved = Task.load(run_dir) if (run_dir / TASK_FILE).is_file() else None
    if saved is not None and (type(saved) is not type(task) or saved.config != task.config):
        raise ValueError(
            f"the task saved in {str(run_dir)!r} differs from this one: "
            f"{saved.config.to_dict()} != {task.config.to_dict()}"
        )


def train(
    task: Task,
    model: nn.Module,
    train_config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    loss_fn: LossFn | None = None,
    eval_fn: LossFn | None = None,
    device: str = "auto",
    progress: bool = True,
    tensorboard: bool = False,
) -> dict[str, float]:
    """Train ``model`` on ``task``'s training split with the shared Trainer into ``run_dir``.

    A new run saves the task first; an existing one needs ``resume=True`` and the same task.
    Evaluates :meth:`Task.nll` on the "val" split every ``eval_every`` steps. ``loss_fn`` /
    ``eval_fn`` replace the task's (the text task's AR yardstick uses this). Returns the
    Trainer's last metrics.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a discdiff Task, got {type(task).__name__}")
    folder = Path(run_dir)
    if latest_checkpoint(folder) is None:
        task.save(folder)
    elif not resume:
        raise ValueError(
            f"run dir {str(folder)!r} already has checkpoints; pass resume=True (--resume) to "
            "continue it or choose a new run dir"
        )
    else:
        _check_same_task(folder, task)
    trainer = Trainer(
        model,
        loss_fn if loss_fn is not None else task.loss,
        task.dataset("train"),
        train_config,
        folder,
        model_config=task.model_entry(model),
        eval_data=task.dataset("val") if train_config.eval_every else None,
        eval_fn=eval_fn if eval_fn is not None else task.nll,
        collate_fn=task.collate(),
        count_tokens=task.count_tokens,
        device=device,
        progress=progress,
        tensorboard=tensorboard,
        run_files=task_files(folder),
    )
    return trainer.fit(resume=resume)


#: what the Trainer writes in a run dir (everything else there is the task's)
_TRAINER_OUTPUTS = {"config.json", "metrics.csv", "loss_curve.png", "checkpoints", ".lock"}


def task_files(run_dir: str | os.PathLike[str]) -> list[str]:
    """The files of a run dir that rebuild its task (task.json and what ``save_files`` wrote),
    relative to the run dir: every checkpoint's manifest covers them."""
    root = Path(run_dir)
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            rel.parts[0] in _TRAINER_OUTPUTS
            or rel.parts[0].startswith("events.")
            or not path.is_file()
        ):
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        out.append(rel.as_posix())
    return out


def load_task(run_dir: str | os.PathLike[str]) -> Task:
    """The task saved in a run dir (its class found by the name in task.json)."""
    return Task.load(run_dir)


def _entry_task(entry: dict[str, Any], folder: Path | None, where: str) -> Task:
    name = entry.get(TASK_TYPE)
    if name is None or "task" not in entry:
        raise ValueError(f"{where} is not a discdiff model entry (needs task_type, task)")
    return TASKS.get(name).from_config(dict(entry["task"]), folder)


def expect_task(task: Task, expect: str | None, where: str | os.PathLike[str]) -> Task:
    """``task`` when ``expect`` is None or names its registered task; else one line saying
    what ``where`` holds (a text run given to a molecule command)."""
    if expect is not None and not isinstance(task, TASKS.get(expect)):
        raise ValueError(f"{str(where)!r} holds a {task.name} model, not a {expect} model")
    return task


def load_run(
    run_dir: str | os.PathLike[str],
    device: str = "cpu",
    use_ema: bool | None = None,
    expect: str | None = None,
) -> tuple[Task, nn.Module]:
    """(task, model in eval mode) of a run dir's latest checkpoint (EMA weights when saved,
    unless ``use_ema=False``); ``expect`` names the task it must be (:func:`expect_task`)."""
    folder = Path(run_dir)
    read_task_file(folder)  # one-line errors for a missing dir / task.json
    task = expect_task(Task.load(folder), expect, folder)
    if latest_checkpoint(folder) is None:
        raise FileNotFoundError(f"run dir {str(folder)!r} has no checkpoints yet")

    def build(entry: dict[str, Any]) -> nn.Module:
        check_same_task(task, entry, folder)
        return task.build_model(entry)

    model = load_model(folder, build, use_ema=use_ema, device=device)
    return task, model


def check_same_task(task: Task, entry: dict[str, Any], where: Path) -> None:
    """task.json and the checkpoint's model entry must describe the same task (a process
    swapped in task.json would otherwise sample silently with the wrong process)."""
    saved = entry.get("task") if isinstance(entry, dict) else None
    if not isinstance(saved, dict):
        return  # an entry written before the spine: nothing to compare
    try:
        saved_cfg = type(task).config_class.from_dict(saved)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the checkpoint's task config in {where} is invalid: {err}") from err
    if saved_cfg != task.config:
        mine, theirs = task.config.to_dict(), saved_cfg.to_dict()
        diff = [k for k in mine if mine.get(k) != theirs.get(k)]
        shown = ", ".join(f"{k}: {mine.get(k)!r} != {theirs.get(k)!r}" for k in diff[:3])
        raise ValueError(
            f"task.json in {where} does not match the checkpoint's task ({shown}); "
            "the run dir was edited or mixed with another run"
        )


def config_path(weights: Path) -> Path:
    """The model entry beside exported weights: ``X_config.json`` for ``X_model.safetensors``,
    else ``NAME.json``."""
    stem = weights.name.removesuffix(".safetensors")
    if stem.endswith("_model"):
        return weights.with_name(stem.removesuffix("_model") + "_config.json")
    return weights.with_name(stem + ".json")


def _files_dir(weights: Path) -> Path:
    return weights.with_name(weights.name.removesuffix(".safetensors") + "_files")


#: storage types an export may use (``dtype=``): half the bytes, rounded weights
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export(
    task: Task, model: nn.Module, weights: str | os.PathLike[str], dtype: str = "float32"
) -> tuple[Path, Path]:
    """Write ``model``'s weights (safetensors) and its model entry beside them (see the module
    docstring); the task's files, if it has any, go into ``<stem>_files/``.

    ``dtype``: the floating weights' storage type ("float32", "bfloat16" or "float16": half the
    bytes, each weight rounded to it); the entry records it and loading casts back to the
    model's own type. Weights that overflow float16 are refused (bfloat16 has float32's range).
    """
    path = Path(weights)
    if path.suffix != ".safetensors":
        raise ValueError(f"exported weights must be a .safetensors file, got {str(path)!r}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {', '.join(STORAGE_DTYPES)}")
    tensors = {k: v.detach().contiguous() for k, v in module_tensors(model).items()}
    if dtype != "float32":
        tensors = {k: _stored(k, v, STORAGE_DTYPES[dtype]) for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    files, tag = _files_dir(path), uuid.uuid4().hex[:8]
    new_files = files.with_name(f".{files.name}.tmp-{tag}")
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    try:
        new_files.mkdir()
        task.save_files(new_files)
        has_files = any(new_files.iterdir())
        save_tensors(tensors, tmp, name=path)
        usual_permissions(tmp)
        manifest = {
            "weights_sha256": sha256_file(tmp),
            "files_sha256": sha256_tree(new_files) if has_files else None,
        }
        if dtype != "float32":
            manifest["dtype"] = dtype
        # the files, then the weights, then the entry naming both by hash: a reader that
        # finds the entry of another moment refuses the mix (:func:`_check_export`)
        if files.exists():
            old = files.with_name(f".{files.name}.old-{tag}")
            os.replace(files, old)
            shutil.rmtree(old, ignore_errors=True)
        if has_files:
            os.replace(new_files, files)
        os.replace(tmp, path)
        cfg = config_path(path)
        write_json_atomic(cfg, {**task.model_entry(model), EXPORT_KEY: manifest})
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(new_files, ignore_errors=True)
    return path, cfg


#: the model entry's record of the exported files it belongs with
EXPORT_KEY = "export"


def _stored(name: str, value: Tensor, dtype: torch.dtype) -> Tensor:
    """A float32 weight as ``dtype`` for storage; one that overflows it is refused."""
    if not torch.is_floating_point(value) or value.dtype != torch.float32:
        return value
    out = value.to(dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"weight {name!r} overflows {str(dtype).removeprefix('torch.')} (largest "
            f"{value.abs().max().item():.3g}): export as bfloat16 or float32"
        )
    return out


def _as_model_types(entry: dict[str, Any], model: nn.Module, tensors: dict[str, Tensor]) -> dict:
    """Weights an export stored in a narrower type (its record says which), cast back to the
    model's; anything else is passed through for :func:`load_weights` to check as it is."""
    record = entry.get(EXPORT_KEY)
    stored = STORAGE_DTYPES.get(record.get("dtype", "")) if isinstance(record, dict) else None
    if stored is None:
        return tensors
    live = module_tensors(model)
    return {
        k: v.to(live[k].dtype) if k in live and v.dtype == stored and
        torch.is_floating_point(live[k]) else v
        for k, v in tensors.items()
    }  # fmt: skip


def _check_export(entry: dict[str, Any], weights: Path, cfg: Path) -> None:
    """The weights (and task files) beside an exported entry must be the ones it was written
    with: an export cut short, or files of two exports mixed, load A's weights with B's
    tokenizer without a word otherwise. Entries written before the record are taken as is."""
    record = entry.get(EXPORT_KEY)
    if not isinstance(record, dict):
        return
    files = _files_dir(weights)
    found_files = sha256_tree(files) if files.is_dir() else None
    if sha256_file(weights) != record.get("weights_sha256") or found_files != record.get(
        "files_sha256"
    ):
        raise ValueError(
            f"{str(cfg)!r} does not belong with {str(weights)!r} and its files (an export was "
            "cut short, or two exports were mixed): export again"
        )


def _read_entry(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read checkpoint config {str(path)!r}: {err}") from err
    if not isinstance(doc, dict) or "task" not in doc or "denoiser" not in doc:
        raise ValueError(f"{str(path)!r} is not a model config (needs task, denoiser)")
    return doc


def from_pretrained(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    use_ema: bool | None = None,
    task_type: str | None = None,
    expect: str | None = None,
) -> tuple[Task, nn.Module]:
    """(task, model in eval mode) from a run dir, a checkpoint dir, exported weights or the
    name of a shipped model (``discdiff models list``; its file checked against its card).

    ``task_type`` names the task for a model entry that does not (files written before the
    task spine); otherwise the entry's own ``task_type`` decides. ``expect`` names the task
    the model must be for (one line otherwise, before any weights are read) and is the
    ``task_type`` of an entry that names none.
    """
    task_type = task_type or expect
    device = resolve_device(device)  # "auto" too
    p = Path(path)
    if not p.exists() and str(path) in model_cards():  # a file of that name wins
        p = model_path(str(path))
    if p.is_dir():
        if (p / TASK_FILE).is_file():
            return load_run(p, device=str(device), use_ema=use_ema, expect=expect)
        if (p / "manifest.json").is_file():  # one checkpoint dir: its run dir holds the task
            ckpt = load_checkpoint(p)
            task = _entry_task(
                _with_type(ckpt.config.get("model") or {}, task_type), p.parent.parent, str(p)
            )
            expect_task(task, expect, p)
            model = task.build_model(ckpt.config["model"])
            load_weights(model, ckpt.ema if (use_ema is not False and ckpt.ema) else ckpt.model)
            return task, model.to(device).eval()
        raise FileNotFoundError(f"{str(p)!r} is neither a run dir nor a checkpoint dir")
    if not p.is_file():
        raise FileNotFoundError(
            f"{str(p)!r} does not exist (nor is it a shipped model's name: "
            f"{', '.join(model_cards())})"
        )
    if p.suffix != ".safetensors":
        raise ValueError(
            f"{str(p)!r} is a file, not a run dir, a checkpoint dir or exported .safetensors "
            "weights"
        )
    cfg = config_path(p)
    if not cfg.is_file():
        raise FileNotFoundError(f"checkpoint config {str(cfg)!r} does not exist")
    entry = _with_type(_read_entry(cfg), task_type)
    _check_export(entry, p, cfg)
    record = {EXPORT_KEY: entry.pop(EXPORT_KEY, None)}
    files = _files_dir(p)
    task = _entry_task(entry, files if files.is_dir() else None, str(cfg))
    expect_task(task, expect, p)
    model = task.build_model(entry)
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"cannot read checkpoint weights {str(p)!r}: {err}") from err
    load_weights(model, _as_model_types(record, model, tensors))
    return task, model.to(device).eval()


def _with_type(entry: dict[str, Any], task_type: str | None) -> dict[str, Any]:
    if TASK_TYPE not in entry and task_type is not None:
        return {TASK_TYPE: task_type, **entry}
    return entry


def saved_settings(
    run_dir: str | os.PathLike[str], expect: str | None = None
) -> tuple[Task, dict[str, Any], dict[str, Any]]:
    """(task, model entry, train settings) of a run to resume: what ``--resume`` continues;
    ``expect`` names the task it must be (:func:`expect_task`)."""
    folder = Path(run_dir)
    task = expect_task(Task.load(folder), expect, folder)
    cfg = folder / "config.json"
    try:
        doc = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {cfg}: {err}") from err
    model, train_cfg = doc.get("model"), doc.get("train")
    if not isinstance(model, dict) or not isinstance(train_cfg, dict):
        raise ValueError(f"{cfg} lacks the model entry or the train settings")
    return task, model, train_cfg


def warm_start(model: nn.Module, source: nn.Module, new: Sequence[str] = ()) -> list[str]:
    """Copy ``source``'s weights into ``model`` (fine-tuning from a trained model); returns the
    names of ``model``'s parameters left as initialised. Those must start with one of ``new``
    (e.g. a conditioned model's label tables); any other difference is one line."""
    have, want = source.state_dict(), model.state_dict()
    extra = sorted(set(have) - set(want))
    missing = sorted(set(want) - set(have))
    odd = [k for k in missing if not any(k.startswith(p) for p in new)]
    shapes = [k for k in set(have) & set(want) if have[k].shape != want[k].shape]
    if extra or odd or shapes:
        what = extra[:2] + odd[:2] + sorted(shapes)[:2]
        raise ValueError(f"the initial weights do not fit this denoiser (differ at {what})")
    model.load_state_dict({k: have[k] for k in want if k in have}, strict=False)
    return missing
