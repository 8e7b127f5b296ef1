"""The training step at the device's rate: data resident on the device, no host read inside a
step, and a wall-clock budget turned into a step count (``TrainConfig.time_budget``)."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from discdiff.checks import as_if_accelerator, reads_are_free
from discdiff.tasks.molecules import MoleculeTask
from discdiff.training import TrainConfig, Trainer, load_checkpoint, lr_at
from discdiff.training.budget import StepBudget
from discdiff.training.data import BatchStream, resident_fields
from tests._ddp_worker import ToyNet, ce_loss, toy_dataset
from tests._host_syncs import HostSyncs as HostReads


def molecule_trainer(tmp_path, **overrides):
    task, sizes = MoleculeTask.example(tmp_path / "task")
    return task_trainer(task, sizes, tmp_path, **overrides)


def task_trainer(task, sizes, tmp_path, **overrides):
    """The Trainer as the spine builds it for ``task``'s example data, on the CPU."""
    torch.manual_seed(0)
    model = task.new_model(**sizes)
    settings = dict(steps=12, batch_size=4, log_every=4, ckpt_every=0, ema_decay=0.9, seed=3)
    settings.update(overrides)
    return Trainer(
        model,
        task.loss,
        task.dataset("train"),
        TrainConfig(**settings),
        tmp_path / "run",
        collate_fn=task.collate(),
        count_tokens=task.count_tokens,
        device="cpu",
        progress=False,
        tensorboard=False,
    )


# ---- data resident on the device ------------------------------------------------------------


def test_resident_batches_equal_the_collated_items(tmp_path):
    """A GraphDataset's gathered batch is what the DataLoader path collates from its items."""
    task, _ = MoleculeTask.example(tmp_path)
    data = task.dataset("train")
    fields = resident_fields(data)
    assert fields is not None and set(fields) >= {"atoms", "bonds", "node_mask", "edge_mask"}
    idx = torch.tensor([5, 0, 3])
    gathered = {k: v.index_select(0, idx) for k, v in fields.items()}
    collated = task.collate()([data[int(i)] for i in idx])
    assert gathered.keys() == collated.keys()
    for k in gathered:
        assert torch.equal(gathered[k], collated[k]), k
    assert resident_fields(toy_dataset(8)) is None  # a TensorDataset has no fields


@pytest.mark.parametrize("world", [1, 3])
def test_resident_stream_visits_each_example_once_per_epoch(world):
    n, m = 50, 4
    fields = {"x": torch.arange(n), "y": torch.arange(n) * 10}

    def stream(rank, seed=1):
        return BatchStream(
            None, m, seed=seed, world=world, rank=rank, collate_fn=None, resident=fields
        )

    per_epoch = n // (m * world)
    seen = []
    for rank in range(world):
        it = iter(stream(rank))
        batches = [next(it) for _ in range(per_epoch)]
        for b in batches:
            assert torch.equal(b["y"], b["x"] * 10)  # fields stay aligned
        seen += [int(v) for b in batches for v in b["x"]]
    assert len(seen) == len(set(seen)) == per_epoch * m * world  # disjoint ranks, no repeats
    first = [b["x"].tolist() for b, _ in zip(stream(0), range(2 * per_epoch), strict=False)]
    again = [b["x"].tolist() for b, _ in zip(stream(0), range(2 * per_epoch), strict=False)]
    assert first == again  # a function of the seed
    assert first[:per_epoch] != first[per_epoch:]  # each epoch its own order
    other = [b["x"].tolist() for b, _ in zip(stream(0, seed=2), range(per_epoch), strict=False)]
    assert other != first[:per_epoch]
    # resuming at (epoch 1, position 1) gives what the uninterrupted stream gave there
    resumed = stream(0)
    resumed.load_state({"epoch": 1, "position": 1})
    assert next(iter(resumed))["x"].tolist() == first[per_epoch + 1]


