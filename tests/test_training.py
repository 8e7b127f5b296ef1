"""The training loop: one step learns, schedules, accumulation, EMA, evaluation, logs, resume."""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from discdiff.training import (
    EMA,
    TrainConfig,
    Trainer,
    autocast_context,
    load_model,
    lr_at,
    move_to_device,
    read_metrics,
    resolve_device,
    resolve_precision,
)
from discdiff.training.trainer import _round_robin
from tests._ddp_worker import ToyNet, build_toy, ce_loss, noisy_ce_loss, toy_dataset

MODEL_CONFIG = {"type": "toy", "config": {}}


def make_trainer(tmp_path, config, *, model=None, loss=ce_loss, data=None, **kwargs):
    if model is None:
        torch.manual_seed(0)
        model = ToyNet()
    return Trainer(
        model,
        loss,
        toy_dataset(32) if data is None else data,
        config,
        tmp_path,
        model_config=MODEL_CONFIG,
        device="cpu",
        progress=False,
        **kwargs,
    )


def full_loss(model: nn.Module, data) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y).item()


# ---------------------------------------------------------------------------------------------
# Config and schedule
# ---------------------------------------------------------------------------------------------


def test_config_round_trips_and_rejects_bad_values():
    cfg = TrainConfig(steps=7, betas=[0.8, 0.95], ema_decay=0.99, min_lr=1e-5)
    assert cfg.betas == (0.8, 0.95)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"stepz": 3})
    for bad in (
        {"steps": 0},
        {"lr": -1.0},
        {"grad_accum": 0},
        {"ema_decay": 1.0},
        {"precision": "fp16"},
        {"betas": (0.9,)},
        {"min_lr": 1.0, "lr": 0.1},
        {"grad_clip": 0.0},
        {"steps": True},
    ):
        with pytest.raises(ValueError, match="TrainConfig"):
            TrainConfig(**bad)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=110, lr=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    # Linear warm-up reaching the peak at the last warm-up step, never zero.
    assert lrs[0] == pytest.approx(cfg.lr / cfg.warmup_steps)
    assert all(
        b - a == pytest.approx(cfg.lr / cfg.warmup_steps)
        for a, b in zip(lrs[:9], lrs[1:10], strict=True)
    )
    assert lrs[9] == pytest.approx(cfg.lr)
    # Cosine: starts at the peak, monotone down, half-way value is the midpoint, ends near min_lr.
    assert lrs[10] == pytest.approx(cfg.lr)
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[60] == pytest.approx((cfg.lr + cfg.final_lr) / 2)
    assert lr_at(cfg.steps, cfg) == pytest.approx(cfg.final_lr)
    assert cfg.final_lr < lrs[-1] < cfg.final_lr + 1e-3
    # The cosine is symmetric about its midpoint: lr(mid + k) + lr(mid - k) = lr + min_lr.
    for k in (7, 23, 41):
        assert lrs[60 + k] + lrs[60 - k] == pytest.approx(cfg.lr + cfg.final_lr)
    assert TrainConfig(lr=2.0).final_lr == pytest.approx(0.2)


def test_optimizer_lr_follows_schedule(tmp_path):
    cfg = TrainConfig(steps=5, batch_size=8, lr=0.1, warmup_steps=2, ckpt_every=0, log_every=1)
    trainer = make_trainer(tmp_path, cfg)
    trainer.fit()
    logged = [row["lr"] for row in read_metrics(tmp_path / "metrics.csv")]
    assert logged == pytest.approx([lr_at(s, cfg) for s in range(cfg.steps)])


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def test_one_step_reduces_loss_on_a_fixed_batch(tmp_path):
    data = toy_dataset(16)
    cfg = TrainConfig(steps=1, batch_size=16, lr=0.05, grad_clip=None, ckpt_every=0)
    torch.manual_seed(0)
    model = ToyNet()
    before = full_loss(model, data)
    make_trainer(tmp_path, cfg, model=model, data=data).fit()
    after = full_loss(model, data)
    assert after < before - 1e-3


