"""Checkpoints without pickles, written so that a kill at any moment leaves a loadable one.

A run directory holds::

    run_dir/
      config.json                  {"model": model_config, "train": TrainConfig fields}
      checkpoints/
        latest                     text: the name of the newest complete checkpoint
        step_00001000/
          config.json              same as above, so a checkpoint directory stands alone
          model.safetensors        weights (state-dict names, tied weights stored once)
          ema.safetensors          EMA weights (only when EMA is on)
          state.safetensors        every tensor of the training state (optimizer moments, RNGs)
          state.json               the rest of the training state; tensors appear as references
          manifest.json            size and sha256 of every file above, written last

Writing: the files go into a hidden temporary directory beside the final one, are flushed to
disk, the directory is renamed into place, and only then is ``latest`` replaced (itself written
to a temporary file and renamed). Older checkpoints are pruned after that, so the previous one
survives until the new one is complete. Loading checks the manifest and turns any truncated or
corrupt file into a one-line ``ValueError`` that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from discdiff.training.device import resolve_device
from discdiff.training.ema import module_tensors

__all__ = [
    "Checkpoint",
    "CHECKPOINTS_DIR",
    "encode_tree",
    "decode_tree",
    "write_json_atomic",
    "write_text_atomic",
    "save_checkpoint",
    "latest_checkpoint",
    "checkpoint_advice",
    "largest_weight",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "load_model",
]

CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
_STEP_PREFIX = "step_"


# ---------------------------------------------------------------------------------------------
# Pickle-free serialisation of nested state (optimizer state dicts, RNG states, ...)
# ---------------------------------------------------------------------------------------------


def encode_tree(obj: Any, tensors: dict[str, Tensor], path: str = "") -> Any:
    """Turn nested dicts/lists/tuples of tensors and primitives into JSON plus a tensor table.

    Tensors are moved (cloned, contiguous, on the CPU) into ``tensors`` under their path and
    replaced by ``{"__tensor__": path}``; tuples become ``{"__tuple__": [...]}``; dicts whose
    keys are not all plain strings become ``{"__dict__": [[key, value], ...]}`` so that integer
    keys (optimizer state is keyed by parameter index) survive the JSON round trip.
    Anything else (arbitrary objects) raises ``TypeError``: nothing is ever pickled.
    """
    if isinstance(obj, Tensor):
        tensors[path] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        plain = all(isinstance(k, str) and not k.startswith("__") for k in obj)
        if plain:
            return {k: encode_tree(v, tensors, f"{path}/{k}") for k, v in obj.items()}
        return {
            "__dict__": [
                [encode_tree(k, tensors, f"{path}/key{i}"), encode_tree(v, tensors, f"{path}/{k}")]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    raise TypeError(
        f"cannot store a {type(obj).__name__} at {path or '/'} in a checkpoint: only tensors, "
        "numbers, strings, None and dict/list/tuple of them are allowed"
    )


def decode_tree(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of ``encode_tree``."""
    if isinstance(obj, list):
        return [decode_tree(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            key = obj["__tensor__"]
            if key not in tensors:
                raise ValueError(f"checkpoint state refers to tensor {key!r} that is not stored")
            return tensors[key]
        if set(obj) == {"__tuple__"}:
            return tuple(decode_tree(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__dict__"}:
            return {decode_tree(k, tensors): decode_tree(v, tensors) for k, v in obj["__dict__"]}
        return {k: decode_tree(v, tensors) for k, v in obj.items()}
    return obj


from discdiff.files import (  # noqa: E402  (re-exported: atomic writes live in discdiff.files)
    _fsync_dir,
    _fsync_file,
    _write_bytes_atomic,
    usual_permissions,
    write_json_atomic,
    write_text_atomic,
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------


def _step_name(step: int) -> str:
    return f"{_STEP_PREFIX}{step:08d}"


def _step_of(name: str) -> int | None:
    if not name.startswith(_STEP_PREFIX):
        return None
    digits = name[len(_STEP_PREFIX) :]
    return int(digits) if digits.isdigit() else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run (those with a manifest), oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        (step, p)
        for p in root.iterdir()
        if p.is_dir() and (step := _step_of(p.name)) is not None and (p / MANIFEST).is_file()
    ]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: nn.Module | Mapping[str, Tensor],
    ema: Mapping[str, Tensor] | None = None,
    train_state: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    keep: int = 2,
    run_files: list[str] | None = None,
) -> Path:
    """Write checkpoint ``step`` of a run atomically and point ``latest`` at it; returns its dir.

    ``model``: a module (its tensors are taken with tied weights stored once) or a tensor dict.
    ``ema``: EMA tensors, or None. ``train_state``: nested optimizer/RNG/progress state (see
    ``encode_tree`` for what it may contain). ``config``: JSON-able run configuration.
    ``keep``: how many newest checkpoints to keep (>= 1); older ones are deleted only after the
    new one and ``latest`` are in place. ``run_files``: paths relative to ``run_dir`` that the
    run is rebuilt from (task.json, a tokenizer, ...): their sizes and hashes join the manifest,
    so loading finds a changed one.
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left behind by an earlier crash (single writer: rank 0)
        shutil.rmtree(stale, ignore_errors=True)

    name = _step_name(step)
    final = root / name
    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        weights = module_tensors(model) if isinstance(model, nn.Module) else dict(model)
        _save_tensors(weights, tmp / "model.safetensors")
        if ema is not None:
            _save_tensors(dict(ema), tmp / "ema.safetensors")
        tensors: dict[str, Tensor] = {}
        encoded = encode_tree(dict(train_state or {}), tensors)
        save_file(tensors, str(tmp / "state.safetensors"))
        usual_permissions(tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": step, "state": encoded}) + "\n")
        (tmp / "config.json").write_text(json.dumps(dict(config or {}), indent=2) + "\n")
        manifest: dict[str, Any] = {"step": step, "files": {}, "run_files": {}}
        for path in sorted(tmp.iterdir()):
            _fsync_file(path)
            manifest["files"][path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for rel in sorted(run_files or []):
            path = Path(run_dir) / rel
            manifest["run_files"][rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _fsync_file(tmp / MANIFEST)
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. after a resume): swap it out
            trash = root / f".tmp-old-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _write_bytes_atomic(root / LATEST, (name + "\n").encode())

    for old in list_checkpoints(run_dir)[:-keep]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(flat, str(path))
    usual_permissions(path)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint: its directory, step, config, weights and training state (on CPU)."""

    path: Path
    step: int
    config: dict[str, Any]
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    train_state: dict[str, Any]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The directory ``latest`` points to, or None when the run has no checkpoint yet.

    Without a ``latest`` file, the newest complete checkpoint (one with its manifest: a
    checkpoint directory is renamed into place only when complete, so it is sound) is the
    latest; a deleted pointer said "no checkpoints yet" beside two complete ones, and a new
    run would have been started over them. A ``latest`` file naming a missing directory
    raises ``ValueError``.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    pointer = root / LATEST
    if not pointer.is_file():
        complete = list_checkpoints(run_dir)
        return complete[-1] if complete else None
    name = pointer.read_text().strip()
    target = root / name
    if _step_of(name) is None or not target.is_dir():
        raise ValueError(f"{pointer} names {name!r}, which is not a checkpoint directory")
    return target


def _resolve(path: str | Path) -> Path:
    """A checkpoint directory from a run dir, its checkpoints/ dir, or a checkpoint dir."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if (path / MANIFEST).is_file():
        return path
    run_dir = path.parent if path.name == CHECKPOINTS_DIR else path
    found = latest_checkpoint(run_dir)
    if found is not None:
        return found
    raise FileNotFoundError(
        f"{path} is neither a checkpoint directory (no {MANIFEST}) nor a run directory "
        f"with {CHECKPOINTS_DIR}/{LATEST}"
    )


#: what every checkpoint holds (ema.safetensors only with EMA)
_REQUIRED = ("model.safetensors", "state.safetensors", "state.json", "config.json")


def _check_entries(base: Path, entries: Mapping[str, Any], what: str) -> None:
    for fname, meta in entries.items():
        fpath = base / fname
        if not fpath.is_file():
            raise ValueError(f"{what} file {fpath} is missing")
        size = fpath.stat().st_size
        if size != meta["bytes"]:
            raise ValueError(
                f"{what} file {fpath} is truncated or corrupt: {size} bytes, expected {meta['bytes']}"
            )
        if _sha256(fpath) != meta["sha256"]:
            raise ValueError(f"{what} file {fpath} is corrupt: sha256 does not match the manifest")


def _verify(ckpt: Path) -> dict[str, Any]:
    manifest_path = ckpt / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        step = int(manifest["step"])
        run_files = manifest.get("run_files", {})
        if not isinstance(files, dict) or not isinstance(run_files, dict):
            raise TypeError("'files' and 'run_files' must be objects")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"checkpoint manifest {manifest_path} is corrupt: {err}") from err
    present = {p.name for p in ckpt.iterdir() if p.is_file() and p.name != MANIFEST}
    unlisted = sorted((present | set(_REQUIRED)) - set(files))
    if unlisted:
        raise ValueError(
            f"checkpoint manifest {manifest_path} is incomplete: it does not cover {unlisted}"
        )
    _check_entries(ckpt, files, "checkpoint")
    _check_entries(ckpt.parent.parent, run_files, "run")
    return {"step": step, "files": files}


def _load_tensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint file {path} is corrupt: {err}") from err


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint file {path} is corrupt: {err}") from err


def load_checkpoint(path: str | Path, *, verify: bool = True) -> Checkpoint:
    """Load a checkpoint (a checkpoint dir, or a run dir meaning its latest one) onto the CPU.

    ``verify`` checks every file's size and sha256 against the manifest first. Any truncated,
    missing or unreadable file raises a one-line ``ValueError`` naming it.
    """
    ckpt = _resolve(path)
    manifest = _verify(ckpt) if verify else {"step": None, "files": {}}
    model = _load_tensors(ckpt / "model.safetensors")
    ema_path = ckpt / "ema.safetensors"
    ema = _load_tensors(ema_path) if ema_path.is_file() else None
    state_tensors = _load_tensors(ckpt / "state.safetensors")
    state_json = _load_json(ckpt / "state.json")
    config = _load_json(ckpt / "config.json")
    try:
        step = int(state_json["step"])
        train_state = decode_tree(state_json["state"], state_tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint file {ckpt / 'state.json'} is corrupt: {err}") from err
    if manifest["step"] is not None and manifest["step"] != step:
        raise ValueError(
            f"checkpoint {ckpt} is inconsistent: manifest says step {manifest['step']}, "
            f"state.json says {step}"
        )
    return Checkpoint(
        path=ckpt, step=step, config=config, model=model, ema=ema, train_state=train_state
    )


@torch.no_grad()
def load_weights(module: nn.Module, tensors: Mapping[str, Tensor]) -> nn.Module:
    """Copy saved tensors into ``module`` in place; names and shapes must match exactly.

    Expects the tensors ``module_tensors`` produces (tied weights stored once). Raises
    ``ValueError`` naming the first missing, unexpected or mis-shaped tensor.
    """
    live = module_tensors(module)
    missing = sorted(live.keys() - tensors.keys())
    extra = sorted(tensors.keys() - live.keys())
    if missing or extra:
        raise ValueError(
            f"weights do not match the model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for name, target in live.items():
        value = tensors[name]
        if value.shape != target.shape:
            raise ValueError(
                f"weight {name!r} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}"
            )
        if value.dtype != target.dtype:
            raise ValueError(
                f"weight {name!r} is stored as {value.dtype}, the model expects {target.dtype}"
            )
        if torch.is_floating_point(value) and not bool(torch.isfinite(value).all()):
            raise ValueError(f"weight {name!r} holds non-finite values: refusing to load it")
        target.detach().copy_(value)
    return module


def load_model(
    path: str | Path,
    build_model: Callable[[dict[str, Any]], nn.Module],
    *,
    use_ema: bool | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a trained model from a run or checkpoint dir, in eval mode, ready to sample.

    ``build_model(model_config)`` constructs the architecture from the ``"model"`` entry of
    config.json; the weights are then loaded into it. ``use_ema``: None takes the EMA weights
    when the checkpoint has them, True requires them, False takes the raw weights.
    """
    ckpt = load_checkpoint(path)
    model_config = ckpt.config.get("model")
    if model_config is None:
        raise ValueError(
            f"{ckpt.path / 'config.json'} has no 'model' entry to rebuild the model from"
        )
    model = build_model(model_config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_model must return an nn.Module, got {type(model).__name__}")
    if use_ema and ckpt.ema is None:
        raise ValueError(f"checkpoint {ckpt.path} has no ema.safetensors (EMA was off)")
    weights = ckpt.ema if (use_ema is not False and ckpt.ema is not None) else ckpt.model
    load_weights(model, weights)
    return model.to(resolve_device(device)).eval()


# ---- after a run diverged ----------------------------------------------------------------
#: weights beyond this (in absolute value) mean the run had diverged before it saved them
DIVERGED = 1e4


def largest_weight(checkpoint: Path) -> float:
    """max |w| over a checkpoint's floating-point weights (model and EMA), read from disk."""
    from safetensors import safe_open

    top = 0.0
    for name in ("model.safetensors", "ema.safetensors"):
        path = checkpoint / name
        if not path.is_file():
            continue
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                t = f.get_tensor(key)
                if torch.is_floating_point(t) and t.numel():
                    top = max(top, float(t.abs().max()))
    return top


def checkpoint_advice(run_dir: Path) -> str:
    """Which checkpoint to resume from after a non-finite loss: the last one is finite, but
    its weights may be huge already (about 1e30 after a learning rate of 1e3), and resuming
    there diverges again; then the newest whose weights stay below :data:`DIVERGED`."""
    last = latest_checkpoint(run_dir)
    if last is None:
        return ""
    top = largest_weight(last)
    if top <= DIVERGED:
        return f"; the last finite checkpoint is {last.name}"
    earlier = [c for c in reversed(list_checkpoints(run_dir)) if c != last]
    sound = [c for c in earlier if largest_weight(c) <= DIVERGED]
    where = (
        f"resume from {sound[0].name} (remove the newer step_* folders and checkpoints/latest, "
        "then --resume)"
        if sound
        else "no checkpoint is sound: start again"
    )
    return (
        f"; the last finite checkpoint, {last.name}, already has weights of {top:.1e} (the run "
        f"had diverged): {where}"
    )