def test_trainer_keeps_graph_data_on_the_device_unless_told_not_to(tmp_path):
    assert molecule_trainer(tmp_path / "a").stream.resident is not None
    assert molecule_trainer(tmp_path / "b", data_on_device=False).stream.resident is None
    with pytest.raises(ValueError, match="data_on_device=True needs a dataset with tensor fields"):
        Trainer(
            ToyNet(),
            ce_loss,
            toy_dataset(16),
            TrainConfig(steps=2, batch_size=4, data_on_device=True),
            tmp_path / "c",
            device="cpu",
            progress=False,
        )


def test_resident_run_killed_and_resumed_is_bit_identical(tmp_path):
    straight = molecule_trainer(tmp_path / "s", steps=9, ckpt_every=3, log_every=1)
    straight.fit()

    class Killed(Exception):
        pass

    killed = molecule_trainer(tmp_path / "k", steps=9, ckpt_every=3, log_every=1)
    calls = 0
    inner = killed.loss_fn

    def dying(model, batch, gen):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise Killed
        return inner(model, batch, gen)

    killed.loss_fn = dying
    with pytest.raises(Killed):
        killed.fit()
    resumed = molecule_trainer(tmp_path / "k", steps=9, ckpt_every=3, log_every=1)
    resumed.fit(resume=True)
    for name, value in straight.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[name]), name


# ---- no host read inside a step -------------------------------------------------------------


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_a_molecule_training_step_reads_nothing_back_on_an_accelerator(tmp_path, grad_accum):
    """Device-resident data, loss, backward, clip, fused AdamW and EMA: no value crosses to
    the host in a step after the first (the first checks the data's values). Under
    ``as_if_accelerator`` the CPU takes the decisions a GPU takes; on a real CPU the same step
    still checks its values (the counter sees those reads, so it can fail)."""
    trainer = molecule_trainer(tmp_path, grad_accum=grad_accum, grad_clip=1.0)
    with as_if_accelerator():
        assert not reads_are_free(torch.zeros(()))
        first = HostReads()
        with first:
            trainer.train_step()
        assert first.count > 0  # the first step validates ids and times
        later = HostReads()
        with later:
            for _ in range(3):
                result = trainer.train_step()
        assert later.count == 0, "\n---\n".join(later.where[:3])
    assert isinstance(result.tokens, torch.Tensor)  # counted on the device
    cpu = HostReads()
    with cpu:
        trainer.train_step()
    assert cpu.count > 0


# ---- the time budget --------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_plans_the_steps_that_fit_at_the_measured_rate():
    clock = FakeClock()
    b = StepBudget(100.0, 10**9, settle=2, window=1.0, clock=clock)
    b.begin(0)
    clock.now = 1.0  # 2 settling steps took a second (compilation): not timed
    assert b.check(2) is None
    clock.now += 0.5  # 5 steps at 0.1 s: the window (1 s) is not over yet
    assert b.check(7) is None
    clock.now += 0.5
    plan = b.check(12)  # 10 steps at 0.1 s each
    assert b.rate == pytest.approx(0.1)
    left = 0.98 * (100.0 - 2.0) - 0.02 * 100.0  # no checkpoint seen yet: 2% kept for it
    assert plan == 12 + math.floor(left / 0.1)
    b.adopt(12)
    # evaluation time is kept out of the rate and planned for at its period
    b.eval_every, b.ckpt_every = 100, 200
    b.overhead("eval", 3.0)
    b.overhead("ckpt", 1.0)
    clock.now += 4.0 + 1.0  # 10 more steps at 0.1 s, plus the evaluation and checkpoint
    assert b.check(22) == 22 + math.floor(
        (0.98 * (100.0 - 7.0) - 4.0) / (0.1 + 3.0 / 100 + 1.0 / 200)
    )
    assert b.check(23) is None  # planned again only when the timed steps have doubled