def test_step_matches_a_hand_written_adamw_step(tmp_path):
    """The trainer's step is AdamW on the mean loss, decay on matrices only, with clipping."""
    data = toy_dataset(8)
    cfg = TrainConfig(
        steps=1, batch_size=8, lr=0.01, weight_decay=0.1, grad_clip=0.05, ckpt_every=0
    )
    torch.manual_seed(0)
    model = ToyNet()
    torch.manual_seed(0)
    reference = ToyNet()
    make_trainer(tmp_path, cfg, model=model, data=data).fit()

    x, y = data.tensors
    loss = nn.functional.cross_entropy(reference(x), y)
    loss.backward()
    grads = [p.grad for p in reference.parameters()]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    scale = min(1.0, cfg.grad_clip / (norm.item() + 1e-6))
    b1, b2 = cfg.betas
    with torch.no_grad():
        for p, g in zip(reference.parameters(), grads, strict=True):
            g = g * scale
            m, v = (1 - b1) * g, (1 - b2) * g * g
            decay = cfg.weight_decay if p.dim() >= 2 else 0.0
            p.mul_(1 - lr_at(0, cfg) * decay)
            p.sub_(lr_at(0, cfg) * (m / (1 - b1)) / ((v / (1 - b2)).sqrt() + cfg.eps))
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    base = dict(steps=4, batch_size=8, lr=0.05, ckpt_every=0, grad_clip=1.0)
    one = make_trainer(tmp_path / "a", TrainConfig(**base, grad_accum=1))
    two = make_trainer(tmp_path / "b", TrainConfig(**base, grad_accum=2))
    four = make_trainer(tmp_path / "c", TrainConfig(**base, grad_accum=4))
    for trainer in (one, two, four):
        trainer.fit()
    for other in (two, four):
        for a, b in zip(one.module.parameters(), other.module.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # ... and it is not trivially equal to no training.
    torch.manual_seed(0)
    untouched = ToyNet()
    assert not torch.allclose(untouched.net[0].weight, one.module.net[0].weight)


def test_bad_loss_output_is_rejected(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=8, ckpt_every=0)

    def scalar_loss(model, batch, generator):
        return ce_loss(model, batch, generator).mean()

    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        make_trainer(tmp_path, cfg, loss=scalar_loss).fit()
    with pytest.raises(TypeError, match="loss_fn must return a tensor"):
        make_trainer(tmp_path / "x", cfg, loss=lambda m, b, g: 1.0).fit()


def test_batch_size_must_divide(tmp_path):
    with pytest.raises(ValueError, match="batch_size 6"):
        make_trainer(tmp_path, TrainConfig(batch_size=6, grad_accum=4))


def test_non_finite_loss_stops_training(tmp_path):
    def nan_loss(model, batch, generator):
        return ce_loss(model, batch, generator) * float("nan")

    with pytest.raises(FloatingPointError, match="step 1"):
        make_trainer(tmp_path, TrainConfig(steps=2, batch_size=8, log_every=1), loss=nan_loss).fit()


def test_iterable_of_batches_and_round_robin(tmp_path):
    data = toy_dataset(24)
    batches = [[data.tensors[0][i : i + 6], data.tensors[1][i : i + 6]] for i in range(0, 24, 6)]
    cfg = TrainConfig(steps=6, batch_size=6, lr=0.05, ckpt_every=0, log_every=1)
    trainer = make_trainer(tmp_path, cfg, data=batches)
    trainer.fit()
    assert trainer._data_epoch == 1 and trainer._data_pos == 2  # 6 steps over 4 batches
    # Round robin over a stream of 7 batches, 2 ranks: whole rounds only, rank r takes 2k + r.
    stream = list(range(7))
    assert list(_round_robin(stream, 2, 0, 0)) == [0, 2, 4]
    assert list(_round_robin(stream, 2, 1, 0)) == [1, 3, 5]
    assert list(_round_robin(stream, 2, 1, 2)) == [5]
    with pytest.raises(ValueError, match="re-iterable"):
        make_trainer(tmp_path / "gen", cfg, data=iter(batches)).fit()


# ---------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------


def test_ema_matches_the_closed_form_average():
    decay = 0.7
    model = nn.Linear(3, 2)
    model.register_buffer("counter", torch.zeros(()))
    history = [model.weight.detach().clone()]
    ema = EMA(model, decay)
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        with torch.no_grad():
            model.weight.copy_(torch.randn(2, 3, generator=g))
            model.counter.fill_(i + 1)
        history.append(model.weight.detach().clone())
        ema.update(model)
    n = len(history) - 1
    # shadow_n = d^n w_0 + sum_{i=1..n} (1 - d) d^(n - i) w_i
    expected = decay**n * history[0] + sum(
        (1 - decay) * decay ** (n - i) * history[i] for i in range(1, n + 1)
    )
    torch.testing.assert_close(ema.shadow["weight"], expected, atol=1e-6, rtol=1e-6)
    assert ema.shadow["counter"].item() == 5.0  # buffers are copied, not averaged
    assert ema.num_updates == 5

    trained = model.weight.detach().clone()
    with ema.swap(model):
        torch.testing.assert_close(model.weight.detach(), expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(model.weight.detach(), trained)

    restored = EMA(_with_counter(), decay)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="EMA decay"):
        EMA(model, 1.0)
    with pytest.raises(ValueError, match="does not match"):
        restored.load_state_dict({"weight": ema.shadow["weight"]})


def _with_counter() -> nn.Module:
    module = nn.Linear(3, 2)
    module.register_buffer("counter", torch.zeros(()))
    return module


def test_trainer_ema_tracks_updates(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, lr=0.05, ema_decay=0.5, ckpt_every=0)
    torch.manual_seed(0)
    model = ToyNet()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    weights = [start]

    def recording_loss(m, batch, generator):  # sees the weights before each step
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return ce_loss(m, batch, generator)

    trainer = make_trainer(tmp_path, cfg, model=model, loss=recording_loss)
    trainer.fit()
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seen = [start] + weights[2:] + [final]  # weights after steps 0..3
    for name in final:
        expected = seen[0][name]
        for w in seen[1:]:
            expected = 0.5 * expected + 0.5 * w[name]
        torch.testing.assert_close(trainer.ema.shadow[name], expected, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Evaluation, logs, plot, model loading
# ---------------------------------------------------------------------------------------------


def test_evaluate_is_the_mean_over_the_eval_set(tmp_path):
    eval_data = toy_dataset(13, seed=5)
    cfg = TrainConfig(steps=1, batch_size=4, ckpt_every=0)
    trainer = make_trainer(tmp_path, cfg, eval_data=eval_data)
    x, y = eval_data.tensors
    with torch.no_grad():
        per_example = nn.functional.cross_entropy(trainer.module(x), y, reduction="none")
    assert trainer.evaluate()["eval_loss"] == pytest.approx(per_example.mean().item(), rel=1e-6)
    limited = make_trainer(
        tmp_path / "b", dataclasses.replace(cfg, eval_batches=2), eval_data=eval_data
    )
    assert limited.evaluate()["eval_loss"] == pytest.approx(per_example[:8].mean().item(), rel=1e-6)
    tokens = make_trainer(
        tmp_path / "c", cfg, eval_data=eval_data, count_tokens=lambda b: 3 * len(b[1])
    )
    out = tokens.evaluate()
    assert out["eval_nats_per_token"] == pytest.approx(out["eval_loss"] / 3, rel=1e-6)


def test_metrics_csv_and_loss_curve_written(tmp_path):
    cfg = TrainConfig(
        steps=6, batch_size=8, lr=0.05, eval_every=3, ckpt_every=3, log_every=2, ema_decay=0.9
    )
    trainer = make_trainer(tmp_path, cfg, eval_data=toy_dataset(8, seed=2), count_tokens=len)
    result = trainer.fit()
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]
    assert all(float(r["train_loss"]) > 0 for r in rows if r["train_loss"])
    for column in ("lr", "grad_norm", "items_per_s", "tokens_per_s", "eval_loss", "eval_loss_ema"):
        assert column in rows[0]
    assert rows[1]["eval_loss"] and rows[3]["eval_loss"] and not rows[0]["eval_loss"]
    assert result["step"] == 6 and math.isfinite(result["eval_loss"])

    image = Image.open(tmp_path / "loss_curve.png").convert("RGB")
    assert image.size == (800, 480)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # train and eval lines

    config = (tmp_path / "config.json").read_text()
    assert '"model"' in config and '"train"' in config


def test_load_model_rebuilds_with_ema_weights(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, lr=0.05, ema_decay=0.8, ckpt_every=0)
    trainer = make_trainer(tmp_path, cfg)
    trainer.fit()
    model = load_model(tmp_path, build_toy)
    assert not model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, trainer.ema.shadow[name])
    raw = load_model(tmp_path, build_toy, use_ema=False)
    for name, value in raw.state_dict().items():
        assert torch.equal(value, trainer.module.state_dict()[name])


