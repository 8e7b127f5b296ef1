"""The pixels task: config checks, the three processes learn on the shared loops, the bound
(analytic value for a uniform predictor), sampling with labels and guidance, PNG grids, the
classifier and nearest-neighbour proxies against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from discdiff.processes import Absorbing, Dense, Uniform
from discdiff.tasks import pixels as px

TINY = px.ModelOptions(num_layers=1, d_model=32, num_heads=2, cond_dim=32)


def tiny_config(process: str, levels: int = 8) -> px.PixelConfig:
    # the Gaussian chain gets few steps and large betas so 8 levels mix within T
    return px.PixelConfig(data="digits", levels=levels, process=process, timesteps=50, beta_end=0.5)


@pytest.fixture(scope="module")
def digits8() -> dict[str, px.ImageDataset]:
    cfg = tiny_config("absorbing")
    return {split: px.load_data(cfg, split) for split in ("train", "test")}


# ---- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"levels": 1}, "levels"),
        ({"levels": 300}, "levels"),
        ({"data": "cifar"}, "unknown image data set 'cifar'"),
        ({"process": "blur"}, "process must be one of"),
        ({"timesteps": 0}, "timesteps"),
        ({"label_dropout": 1.0}, "label_dropout"),
        ({"beta_start": 0.5, "beta_end": 0.1}, "beta_start"),
    ],
)
def test_config_rejects_bad_values(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        px.PixelConfig(**kwargs)


def test_config_round_trip_and_shapes() -> None:
    cfg = px.PixelConfig(data="fashion-mnist", levels=32, process="gaussian", timesteps=10)
    assert px.PixelConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.height, cfg.width, cfg.num_labels, cfg.num_pixels) == (28, 28, 10, 784)
    with pytest.raises(ValueError, match="unknown PixelConfig keys"):
        px.PixelConfig.from_dict({**cfg.to_dict(), "levles": 3})


def test_processes_and_denoiser_match() -> None:
    kinds = {"absorbing": Absorbing, "uniform": Uniform, "gaussian": Dense}
    for kind, cls in kinds.items():
        cfg = tiny_config(kind)
        task = px.PixelTask(cfg)
        assert isinstance(task.process, cls)
        assert task.process.num_classes == 8
        model = px.make_denoiser(cfg, TINY)
        assert model.config.num_states == task.process.num_states
        assert model.config.grid == (8, 8) and model.config.num_labels == 10
        assert model.null_label == task.null_label == 10
    assert px.PixelTask(tiny_config("absorbing")).process.num_steps is None
    assert px.PixelTask(tiny_config("gaussian")).process.num_steps == 50


def test_gaussian_steps_are_symmetric_with_a_uniform_prior() -> None:
    proc = px.make_process(px.PixelConfig(data="digits", levels=16, process="gaussian"))
    Q = proc.step_matrices  # (T, K, K)
    assert Q.shape == (1000, 16, 16)
    assert bool((Q >= 0).all())
    assert float((Q.sum(-1) - 1).abs().max()) < 1e-12
    assert torch.equal(Q, Q.transpose(1, 2))
    assert float((proc.prior_log_probs().exp() - 1 / 16).abs().max()) < 1e-15
    # D3PM's betas mix 16 levels: q(x_T | x_0) is within 1e-3 nats of the uniform prior
    assert float(proc.kl_prior(torch.arange(16)[None]).max()) < 1e-3


# ---- training on the shared loops -----------------------------------------------------------


def _paired_bound(task, model, x0, y, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return task.eval_fn(model, (x0, y), torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("kind", px.PROCESS_KINDS)
def test_a_few_steps_lower_the_bound(kind: str, digits8) -> None:
    """Same noise draws before and after 30 Adam steps: the paired drop exceeds 3 SE."""
    cfg = tiny_config(kind)
    task = px.PixelTask(cfg)
    torch.manual_seed(0)
    model = px.make_denoiser(cfg, TINY)
    train = digits8["train"]
    x0, y = train.pixels[:128], train.labels[:128]
    before = _paired_bound(task, model, x0, y, seed=7)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        idx = torch.randint(0, len(train), (32,), generator=g)
        loss = task.loss_fn(model, train[idx], g).mean()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
    after = _paired_bound(task, model, x0, y, seed=7)
    diff = before - after  # (128,) nats per image
    se = diff.std() / math.sqrt(diff.numel())
    assert float(diff.mean()) > 3 * float(se), (float(diff.mean()), float(se))


def test_label_dropout_rate_and_reproducibility(digits8) -> None:
    """The loss feeds the null label with probability label_dropout, drawn from its generator."""
    cfg = px.PixelConfig(data="digits", levels=8, process="absorbing", label_dropout=0.25)
    task = px.PixelTask(cfg)
    seen = []

    def spy(x_t, t, cond):
        seen.append(cond["label"].clone())
        return torch.zeros(*x_t.shape, 8, requires_grad=True)

    n = 4000
    x0 = torch.zeros(n, 64, dtype=torch.long)
    y = torch.arange(n) % 10
    task.loss_fn(spy, (x0, y), torch.Generator().manual_seed(3))
    task.loss_fn(spy, (x0, y), torch.Generator().manual_seed(3))
    first, second = seen
    assert torch.equal(first, second)
    dropped = first == task.null_label
    assert torch.equal(first[~dropped], y[~dropped])
    tol = 4 * math.sqrt(0.25 * 0.75 / n)
    assert abs(float(dropped.double().mean()) - 0.25) < tol
    # evaluation never drops labels
    seen.clear()
    task.eval_fn(spy, (x0[:10], y[:10]), torch.Generator().manual_seed(3))
    assert torch.equal(seen[0], y[:10])


def test_confidently_wrong_model_gets_a_finite_loss() -> None:
    """A model sure that every corrupted pixel is clean (p(x_0) ~ e^-60) gets a large but
    finite uniform-process loss and finite gradients."""
    task = px.PixelTask(px.PixelConfig(data="digits", levels=16, process="uniform"))
    scale = torch.tensor(60.0, requires_grad=True)

    def trusting(x_t, t, cond=None):
        return scale * torch.nn.functional.one_hot(x_t, 16).float()  # (B, D, K)

    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 16, (32, 64), generator=g)
    y = torch.arange(32) % 10
    loss = task.loss_fn(trusting, (x0, y), g)
    assert bool(torch.isfinite(loss).all())
    loss.mean().backward()
    assert torch.isfinite(scale.grad)


# ---- the bound ------------------------------------------------------------------------------


def test_bits_per_dim_of_a_uniform_predictor_is_log2_levels(digits8) -> None:
    """An untrained denoiser predicts uniform logits (zero head), so the absorbing ELBO is
    exactly D log K in expectation: bits/dim = log2(levels) within 4 standard errors."""
    cfg = tiny_config("absorbing")
    task = px.PixelTask(cfg)
    model = px.make_denoiser(cfg, TINY)
    bpd, se, n = px.bits_per_dim(
        task, model, digits8["test"], batch_size=64, generator=torch.Generator().manual_seed(0)
    )
    assert n == len(digits8["test"]) == 360
    assert math.isfinite(bpd) and se > 0
    assert abs(bpd - math.log2(8)) < 4 * se, (bpd, se)


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_bits_per_dim_is_the_mean_of_per_image_bounds(kind: str, digits8) -> None:
    cfg = tiny_config(kind)
    task = px.PixelTask(cfg)
    torch.manual_seed(0)
    model = px.make_denoiser(cfg, TINY)
    test = digits8["test"]
    bpd, se, n = px.bits_per_dim(
        task, model, test, batch_size=50, limit=50, generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        nats = task.nll_terms(
            model, test.pixels[:50], test.labels[:50], torch.Generator().manual_seed(5)
        )
    per = nats.double() / (math.log(2) * 64)
    assert n == 50
    assert bpd == pytest.approx(float(per.mean()), rel=1e-9)
    assert se == pytest.approx(float(per.std() / math.sqrt(50)), rel=1e-9)


def test_bits_per_dim_rejects_mismatched_data(digits8) -> None:
    task = px.PixelTask(tiny_config("absorbing", levels=4))
    model = px.make_denoiser(task.config, TINY)
    with pytest.raises(ValueError, match="levels"):
        px.bits_per_dim(task, model, digits8["test"])


# ---- sampling and grids -------------------------------------------------------------------


@pytest.mark.parametrize("kind", px.PROCESS_KINDS)
def test_sampling_with_label_and_guidance(kind: str, tmp_path) -> None:
    cfg = tiny_config(kind)
    task = px.PixelTask(cfg)
    torch.manual_seed(0)
    model = px.make_denoiser(cfg, TINY)
    labels = torch.tensor([3, 3, 7, 0, 9])
    calls = []
    original = model.forward

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    model.forward = counting
    ids = px.sample_images(
        task, model, labels, guidance=2.0, steps=8, generator=torch.Generator().manual_seed(1)
    )
    assert ids.shape == (5, 64) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < 8
    assert len(calls) == 2 * 8  # CFG: a conditional and a null call per step
    again = px.sample_images(
        task, model, labels, guidance=2.0, steps=8, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(ids, again)
    path = px.save_grid(ids, tmp_path / "grid.png", 8, 8, 8)
    with Image.open(path) as im:
        assert im.mode == "L"
        # 5 images -> 3 columns x 2 rows of 32x32 (8x8 magnified 4x) with 1-pixel separators
        assert im.size == (3 * 33 + 1, 2 * 33 + 1)


def test_sampling_rejects_labels_out_of_range() -> None:
    task = px.PixelTask(tiny_config("absorbing"))
    model = px.make_denoiser(task.config, TINY)
    with pytest.raises(ValueError, match="label 10 is out of range"):
        px.sample_images(task, model, [1, 10])
    with pytest.raises(ValueError, match="label -1"):
        px.sample_images(task, model, [-1])


def test_image_grid_places_every_pixel() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (5, 6), generator=g)  # 5 images of 2x3
    grid = px.image_grid(ids, levels=4, height=2, width=3, ncol=2, scale=2)
    assert grid.shape == (3 * (4 + 1) + 1, 2 * (6 + 1) + 1)
    for n in range(5):
        r, c = divmod(n, 2)
        for i in range(2):
            for j in range(3):
                want = round((int(ids[n, i * 3 + j]) + 0.5) / 4 * 255)
                for di in range(2):
                    for dj in range(2):
                        y = 1 + r * 5 + 2 * i + di
                        x = 1 + c * 7 + 2 * j + dj
                        assert grid[y, x] == want
    assert (grid[0] == 128).all() and (grid[:, 0] == 128).all()
    assert (grid[11:15, 8:14] == 128).all()  # the empty sixth cell


def test_save_grid_rejects_bad_paths(tmp_path) -> None:
    ids = torch.zeros(1, 64, dtype=torch.long)
    with pytest.raises(ValueError, match=".png"):
        px.save_grid(ids, tmp_path / "grid.jpg", 8, 8, 8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        px.save_grid(ids, tmp_path / "missing" / "grid.png", 8, 8, 8)


# ---- quality proxies ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(digits8) -> px.PixelClassifier:
    return px.train_classifier(digits8["train"], steps=300, seed=0)


def test_classifier_is_accurate_on_real_digits(digits8, classifier) -> None:
    clf = classifier
    acc, se = px.label_agreement(px.classify(clf, digits8["test"].pixels), digits8["test"].labels)
    assert acc > 0.9, acc
    assert se == pytest.approx(math.sqrt(acc * (1 - acc) / 360))


def test_label_agreement_counts_matches() -> None:
    acc, se = px.label_agreement(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0]))
    assert acc == 0.5 and se == pytest.approx(0.25)
    with pytest.raises(ValueError):
        px.label_agreement(torch.tensor([1]), torch.tensor([1, 2]))


def test_nearest_neighbour_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randint(0, 16, (300, 20), generator=g)
    q = torch.cat([torch.randint(0, 16, (7, 20), generator=g), ref[[5, 17]]])  # two copies
    d = px.nearest_neighbour_distances(q, ref, levels=16, chunk=3)
    a = (q.double()[:, None, :] - ref.double()[None, :, :]) / 16  # bin centres differ by id/16
    brute = a.pow(2).sum(-1).sqrt().min(1).values
    np.testing.assert_allclose(d.numpy(), brute.numpy(), atol=1e-5)
    assert d[-2:].tolist() == [0.0, 0.0]


def test_sample_quality_reports_every_figure(digits8, classifier) -> None:
    cfg = tiny_config("absorbing")
    task = px.PixelTask(cfg)
    model = px.make_denoiser(cfg, TINY)
    q = px.sample_quality(
        task,
        model,
        digits8["train"],
        digits8["test"],
        per_label=2,
        guidance=1.5,
        steps=4,
        classifier=classifier,
        generator=torch.Generator().manual_seed(0),
    )
    assert q["num_samples"] == 20 and q["samples"].shape == (20, 64)
    assert q["labels"].tolist() == [k for k in range(10) for _ in range(2)]
    assert 0 <= q["agreement"] <= 1 and q["classifier_accuracy"] > 0.9
    assert q["nn_samples"] > 0 and q["nn_heldout"] > 0 and q["copies"] >= 0


def test_the_state_count_is_asked_of_the_process_not_assumed(monkeypatch):
    """The absorbing factory under another name: the denoiser still gets the mask state (it was
    `levels + 1 if process == "absorbing"`, so the first loss raised IndexError)."""
    import torch

    from discdiff.processes import PROCESSES, register_process
    from discdiff.tasks.pixels import PixelConfig, PixelTask

    monkeypatch.setattr(PROCESSES, "_items", dict(PROCESSES._items))
    register_process("masked-under-another-name", PROCESSES.get("absorbing"))
    task = PixelTask(PixelConfig(data="digits", levels=4, process="masked-under-another-name"))
    torch.manual_seed(0)
    model = task.new_model(num_layers=1, d_model=16, num_heads=2, cond_dim=8)
    assert model.config.num_states == task.process.num_states == 5
    batch = next(iter(torch.utils.data.DataLoader(task.dataset("train"), batch_size=4)))
    loss = task.loss(model, batch, torch.Generator().manual_seed(0))
    assert loss.shape == (4,) and bool(torch.isfinite(loss).all())


@pytest.mark.parametrize("process,objective", [("uniform", "score_entropy"), ("absorbing", "dfm")])
def test_pixels_train_and_sample_on_other_objectives(process, objective, digits8) -> None:
    """A continuous-time pixel task trains on any registered objective (its loss is that
    objective's, its bound the objective's own) and samples through the x_0 view of the
    model; a discrete-time process keeps D3PM's hybrid loss and refuses another objective."""
    from discdiff.losses import dfm_loss, score_entropy_loss

    task = px.PixelTask(px.PixelConfig(data="digits", levels=8, process=process,
                                       objective=objective, label_dropout=0.0))  # fmt: skip
    torch.manual_seed(0)
    model = task.build_denoiser(num_layers=1, d_model=16, num_heads=2, cond_dim=16)
    ds = digits8["train"]
    x0 = torch.stack([torch.as_tensor(ds[i][0]) for i in range(6)]).long()
    y = torch.tensor([int(ds[i][1]) for i in range(6)])
    fn = {"score_entropy": score_entropy_loss, "dfm": dfm_loss}[objective]
    got = task.loss_fn(model, (x0, y), torch.Generator().manual_seed(1))
    want = fn(task.process, task.denoiser(model), x0, cond={"label": y}, boundary=False,
              generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    bound = task.eval_fn(model, (x0, y), torch.Generator().manual_seed(1))
    assert bound.shape == (6,) and bool(torch.isfinite(bound).all())
    sampler = task.make_sampler("ancestral", steps=4)
    imgs = task.sample(model, 3, sampler, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (3, 64) and int(imgs.min()) >= 0 and int(imgs.max()) <= 7
    with pytest.raises(ValueError, match="needs a continuous-time process"):
        px.PixelConfig(data="digits", levels=8, process="gaussian", objective=objective)