def test_budget_caps_spends_earlier_sessions_and_never_plans_backwards():
    clock = FakeClock()
    b = StepBudget(10.0, 50, settle=0, window=0.1, spent=4.0, clock=clock)
    b.begin(0)
    b.check(0)
    clock.now = 0.2
    assert b.check(20) == 50  # 0.01 s/step would allow ~560 more: the cap holds
    late = StepBudget(10.0, 10**9, settle=0, window=0.1, spent=9.9, clock=clock)
    late.begin(30)
    late.check(30)
    clock.now += 1.0
    assert late.check(31) == 31  # the budget is spent: stop where the run is
    assert not late.wants_check(31, 1000) or late.planned_at is None
    late.adopt(31)
    assert late.wants_check(400, 1000) and not late.wants_check(500, 1000)


def test_budget_resume_keeps_the_saved_plan_and_cap():
    saved = {"seconds": 60.0, "cap": 10**9, "steps": 4000, "planned_at": 40}
    assert StepBudget.resumed(saved, 60.0, 4000) == (10**9, 4000, 40)
    assert StepBudget.resumed(saved, 60.0, 10**9) == (10**9, 4000, 40)
    assert StepBudget.resumed(saved, 60.0, 3000) == (3000, 3000, 40)  # a new, lower cap
    assert StepBudget.resumed(saved, 90.0, 4000) == (4000, 4000, None)  # a new budget
    assert StepBudget.resumed(None, 60.0, 77) == (77, 77, None)
    with pytest.raises(ValueError, match="time budget"):
        StepBudget(float("nan"), 10)


def test_trainer_with_a_time_budget_ends_in_time_with_the_schedule_finished(tmp_path):
    budget = 3.0
    trainer = molecule_trainer(
        tmp_path, steps=10**9, log_every=2, ckpt_every=40, warmup_steps=5, time_budget=budget
    )
    start = time.perf_counter()
    metrics = trainer.fit()
    took = time.perf_counter() - start
    steps = trainer.config.steps
    assert steps < 10**9 and metrics["step"] == steps > 20
    assert took < budget + 1.5, took  # the final checkpoint included
    assert took > 0.4 * budget, took  # it used the time
    assert metrics["lr"] == pytest.approx(lr_at(steps - 1, trainer.config))
    assert lr_at(steps, trainer.config) == pytest.approx(trainer.config.final_lr)
    saved = json.loads((tmp_path / "run/config.json").read_text())["train"]
    assert saved["steps"] == steps and saved["time_budget"] == budget
    state = load_checkpoint(tmp_path / f"run/checkpoints/step_{steps:08d}").train_state
    assert state["budget"]["steps"] == steps and state["budget"]["cap"] == 10**9
    assert state["wall_s"] == pytest.approx(took, abs=1.0)


def test_a_resumed_budget_run_keeps_its_plan_and_counts_the_time_spent(tmp_path):
    budget = 2.0
    first = molecule_trainer(tmp_path, steps=10**9, log_every=2, ckpt_every=10, time_budget=budget)
    calls = 0
    inner = first.loss_fn

    class Killed(Exception):
        pass

    def dying(model, batch, gen):
        nonlocal calls
        calls += 1
        if first._budget is not None and first._budget.planned_at is not None and calls > 60:
            raise Killed
        return inner(model, batch, gen)

    first.loss_fn = dying
    with pytest.raises(Killed):
        first.fit()
    ckpt = sorted((tmp_path / "run/checkpoints").glob("step_*"))[-1]
    state = load_checkpoint(ckpt).train_state
    planned = state["budget"]["steps"]
    resumed = molecule_trainer(
        tmp_path, steps=10**9, log_every=2, ckpt_every=10, time_budget=budget
    )
    start = time.perf_counter()
    resumed.fit(resume=True)
    took = time.perf_counter() - start
    assert took < budget - state["wall_s"] + 1.5
    assert resumed.step == resumed.config.steps
    assert abs(resumed.config.steps - planned) <= planned  # refined, not started anew
    final = load_checkpoint(tmp_path / f"run/checkpoints/step_{resumed.step:08d}").train_state
    assert final["wall_s"] > state["wall_s"]


def test_time_budget_is_validated():
    for bad in (0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="time_budget"):
            TrainConfig(time_budget=bad)
    with pytest.raises(ValueError, match="data_on_device"):
        TrainConfig(data_on_device="yes")


