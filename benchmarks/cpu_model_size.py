"""How large a text model trains on CPU: peak memory of real training steps per model size.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cpu_model_size.py [--sizes 12x768 24x1024]

For each size (layers x width, heads = width / 64) one child process builds the text
transformer (BPE-sized vocabulary 8192, seq_len 256, batch 4), runs 2 AdamW steps with EMA
through the Trainer (the CLI's path), with and without gradient checkpointing, and reports
its peak RSS. Weights, gradients, Adam's two moments and the EMA copy are 20 bytes per
parameter; the rest is activations and the allocator. The last column extrapolates the
largest parameter count whose steps fit in 24 GB from the bytes per parameter measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile, time, torch
from discdiff.nn import TransformerConfig, TransformerDenoiser
from discdiff.training import TrainConfig, Trainer
layers, width, ckpt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.set_num_threads(2)
K, L, B = 8192, 256, 4
cfg = TransformerConfig(num_states=K + 1, num_classes=K, num_layers=layers, d_model=width,
                        num_heads=width // 64, max_len=L, grad_checkpointing=ckpt,
                        time_conditioning=False)
torch.manual_seed(0)
model = TransformerDenoiser(cfg)
n = sum(p.numel() for p in model.parameters())
data = [torch.randint(K, (B, L)) for _ in range(2)]
def loss(m, x, g):
    return torch.nn.functional.cross_entropy(m(x, None).transpose(1, 2), x, reduction="none").mean(1)
t = time.perf_counter()
with tempfile.TemporaryDirectory() as run:
    Trainer(model, loss, data, TrainConfig(steps=2, batch_size=B, ema_decay=0.999, eval_every=0,
            ckpt_every=10**6, log_every=1), run, model_config={"type": "x"}, device="cpu",
            progress=False).train_step()
    Trainer  # noqa
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"params": n, "peak": peak, "seconds": time.perf_counter() - t}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["6x384", "12x768", "24x1024"])
    args = ap.parse_args()
    from discdiff.memory import reuse_freed_memory

    reuse_freed_memory()  # as the command line does (discdiff.memory)
    budget = 24 * 2**30
    for size in args.sizes:
        layers, width = map(int, size.split("x"))
        for ckpt in (0, 1):
            res = subprocess.run(
                [sys.executable, "-c", CHILD, str(layers), str(width), str(ckpt)],
                capture_output=True,
                text=True,
            )
            if res.returncode:
                print(f"{size}: failed: {res.stderr[-400:]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            per = r["peak"] / r["params"]
            print(
                f"{size:>8} {'checkpointed' if ckpt else 'plain':<12} {r['params'] / 1e6:7.1f} M "
                f"params, peak {r['peak'] / 2**30:5.2f} GiB ({per:5.1f} B/param), one step "
                f"{r['seconds']:6.1f} s; at this B/param 24 GB holds ~{budget / per / 1e6:,.0f} M",
                flush=True,
            )


if __name__ == "__main__":
    main()
