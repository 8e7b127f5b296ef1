"""Corpus scale: prepare time and memory, and training's memory and start-up, per corpus size.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/corpus.py --sizes 10 100 [--big]

Makes synthetic corpora (random words, MB = 2^20 bytes of ASCII) of each size, then for the
char and BPE tokenizers: `discdiff text prepare` (seconds, MB/s, peak RSS), and
`discdiff text train DATA_DIR` for a few steps (peak RSS, seconds to the first step). Each
command runs in its own process; peak RSS is that process's ru_maxrss. The last column gives
each figure as a ratio to the smallest corpus's, so the growth is visible.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CLI = [sys.executable, "-m", "discdiff.cli.main"]
WORDS = [
    "".join(
        random.Random(i).choice("abcdefghijklmnopqrstuvwxyz")
        for _ in range(random.Random(-i).randint(2, 9))
    )
    for i in range(5000)
]


def make_corpus(path: Path, megabytes: int) -> None:
    rng = random.Random(0)
    target = megabytes << 20
    with open(path, "w") as fh:
        written = 0
        while written < target:
            line = " ".join(rng.choice(WORDS) for _ in range(12)) + "\n"
            block = line * 1  # keep it simple: one line at a time, buffered by the file
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="corpus sizes, MB")
    ap.add_argument("--big", action="store_true", help="add 1024 MB")
    ap.add_argument("--tokenizers", nargs="+", default=["char", "bpe"])
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    sizes = sorted(set(args.sizes + ([1024] if args.big else [])))
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
                p_s, p_rss, _ = measured([*prep, "--vocab-size", "1024", "--no-progress"])
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
                t_s, t_rss, _ = measured(train)
                rows.append((mb, kind, p_s, mb / p_s, p_rss, t_rss, t_s))
                print(
                    f"{mb:>5} MB {kind:<4} prepare {p_s:7.1f} s {mb / p_s:6.1f} MB/s peak {p_rss:7.0f} MB | "
                    f"train peak {t_rss:6.0f} MB, {args.steps} steps in {t_s:5.1f} s",
                    flush=True,
                )
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
