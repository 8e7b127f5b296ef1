"""Corpus scale: prepare time and memory, and training's memory and start-up, per corpus size.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/corpus.py --sizes 10 100 [--big]

Makes synthetic corpora (random words, MB = 2^20 bytes of ASCII) of each size, then for the
char and BPE tokenizers: `discdiff text prepare` (seconds, MB/s, peak RSS), and
`discdiff text train DATA_DIR` for a few steps (peak RSS, start-up: seconds from launch to the
first step, and the whole command); then `text train` twice on the raw corpus (the first
prepares it into the cache, the second reuses it). Each
command runs in its own process; peak RSS is that process's ru_maxrss. The last column gives
each figure as a ratio to the smallest corpus's, so the growth is visible.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "discdiff.cli.main"]
WORDS = [
    "".join(
        random.Random(i).choice("abcdefghijklmnopqrstuvwxyz")
        for _ in range(random.Random(-i).randint(2, 9))
    )
    for i in range(5000)
]


def make_corpus(path: Path, megabytes: int) -> None:
    """``megabytes`` MB of lines of 12 random words (a fixed 5,000-word vocabulary), seed 0."""
    rng = np.random.default_rng(0)
    words = np.array(WORDS, dtype=object)
    target = megabytes << 20
    with open(path, "w") as fh:
        written = 0
        while written < target:
            rows = words[rng.integers(len(WORDS), size=(20_000, 12))]  # (lines, 12)
            block = "".join(" ".join(row) + "\n" for row in rows)
            block = block[: target - written]
            fh.write(block)
            written += len(block)


def measured(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of a command run in a child that reports its child's RSS."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "dt = time.perf_counter() - t; "
        "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
        "print(r.stdout); sys.stderr.write(r.stderr); sys.exit(r.returncode)"
    )
    res = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed: {res.stderr[-500:]}")
    first, _, rest = res.stdout.partition("\n")
    seconds, rss = map(float, first.split())
    return seconds, rss, rest


def _startup(run: Path, t0: float) -> float:
    """Seconds from launching a train command to its trainer starting the first step (the
    moment the run's config.json is written)."""
    return (run / "config.json").stat().st_mtime - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[10, 100, 1024], help="corpus sizes, MB"
    )
    ap.add_argument("--big", action="store_true", help="add 5120 MB")
    ap.add_argument("--tokenizers", nargs="+", default=["char", "bpe"])
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    sizes = sorted(set(args.sizes + ([5120] if args.big else [])))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for mb in sizes:
            corpus = folder / f"c{mb}.txt"
            make_corpus(corpus, mb)
            for kind in args.tokenizers:
                data = folder / f"d{mb}_{kind}"
                prep = [
                    *CLI,
                    "text",
                    "prepare",
                    str(corpus),
                    "--out",
                    str(data),
                    "--tokenizer",
                    kind,
                ]
                size = ["--vocab-size", "1024"] if kind == "bpe" else []
                p_s, p_rss, _ = measured([*prep, *size, "--no-progress"])
                train = [*CLI, "text", "train", str(data), "--out", str(folder / f"r{mb}_{kind}")]
                train += [
                    "--steps",
                    str(args.steps),
                    "--seq-len",
                    "256",
                    "--layers",
                    "2",
                    "--d-model",
                    "128",
                ]
                train += [
                    "--heads",
                    "4",
                    "--batch-size",
                    "16",
                    "--eval-every",
                    "0",
                    "--no-progress",
                    "--threads",
                    "2",
                ]
                t0 = time.time()
                t_s, t_rss, _ = measured(train)
                up = _startup(folder / f"r{mb}_{kind}", t0)
                rows.append((mb, kind, p_s, mb / p_s, p_rss, t_rss, t_s, up))
                print(
                    f"{mb:>5} MB {kind:<4} prepare {p_s:7.1f} s {mb / p_s:6.1f} MB/s peak "
                    f"{p_rss:7.0f} MB | train peak {t_rss:6.0f} MB, start-up {up:4.1f} s, "
                    f"{args.steps} steps in {t_s:5.1f} s",
                    flush=True,
                )
                shutil.rmtree(data)
            # a raw corpus: the first train prepares it into the cache, the second reuses it
            os.environ["DISCDIFF_CACHE"] = str(folder / "cache")
            raw = [*CLI, "text", "train", str(corpus), *train[6:]]
            raw[raw.index("--out") + 1] = str(folder / f"raw{mb}")
            t0 = time.time()
            first, _, _ = measured(raw)
            up1 = _startup(folder / f"raw{mb}", t0)
            shutil.rmtree(folder / f"raw{mb}")
            t0 = time.time()
            second, _, _ = measured(raw)
            up2 = _startup(folder / f"raw{mb}", t0)
            print(
                f"{mb:>5} MB char train on the raw corpus: first start-up {up1:5.1f} s "
                f"(prepares; command {first:5.1f} s), second start-up {up2:4.1f} s (cache hit; "
                f"command {second:5.1f} s)",
                flush=True,
            )
            shutil.rmtree(folder / "cache")
            corpus.unlink()
    print("\nratios to the smallest corpus (same tokenizer):")
    for kind in args.tokenizers:
        mine = [r for r in rows if r[1] == kind]
        base = mine[0]
        for r in mine:
            print(
                f"{r[0]:>5} MB {kind:<4} prepare RSS x{r[4] / base[4]:.2f}, train RSS x{r[5] / base[5]:.2f}, "
                f"train start-up+steps x{r[6] / base[6]:.2f}"
            )
    _ = resource


if __name__ == "__main__":
    main()
