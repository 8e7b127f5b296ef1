"""The GPU paths in one short run: matmul rates, a bf16 training step against them, compile,
flash attention, sampling throughput and host syncs, the molecule sampler.

    python benchmarks/gpu.py [--device cuda] [--out gpu.json] [--quick] [--no-compile]
                             [--sections matmul,train,...] [--skip train.compiled,...]

Sections (each reports its figures or the one-line reason it failed; none stops the others):

1. ``matmul``: the best FLOP/s of a large bf16 and fp32 (TF32 off) matmul on the device.
2. ``train``: the Trainer's step (bf16 autocast on CUDA, fused AdamW) of a 12 x 768 text
   transformer on the absorbing ELBO at 16 x 1024 tokens: tokens/s and model FLOP use
   (3 x forward FLOPs per token x tokens/s, against the bf16 matmul rate), eager, then compiled
   (compile time = the first compiled steps, reported apart).
3. ``attention``: scaled_dot_product_attention at the model's shape with the flash kernel
   against the math kernel (bf16), and which kernel the model's own call gets.
4. ``sampling``: ancestral, caching and first-hitting samplers at 64 x 1024 tokens: tokens/s,
   the time outside the denoiser as a share of the time inside, and the host syncs counted by
   ``torch.cuda.set_sync_debug_mode`` during sampling (the samplers promise none per step).
5. ``molecules``: the shipped QM9 model, 2,000 molecules with the valence guard: molecules/s
   and strict validity; then 10,000 with the default guards at batch 2,500, eager and with
   CUDA graphs (the goal: under 3 s).
6. ``molecule_train``: the graph denoiser's training step at DiGress's QM9 size, batch 512,
   bf16: graphs/s with the DataLoader, with the graphs resident on the device, compiled, and
   with CUDA graphs (interleaved, each against the DataLoader path), and the host syncs per
   resident step (``torch.cuda.set_sync_debug_mode``; the goal is 0).

``--sections`` runs only the named sections (in the order above); ``--skip SECTION.VARIANT``
leaves out one variant of a section (``train.compiled``, ``molecule_train.cuda_graphs``) where
device time is short. ``--quick`` shrinks every size (a CPU smoke run for the test suite; its figures mean nothing).
The JSON holds every figure printed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from discdiff.losses import continuous_elbo
from discdiff.nn import TransformerConfig, TransformerDenoiser, count_parameters, flops_per_token
from discdiff.processes import Absorbing
from discdiff.samplers import AncestralSampler, CachingSampler, FirstHittingSampler
from discdiff.schedules import LogLinear
from discdiff.training import TrainConfig, Trainer

SKIP: set[str] = set()  # "section.variant" names left out (--skip)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def matmul(device: torch.device, quick: bool) -> dict[str, float]:
    n = 1024 if quick else 8192
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.matmul(a, b)
        best = min(timed(lambda a=a, b=b: torch.matmul(a, b), device, 5))
        out[f"{name}_tflops"] = 2 * n**3 / best / 1e12
    return out


def _model(quick: bool, vocab: int) -> TransformerConfig:
    if quick:
        return TransformerConfig(num_states=vocab + 1, num_classes=vocab, num_layers=2,
                                 d_model=64, num_heads=4, max_len=64)  # fmt: skip
    return TransformerConfig(num_states=vocab + 1, num_classes=vocab, num_layers=12,
                             d_model=768, num_heads=12, max_len=1024)  # fmt: skip


def train(
    device: torch.device, quick: bool, peak: float | None, compile_too: bool
) -> dict[str, float]:
    vocab = 64 if quick else 8192
    cfg = _model(quick, vocab)
    B, L = (4, 64) if quick else (16, 1024)
    proc = Absorbing(vocab, LogLinear())
    data = [{"x0": torch.randint(0, vocab, (L,))} for _ in range(B)]
    out: dict[str, float] = {"params_m": 0.0}

    def loss(m, batch, g):
        return continuous_elbo(proc, m, batch["x0"], generator=g)

    steps = 3 if quick else 12
    variants = {"eager": {}}
    if compile_too:
        variants["compiled"] = {"compile": True}
        if device.type == "cuda":
            variants["graphs"] = {"cuda_graphs": True}
    variants = {k: v for k, v in variants.items() if f"train.{k}" not in SKIP}
    batch = {"x0": torch.stack([d["x0"] for d in data]).to(device)}  # the step, not the copy
    for key, opts in variants.items():
        torch.manual_seed(0)
        model = TransformerDenoiser(cfg)
        out["params_m"] = count_parameters(model) / 1e6
        tc = TrainConfig(steps=10**6, batch_size=B, lr=1e-4, warmup_steps=1, eval_every=0,
                         ckpt_every=10**6, log_every=10**6, **opts)  # fmt: skip
        try:
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(model, loss, data, tc, Path(tmp), device=str(device),
                                  progress=False)  # fmt: skip
                step = functools.partial(trainer.train_step, itertools.repeat(batch))
                first = timed(step, device, 1 if key == "eager" else 3)
                times = timed(step, device, steps)
                if key == "eager":
                    _, syncs = _count_syncs(lambda step=step: [step() for _ in range(3)], device)
                    out["eager_host_syncs_per_step"] = syncs / 3 if syncs >= 0 else -1.0
        except Exception as err:  # one variant failing must not hide the others
            out[f"{key}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            continue
        sec = statistics.median(times)
        tok = B * L / sec
        out[f"{key}_tokens_per_s"] = tok
        out[f"{key}_model_tflops"] = 3 * flops_per_token(cfg, L) * tok / 1e12
        if peak is not None:  # MFU only against a matmul rate measured in this run
            out[f"{key}_mfu"] = 3 * flops_per_token(cfg, L) * tok / peak
        if key != "eager":
            out[f"{key}_compile_seconds"] = sum(first)
            out[f"{key}_speedup"] = tok / out["eager_tokens_per_s"]
    return out


def attention(device: torch.device, quick: bool) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, H, L, D = (2, 4, 64, 16) if quick else (16, 12, 1024, 64)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.randn(B, H, L, D, device=device, dtype=dtype) for _ in range(3))
    out: dict[str, Any] = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
        try:
            with sdpa_kernel(backend):
                f = torch.nn.functional.scaled_dot_product_attention
                f(q, k, v)
                out[f"{name}_ms"] = 1000 * statistics.median(
                    timed(lambda f=f: f(q, k, v), device, 10)
                )
        except RuntimeError as err:
            out[f"{name}_ms"] = f"unavailable: {str(err).splitlines()[0][:80]}"
    if isinstance(out.get("flash_ms"), float) and isinstance(out.get("math_ms"), float):
        out["flash_speedup"] = out["math_ms"] / out["flash_ms"]
    return out


class TimedModel(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device, self.seconds = model, device, 0.0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        sync(self.device)
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def _count_syncs(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int]:
    """fn() and the number of host syncs torch reported during it (CUDA only; else -1)."""
    if device.type != "cuda":
        return fn(), -1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return out, sum("synchroniz" in str(w.message) for w in caught)


def sampling(device: torch.device, quick: bool) -> dict[str, float]:
    vocab = 64 if quick else 8192
    cfg = TransformerConfig(num_states=vocab + 1, num_classes=vocab,
                            num_layers=2 if quick else 12, d_model=64 if quick else 768,
                            num_heads=4 if quick else 12, max_len=64 if quick else 1024,
                            time_conditioning=False)  # fmt: skip
    B, L, steps = (2, 64, 8) if quick else (64, 1024, 128)
    model = TimedModel(TransformerDenoiser(cfg).to(device).eval(), device)
    proc = Absorbing(vocab, LogLinear())
    out: dict[str, float] = {}
    ctx = (
        torch.autocast("cuda", torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    for name, sampler in (("ancestral", AncestralSampler(steps)), ("caching", CachingSampler(steps)),
                          ("first_hitting", FirstHittingSampler())):  # fmt: skip
        gen = torch.Generator(device=device).manual_seed(0)
        with ctx:
            sampler.sample(model, proc, (B, L), generator=gen, device=device)  # warm-up
            model.seconds = 0.0
            sync(device)
            start = time.perf_counter()
            _, syncs = _count_syncs(
                lambda s=sampler, g=gen: s.sample(model, proc, (B, L), generator=g, device=device),
                device,
            )
            sync(device)
        wall = time.perf_counter() - start
        out[f"{name}_tokens_per_s"] = B * L / wall
        out[f"{name}_overhead"] = (wall - model.seconds) / model.seconds
        out[f"{name}_host_syncs"] = float(syncs)
    return out


def molecules(device: torch.device, quick: bool) -> dict[str, float]:
    from discdiff.chem.metrics import molecule_metrics
    from discdiff.tasks.runs import from_pretrained

    task, model = from_pretrained("qm9", device=device)
    n = 50 if quick else 2000
    gen = torch.Generator(device=device).manual_seed(0)
    task.sample_graphs(model, min(n, 250), steps=5, generator=gen)  # warm-up
    sync(device)
    start = time.perf_counter()
    graphs = task.sample_graphs(model, n, batch_size=1000, generator=gen)
    sync(device)
    sec = time.perf_counter() - start
    m = molecule_metrics(task.to_mols(graphs))
    out = {"molecules_per_s": n / sec, "seconds": sec, "validity": m["validity"]}
    # 10,000 with the default guards at batch 2,500: eager, then with CUDA graphs
    big, bs = (100, 50) if quick else (10_000, 2500)
    variants = [("eager", model)]
    if device.type == "cuda":
        from discdiff.cli._options import compiled

        variants.append(("cuda_graphs", compiled(model, False, cuda_graphs=True)))
    for name, m_ in variants:
        gen = torch.Generator(device=device).manual_seed(0)
        task.sample_graphs(m_, bs, batch_size=bs, generator=gen)  # warm-up (records graphs)
        sync(device)
        start = time.perf_counter()
        graphs = task.sample_graphs(m_, big, batch_size=bs, generator=gen)
        sync(device)
        out[f"guarded_{big}_{name}_seconds"] = time.perf_counter() - start
        out[f"guarded_{big}_{name}_validity"] = molecule_metrics(task.to_mols(graphs))["validity"]
    return out


def molecule_train(device: torch.device, quick: bool, compile_too: bool) -> dict[str, float]:
    """The graph denoiser's training step at DiGress's QM9 size (8 layers, node 192, edge 64,
    8 heads), batch 512, bf16 on CUDA: graphs/s for the DataLoader path, device-resident data,
    compiled and CUDA-graph variants (interleaved, median), and host syncs per resident step."""
    from discdiff.tasks.molecules import MoleculeTask
    from discdiff.training.config import TrainConfig as TC

    if quick:
        task, _ = MoleculeTask.example(Path(tempfile.mkdtemp()))
        sizes = dict(num_layers=1, node_dim=16, edge_dim=8, num_heads=2, node_ff_dim=16,
                     edge_ff_dim=8, global_dim=8, global_ff_dim=8)  # fmt: skip
        batch, rounds = 4, 3
    else:
        from discdiff.tasks.molecules.data import prepare_molecule_data

        prep = prepare_molecule_data("qm9")
        task = MoleculeTask.from_graphs(prep.graphs, prep.vocab, max_nodes=prep.max_nodes,
                                        dataset="qm9")  # fmt: skip
        task.attach_data(task.graph_dataset(prep.graphs), task.graph_dataset(prep.val_graphs))
        sizes = dict(num_layers=8, node_dim=192, edge_dim=64, num_heads=8, node_ff_dim=384,
                     edge_ff_dim=128, global_dim=64, global_ff_dim=128)  # fmt: skip
        batch, rounds = 512, 30
    variants = {"loader": {"data_on_device": False}, "resident": {"data_on_device": True}}
    if compile_too:
        variants["compiled"] = {"data_on_device": True, "compile": True}
        if device.type == "cuda":
            variants["cuda_graphs"] = {"data_on_device": True, "cuda_graphs": True}
    variants = {k: v for k, v in variants.items() if k in ("loader", "resident")
                or f"molecule_train.{k}" not in SKIP}  # fmt: skip
    out: dict[str, float] = {}
    trainers = {}
    tmp = Path(tempfile.mkdtemp())
    for name, opts in list(variants.items()):
        torch.manual_seed(0)
        tc = TC(steps=10**6, batch_size=batch, lr=1e-4, warmup_steps=1, ema_decay=0.999,
                ckpt_every=0, log_every=10**6, **opts)  # fmt: skip
        try:  # one variant failing must not hide the others
            tr = Trainer(task.build_denoiser(**sizes), task.loss_fn, task.dataset("train"), tc,
                         tmp / name, collate_fn=task.collate(), count_tokens=task.count_tokens,
                         device=str(device), progress=False, tensorboard=False)  # fmt: skip
            out[f"{name}_warmup_s"] = sum(timed(tr.train_step, device, 3))
            trainers[name] = tr
        except Exception as err:
            out[f"{name}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    out["params_m"] = count_parameters(trainers["loader"].module) / 1e6
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, tr in trainers.items():
            times[name] += timed(tr.train_step, device, 1)
    for name, ts in times.items():
        out[f"{name}_graphs_per_s"] = batch / statistics.median(ts)
        out[f"{name}_speedup"] = statistics.median(
            a / b for a, b in zip(times["loader"], ts, strict=True)
        )
    _, syncs = _count_syncs(lambda: [trainers["resident"].train_step() for _ in range(5)], device)
    out["resident_host_syncs_per_step"] = syncs / 5 if syncs >= 0 else -1.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled training step")
    ap.add_argument("--sections", default="", help="comma-separated sections to run (all)")
    ap.add_argument("--skip", default="", help="comma-separated SECTION.VARIANT to leave out")
    args = ap.parse_args()
    SKIP.update(x for x in args.skip.split(",") if x)
    wanted = {x for x in args.sections.split(",") if x}
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    device = torch.device(args.device)
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(info))
    results: dict[str, Any] = {"info": info}
    peak: list[float | None] = [None]
    for name, fn in (("matmul", lambda: matmul(device, args.quick)),
                     ("train", lambda: train(device, args.quick, peak[0], not args.no_compile)),
                     ("attention", lambda: attention(device, args.quick)),
                     ("sampling", lambda: sampling(device, args.quick)),
                     ("molecules", lambda: molecules(device, args.quick)),
                     ("molecule_train",
                      lambda: molecule_train(device, args.quick, not args.no_compile))):  # fmt: skip
        if wanted and name not in wanted:
            continue
        start = time.perf_counter()
        try:
            res = fn()
        except Exception as err:  # report and go on: one run on a lent GPU must say everything
            res = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
            traceback.print_exc(file=sys.stderr)
        res["section_seconds"] = time.perf_counter() - start
        if name == "matmul" and "bf16_tflops" in res:
            peak[0] = res["bf16_tflops" if device.type == "cuda" else "fp32_tflops"] * 1e12
        results[name] = res
        shown = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()
        )
        print(f"{name}: {shown}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