def test_the_resident_stream_counts_per_epoch():
    fields = {"x": torch.arange(10)}
    s = BatchStream(None, 4, seed=0, collate_fn=None, resident=fields)
    it = iter(s)
    next(it), next(it)
    assert s.state() == {"epoch": 0, "position": 2}
    next(it)
    assert s.state() == {"epoch": 1, "position": 1}
    with pytest.raises(ValueError, match="fewer than one global micro-batch"):
        next(iter(BatchStream(None, 11, seed=0, collate_fn=None, resident=fields)))


@pytest.mark.parametrize("task_name", ["text", "pixels"])
def test_sequence_training_steps_read_nothing_back_on_an_accelerator(tmp_path, task_name):
    """The text and pixel tasks' steps on batches collated on the host (where reading is free:
    the text collate notes there whether the batch is padded) make no host read."""
    from discdiff.tasks import TASKS

    task, sizes = TASKS.get(task_name).example(tmp_path / "task")
    trainer = task_trainer(task, sizes, tmp_path, steps=10, log_every=10)
    stream = iter(trainer.stream)
    batches = [next(stream) for _ in range(3)]
    if task_name == "text":
        assert all(isinstance(b["full"], bool) for b in batches)
    with as_if_accelerator():
        trainer.train_step(iter(batches[:1]))
        reads = HostReads()
        with reads:
            trainer.train_step(iter(batches[1:2]))
            trainer.train_step(iter(batches[2:]))
    assert reads.count == 0, "\n---\n".join(reads.where[:3])


def test_padding_cond_reads_the_mask_only_where_free():
    from discdiff.tasks.text.config import _padding_cond

    full = torch.ones(2, 3, dtype=torch.bool)
    part = full.clone()
    part[0, 2] = False
    assert _padding_cond(full) is None and _padding_cond(part)["padding_mask"] is part
    assert _padding_cond(part, True) is None  # the host's word is taken
    with as_if_accelerator():
        reads = HostReads()
        with reads:
            assert _padding_cond(full)["padding_mask"] is full  # unknown: the mask is kept
        assert reads.count == 0