def test_fit_refuses_to_overwrite_a_run(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8, ckpt_every=1)
    make_trainer(tmp_path, cfg).fit()
    with pytest.raises(ValueError, match="already has checkpoints"):
        make_trainer(tmp_path, cfg).fit()
    with pytest.raises(ValueError, match="model_config differs"):
        Trainer(
            ToyNet(),
            ce_loss,
            toy_dataset(32),
            cfg,
            tmp_path,
            model_config={"type": "other"},
            device="cpu",
            progress=False,
        ).fit(resume=True)


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


class Killed(RuntimeError):
    pass


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    """Kill mid-step, resume in a new Trainer: same weights, EMA and losses as one straight run.

    The loss draws noise from the trainer's generator, the model uses dropout (global RNG),
    accumulation is on and epochs roll over (40 examples, 8 per step), so data order, both
    RNGs, optimizer, EMA and data position all have to be restored exactly.
    """
    cfg = TrainConfig(
        steps=11,
        batch_size=8,
        lr=0.05,
        warmup_steps=3,
        grad_accum=2,
        ema_decay=0.9,
        eval_every=4,
        ckpt_every=4,
        log_every=1,
        seed=7,
    )

    def run(run_dir, kill_at_call=None, resume=False, init_seed=0):
        calls = 0

        def loss(model, batch, generator):
            nonlocal calls
            calls += 1
            if kill_at_call is not None and calls == kill_at_call:
                raise Killed
            return noisy_ce_loss(model, batch, generator)

        torch.manual_seed(init_seed)
        return Trainer(
            ToyNet(dropout=0.2),
            loss,
            toy_dataset(40),
            cfg,
            run_dir,
            model_config=MODEL_CONFIG,
            eval_data=toy_dataset(8, seed=1),
            device="cpu",
            progress=False,
        ), (lambda t: t.fit(resume=resume))

    straight, fit = run(tmp_path / "straight")
    fit(straight)

    killed, fit = run(tmp_path / "killed", kill_at_call=2 * 6 + 1)  # inside step 7
    with pytest.raises(Killed):
        fit(killed)
    assert (tmp_path / "killed/checkpoints/latest").read_text().strip() == "step_00000004"
    resumed, fit = run(tmp_path / "killed", resume=True, init_seed=123)  # a different init
    fit(resumed)

    for name, value in straight.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[name]), name
    for name, value in straight.ema.shadow.items():
        assert torch.equal(value, resumed.ema.shadow[name]), name
    a = load_file(tmp_path / "straight/checkpoints/step_00000011/model.safetensors")
    b = load_file(tmp_path / "killed/checkpoints/step_00000011/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_a = read_metrics(tmp_path / "straight/metrics.csv")
    rows_b = read_metrics(tmp_path / "killed/metrics.csv")
    assert [r["step"] for r in rows_b] == [float(s) for s in range(1, 12)]  # no duplicate rows
    for column in ("train_loss", "grad_norm", "lr"):
        assert [r.get(column) for r in rows_a] == [r.get(column) for r in rows_b]
    assert [r.get("eval_loss_ema") for r in rows_a] == [r.get("eval_loss_ema") for r in rows_b]


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8, ckpt_every=0)
    trainer = make_trainer(tmp_path, cfg)
    trainer.fit(resume=True)
    assert trainer.step == 2
    again = make_trainer(tmp_path, cfg)
    assert again.fit(resume=True) == {}  # already finished: nothing to do
    assert again.step == 2


