"""Every registered task through the spine: train two steps, save, load, evaluate, sample;
and the same seed trains the same weights, bit for bit. Registering a task (with its
``example``) is all it takes."""

from __future__ import annotations

import math

import pytest
import torch

from discdiff.samplers import SAMPLERS, make_sampler
from discdiff.tasks import TASKS, runs
from discdiff.training import TrainConfig
from discdiff.training.ema import module_tensors


def tiny_train(task, sizes, run_dir, seed=0):
    torch.manual_seed(seed)
    model = task.build_denoiser(**sizes)
    cfg = TrainConfig(
        steps=2, batch_size=4, eval_every=2, eval_batches=1, ckpt_every=2, log_every=1, seed=seed
    )
    metrics = runs.train(task, model, cfg, run_dir, progress=False)
    return model, metrics


def fitting_sampler(task):
    for name in SAMPLERS.names():
        s = make_sampler(name, steps=2)
        try:
            s.check_processes(task.processes)
        except TypeError:
            continue
        return s
    raise AssertionError(f"no registered sampler serves task {task.name!r}")


def count(samples) -> int:
    if isinstance(samples, tuple):  # text: (texts, ids, calls)
        samples = samples[0]
    return int(samples.shape[0]) if isinstance(samples, torch.Tensor) else len(samples)


@pytest.mark.parametrize("name", TASKS.names())
def test_task_trains_saves_loads_evaluates_samples(name, tmp_path):
    cls = TASKS.get(name)
    task, sizes = cls.example(tmp_path / "data")
    assert task.name == name and set(task.processes)
    model, metrics = tiny_train(task, sizes, tmp_path / "run")
    assert math.isfinite(metrics["train_loss"]) and "eval_loss" in metrics

    loaded, again = runs.load_run(tmp_path / "run")
    assert type(loaded) is type(task) and loaded.config == task.config
    live, back = module_tensors(model), module_tensors(again)
    assert live.keys() == back.keys()
    assert all(torch.equal(live[k].cpu(), back[k]) for k in live)

    ev = loaded.evaluate(again, "test", batch_size=4, limit=8)
    assert math.isfinite(ev.value) and ev.value > 0 and ev.unit

    out = loaded.sample(
        again, 2, fitting_sampler(loaded), generator=torch.Generator().manual_seed(0)
    )
    assert count(out) == 2

    # the exported file format loads to the same model
    weights, _ = runs.export(loaded, again, tmp_path / "exp" / "m_model.safetensors")
    task3, model3 = runs.from_pretrained(weights)
    assert type(task3) is type(task)
    assert all(torch.equal(back[k], v) for k, v in module_tensors(model3).items())


@pytest.mark.parametrize("name", TASKS.names())
def test_same_seed_same_weights(name, tmp_path):
    cls = TASKS.get(name)
    task, sizes = cls.example(tmp_path / "data")
    a, _ = tiny_train(task, sizes, tmp_path / "a", seed=3)
    b, _ = tiny_train(task, sizes, tmp_path / "b", seed=3)
    ta, tb = module_tensors(a), module_tensors(b)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize("name", TASKS.names())
def test_task_fields_configure_its_own_denoiser(name, tmp_path):
    """``denoiser_fields()`` is what a task gives any denoiser (``--denoiser``): given to its
    own default denoiser's type with the example's sizes, it makes the same config as
    ``build_denoiser``, so nothing the task knows is missing from the fields."""
    cls = TASKS.get(name)
    task, sizes = cls.example(tmp_path / "data")
    if not cls.default_denoiser:
        pytest.skip(f"task {name!r} names no default denoiser")  # a user's task may not
    with torch.device("meta"):
        own = task.build_denoiser(**sizes)
        other = task.build_other_denoiser(cls.default_denoiser, **sizes)
    assert type(other) is type(own) and other.config == own.config