def test_training_on_padded_graphs_never_imports_torch_geometric(tmp_path):
    """PyG (and the transformers it pulls in where installed) is imported only where a PyG
    object is built: a padded-graph training run from a fresh interpreter does not."""
    import subprocess
    import sys

    code = (
        "import sys, tempfile, pathlib\n"
        "from discdiff.tasks.molecules import MoleculeTask\n"
        "from discdiff.tasks import runs\n"
        "from discdiff.training import TrainConfig\n"
        "task, sizes = MoleculeTask.example(pathlib.Path(tempfile.mkdtemp()))\n"
        "model = task.build_denoiser(**sizes)\n"
        "runs.train(task, model, TrainConfig(steps=2, batch_size=4, ckpt_every=0),\n"
        "           pathlib.Path(tempfile.mkdtemp()) / 'run', device='cpu', progress=False)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch_geometric', 'transformers'))))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_cuda_graphs_are_refused_off_cuda(tmp_path):
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        molecule_trainer(tmp_path, cuda_graphs=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_molecule_steps_resident_synchronisation_free_and_graph_captured(tmp_path):
    """On a GPU: graphs resident on the device, no host sync in a step after the first
    (torch's own sync detector), and the CUDA-graph step learns like the eager one."""
    import warnings

    task, sizes = MoleculeTask.example(tmp_path / "task")
    losses = {}
    for name, opts in (("eager", {}), ("graphs", {"cuda_graphs": True})):
        torch.manual_seed(0)
        trainer = Trainer(
            task.build_denoiser(**sizes),
            task.loss_fn,
            task.dataset("train"),
            TrainConfig(steps=40, batch_size=8, ckpt_every=0, ema_decay=0.9, seed=1, **opts),
            tmp_path / name,
            collate_fn=task.collate(),
            count_tokens=task.count_tokens,
            device="cuda",
            progress=False,
            tensorboard=False,
        )
        assert trainer.stream.resident is not None
        assert all(v.device.type == "cuda" for v in trainer.stream.resident.values())
        for _ in range(3):
            trainer.train_step()
        torch.cuda.synchronize()
        if name == "eager":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    for _ in range(3):
                        trainer.train_step()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
            assert not syncs, syncs[:3]
        out = [float(trainer.train_step().loss) for _ in range(30)]
        losses[name] = sum(out[-10:]) / 10
        assert all(math.isfinite(v) for v in out)
    assert losses["graphs"] == pytest.approx(losses["eager"], rel=0.25)


def test_ema_reuses_its_update_plan_and_follows_replaced_tensors():
    from torch import nn

    from discdiff.training import EMA

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    before = ema.shadow["0.weight"].clone()
    ema.update(model)
    plan = ema._plan
    assert torch.allclose(ema.shadow["0.weight"], 0.5 * before + 0.5 * model[0].weight)
    ema.update(model)
    assert ema._plan is plan  # the same tensors: no walk of the state dict
    model[0].weight = nn.Parameter(torch.full((4, 3), 7.0))  # a new tensor under the old name
    model[1].running_mean.fill_(3.0)  # buffers are copied, not averaged
    old = ema.shadow["0.weight"].clone()
    ema.update(model)
    assert ema._plan is not plan
    assert torch.allclose(ema.shadow["0.weight"], 0.5 * old + 0.5 * 7.0)
    assert torch.equal(ema.shadow["1.running_mean"], torch.full((4,), 3.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_sampling_gives_what_eager_sampling_gives(tmp_path):
    """The shipped QM9 model sampled with CUDA graphs: valid molecules at the eager rate
    (the outputs are copied out of the graph's memory before the next replay)."""
    from discdiff.cli._options import compiled
    from discdiff.tasks.runs import from_pretrained

    task, model = from_pretrained("qm9", device="cuda")
    graphed = compiled(model, False, cuda_graphs=True)
    valid = {}
    for name, m in (("eager", model), ("graphs", graphed)):
        gen = torch.Generator(device="cuda").manual_seed(0)
        graphs = task.sample_graphs(m, 500, steps=20, batch_size=250, generator=gen)
        valid[name] = task.metrics(graphs)["validity"]
    assert valid["graphs"] >= valid["eager"] - 0.05, valid


@pytest.mark.slow
def test_compiled_molecule_step_on_resident_data_learns_like_eager(tmp_path):
    """torch.compile of the denoiser on resident, static-shape batches (the GPU recipe's path,
    on the CPU): one compilation, losses as eager's to float tolerance."""
    losses = {}
    for name, on in (("eager", False), ("compiled", True)):
        trainer = molecule_trainer(tmp_path / name, compile=on, steps=6, ema_decay=None)
        losses[name] = [float(trainer.train_step().loss) for _ in range(6)]
    torch.testing.assert_close(losses["compiled"], losses["eager"], rtol=1e-3, atol=1e-3)


def test_hot_paths_take_the_limit_from_the_per_device_copy(tmp_path, monkeypatch):
    """``limit`` is a fresh CPU tensor; moving it to the device at each call was a host-to-device
    copy (a sync on CUDA: the 2 per molecule step torch's detector saw on an H200, one per
    field). Training steps and the samplers that use m read the cached per-device copy."""
    from discdiff.processes.mixing import MixingProcess
    from discdiff.samplers import make_sampler

    trainer = molecule_trainer(tmp_path)

    def refuse(self):
        raise AssertionError("limit built in a hot path: use limit_on(device)")

    monkeypatch.setattr(MixingProcess, "limit", property(refuse))
    trainer.train_step()
    proc = make_process_for_test()
    for name in ("tau-leaping", "dfm-euler"):
        opts = {"div_free": 0.5} if name == "dfm-euler" else {}
        make_sampler(name, steps=3, **opts).sample(
            lambda x, t, cond=None: torch.zeros(*x.shape, 4), proc, (2, 5),
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip


def make_process_for_test():
    from discdiff.processes import make_process

    return make_process("uniform", 4)