# ---------------------------------------------------------------------------------------------
# Devices and precision
# ---------------------------------------------------------------------------------------------


def test_device_resolution_and_autocast_on_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto") == torch.float32
    assert resolve_precision(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        resolve_precision(cpu, "fp16")
    a = torch.randn(4, 4)
    with autocast_context(cpu, "auto"):
        assert (a @ a).dtype == torch.float32
    with autocast_context(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    moved = move_to_device({"x": a, "n": 3, "pair": (a, [a])}, cpu)
    assert moved["n"] == 3 and isinstance(moved["pair"], tuple)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_uses_bf16_autocast(tmp_path):
    dtypes = []

    def loss(model, batch, generator):
        assert generator.device.type == "cuda"
        logits = model(batch[0])
        dtypes.append(logits.dtype)
        return nn.functional.cross_entropy(logits.float(), batch[1], reduction="none")

    torch.manual_seed(0)
    trainer = Trainer(
        ToyNet(),
        loss,
        toy_dataset(32),
        TrainConfig(steps=2, batch_size=8, ema_decay=0.9),
        tmp_path,
        model_config=MODEL_CONFIG,
        device="cuda",
        progress=False,
    )
    trainer.fit()
    assert trainer.device.type == "cuda"
    assert set(dtypes) == {resolve_precision(trainer.device, "auto")}
    assert next(trainer.module.parameters()).dtype == torch.float32
    model = load_model(tmp_path, build_toy, device="cuda")
    assert next(model.parameters()).device.type == "cuda"


@pytest.mark.slow
def test_compiled_model_trains_like_eager(tmp_path):
    """``compile=True`` wraps the model in torch.compile; the math must not change."""
    from tests._ddp_worker import DDP_CONFIG, run_toy

    eager = run_toy(tmp_path / "eager")
    compiled = run_toy(tmp_path / "compiled", dataclasses.replace(DDP_CONFIG, compile=True))
    assert compiled.model is not compiled.module  # really compiled
    for name, value in eager.module.state_dict().items():
        torch.testing.assert_close(compiled.module.state_dict()[name], value, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Public single step and named metrics
# ---------------------------------------------------------------------------------------------


def test_named_metrics_are_logged_beside_the_loss(tmp_path):
    def loss_with_accuracy(model, batch, generator):
        x, y = batch
        logits = model(x)
        return {
            "loss": nn.functional.cross_entropy(logits, y, reduction="none"),
            "accuracy": (logits.argmax(-1) == y).float(),
        }

    cfg = TrainConfig(steps=4, batch_size=8, log_every=2, eval_every=2, eval_batches=1, seed=0)
    trainer = make_trainer(tmp_path, cfg, loss=loss_with_accuracy, eval_data=toy_dataset(16))
    metrics = trainer.fit()
    assert 0.0 <= metrics["train_accuracy"] <= 1.0 and 0.0 <= metrics["eval_accuracy"] <= 1.0
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["2", "4"] and all(r["train_accuracy"] for r in rows)
    # the same run with the plain (B,) loss has the same weights: the metric is only logged
    plain = make_trainer(tmp_path / "plain", cfg, eval_data=toy_dataset(16))
    plain.fit()
    for a, b in zip(trainer.module.parameters(), plain.module.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="without 'loss'"):
        make_trainer(tmp_path / "bad", cfg, loss=lambda m, b, g: {"nll": ce_loss(m, b, g)}).fit()


def test_public_train_step_advances_the_run(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, log_every=1, seed=0)
    stepped = make_trainer(tmp_path / "a", cfg)
    results = [stepped.train_step() for _ in range(3)]
    assert stepped.step == 3 and all(r.loss.dim() == 0 and r.items == 8 for r in results)
    fitted = make_trainer(tmp_path / "b", cfg)
    fitted.fit()
    for a, b in zip(stepped.module.parameters(), fitted.module.parameters(), strict=True):
        assert torch.equal(a, b)
