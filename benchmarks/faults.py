"""Fault benchmark: kill -9 training at random moments, resume, compare with an uninterrupted run;
then feed the CLI bad inputs and tabulate what it answers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/faults.py --kills 8 --steps 60 --seed 0

Part 1, per task (text, pixels, molecules; tiny models on data made or shipped offline): an
uninterrupted reference run; then the same run killed with SIGKILL ``--kills`` times (at random
moments, half of them the instant a checkpoint is being written: a ``.tmp-`` directory appears)
and resumed with ``--resume`` after each kill. Prints kills survived, steps lost (progress at the
kill minus the checkpoint resumed from) and whether the final weights equal the reference's bit
for bit. Part 2: every bad input below, with its exit code and first stderr line; a row fails
if the exit code is not 2 (130 for an interrupt) or a traceback is printed.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "discdiff.cli.main"]

WORDS = "the king and queen of england went to war with france in spring".split()


def write_corpus(folder: Path) -> Path:
    rng = random.Random(0)
    path = folder / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)))
    return path


def write_smiles(folder: Path) -> Path:
    smi = ["CCO", "CC(=O)O", "c1ccoc1", "CC#N", "OCC(O)CO", "CC(C)O", "C1CC1N", "COC=O"] * 4
    path = folder / "mols.smi"
    path.write_text("\n".join(smi) + "\n")
    return path


def train_commands(folder: Path, steps: int) -> dict[str, list[str]]:
    common = ["--steps", str(steps), "--ckpt-every", "3", "--log-every", "1", "--no-progress"]
    common += ["--threads", "1", "--seed", "0"]
    return {
        "text": [
            *CLI,
            "text",
            "train",
            str(write_corpus(folder)),
            "--seq-len",
            "32",
            "--layers",
            "1",
            "--d-model",
            "32",
            "--heads",
            "2",
            "--cond-dim",
            "16",
            "--batch-size",
            "8",
            "--eval-every",
            "0",
            *common,
        ],
        "pixels": [
            *CLI,
            "pixels",
            "train",
            "--data",
            "digits",
            "--levels",
            "4",
            "--layers",
            "1",
            "--d-model",
            "32",
            "--heads",
            "2",
            "--batch-size",
            "16",
            "--eval-every",
            "0",
            *common,
        ],
        "molecules": [
            *CLI,
            "molecules",
            "train",
            "--data",
            str(write_smiles(folder)),
            "--layers",
            "1",
            "--node-dim",
            "16",
            "--edge-dim",
            "8",
            "--heads",
            "2",
            "--batch-size",
            "8",
            "--eval-every",
            "0",
            *common,
        ],
    }


def progress(run: Path) -> int:
    """The last step logged in metrics.csv (0 if none)."""
    path = run / "metrics.csv"
    if not path.is_file():
        return 0
    try:
        rows = list(csv.DictReader(path.open()))
    except (OSError, csv.Error):
        return 0
    return int(float(rows[-1]["step"])) if rows else 0


def saved_step(run: Path) -> int:
    pointer = run / "checkpoints" / "latest"
    try:
        return int(pointer.read_text().strip().removeprefix("step_"))
    except (OSError, ValueError):
        return 0


def final_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    from discdiff.training import latest_checkpoint

    ckpt = latest_checkpoint(run)
    out = load_file(str(ckpt / "model.safetensors"))
    if (ckpt / "ema.safetensors").is_file():
        out.update({f"ema/{k}": v for k, v in load_file(str(ckpt / "ema.safetensors")).items()})
    return out


def kill_run(cmd: list[str], run: Path, kills: int, steps: int, rng: random.Random) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = survived = lost = 0
    while True:
        args = [*cmd, "--out", str(run)] + (["--resume"] if run.exists() else [])
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        if done < kills:
            at_write = done % 2 == 1
            base = saved_step(run)
            target = rng.randint(base + 1, max(base + 1, steps - 1))
            while proc.poll() is None:
                if at_write and any((run / "checkpoints").glob(".tmp-*")):
                    break  # the instant a checkpoint is being written
                if not at_write and progress(run) >= target:
                    break  # a random step between checkpoints
                time.sleep(0.002 if at_write else 0.01)
            if proc.poll() is None:
                reached = progress(run)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                done += 1
                lost += max(0, reached - saved_step(run))
                continue
        err = proc.communicate()[1].decode()
        if proc.returncode != 0:
            raise RuntimeError(f"resume failed ({proc.returncode}): {err.strip()[-400:]}")
        survived = done
        break
    return {"kills": done, "survived": survived, "steps_lost": lost, "final_step": saved_step(run)}


def part1(kills: int, steps: int, seed: int) -> list[dict]:
    import torch

    rng = random.Random(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for task, cmd in train_commands(folder, steps).items():
            ref = folder / f"{task}_ref"
            res = subprocess.run([*cmd, "--out", str(ref)], capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(f"{task} reference run failed: {res.stderr[-400:]}")
            start = time.perf_counter()
            row = kill_run(cmd, folder / f"{task}_killed", kills, steps, rng)
            a, b = final_weights(ref), final_weights(folder / f"{task}_killed")
            row["identical"] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            row["task"], row["seconds"] = task, time.perf_counter() - start
            rows.append(row)
            print(
                f"{task:<10} kills {row['kills']:>2}  survived {row['survived']:>2}  steps lost "
                f"{row['steps_lost']:>3}  final step {row['final_step']}/{steps}  "
                f"bit-identical {row['identical']}",
                flush=True,
            )
    return rows


def bad_inputs(folder: Path, text_run: Path, pixel_run: Path) -> list[tuple[str, list[str]]]:
    corpus = write_corpus(folder)
    blocker = folder / "a_file"
    blocker.write_text("x")
    edited = folder / "edited_run"
    subprocess.run(["cp", "-r", str(text_run), str(edited)], check=True)
    (edited / "task.json").write_text(
        (edited / "task.json").read_text().replace("absorbing", "uniform")
    )
    empty_manifest = folder / "empty_manifest_run"
    subprocess.run(["cp", "-r", str(text_run), str(empty_manifest)], check=True)
    for m in (empty_manifest / "checkpoints").glob("step_*/manifest.json"):
        m.write_text('{"step": 2, "files": {}}')
    tiny = [
        "--seq-len",
        "16",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--cond-dim",
        "8",
    ]
    t = ["text", "train", str(corpus), "--no-progress", "--threads", "1", *tiny]
    s = ["text", "sample", str(text_run), "-n", "1", "--steps", "2"]
    return [
        ("text: unknown process", [*t, "--out", str(folder / "r1"), "--process", "gaussian"]),
        ("text: steps 0", [*t, "--out", str(folder / "r2"), "--steps", "0"]),
        ("text: lr nan", [*t, "--out", str(folder / "r3"), "--lr", "nan"]),
        ("text: weight decay inf", [*t, "--out", str(folder / "r4"), "--weight-decay", "inf"]),
        (
            "text: lr 1e3 (non-finite loss)",
            [
                *t,
                "--out",
                str(folder / "r5"),
                "--steps",
                "40",
                "--lr",
                "1e3",
                "--warmup",
                "0",
                "--ckpt-every",
                "1",
                "--log-every",
                "10",
                "--grad-clip",
                "0",
            ],
        ),
        (
            "text: d_model 2**20",
            [*t, "--out", str(folder / "r6"), "--d-model", "1048576", "--heads", "1"],
        ),
        (
            "text: missing corpus",
            ["text", "train", str(folder / "nope.txt"), "--out", str(folder / "r7")],
        ),
        (
            "text: existing run without --resume",
            ["text", "train", str(corpus), "--out", str(text_run), *tiny],
        ),
        (
            "text: --steps below the saved step",
            [*t, "--out", str(text_run), "--resume", "--steps", "1"],
        ),
        ("text sample: missing run", ["text", "sample", str(folder / "norun")]),
        ("text sample: unknown sampler", [*s, "--sampler", "beam"]),
        ("text sample: sundae on absorbing", [*s, "--sampler", "sundae"]),
        (
            "text sample: 1e12 steps",
            ["text", "sample", str(text_run), "-n", "1", "--steps", "1000000000000"],
        ),
        ("text sample: negative temperature", [*s, "--temperature", "-1"]),
        ("text sample: infill too long", [*s, "--infill", "[MASK:999]"]),
        ("text sample: --out under a file", [*s, "--out", str(blocker / "s.txt")]),
        ("text sample: --out is a folder", [*s, "--out", str(folder)]),
        (
            "text sample: task.json edited",
            ["text", "sample", str(edited), "-n", "1", "--steps", "2"],
        ),
        (
            "text sample: empty manifest",
            ["text", "sample", str(empty_manifest), "-n", "1", "--steps", "2"],
        ),
        ("text eval: bad split", ["text", "eval", str(text_run), "--split", "dev"]),
        (
            "pixels train: levels 1",
            ["pixels", "train", "--data", "digits", "--levels", "1", "--out", str(folder / "p1")],
        ),
        (
            "pixels train: unknown data",
            ["pixels", "train", "--data", "cifar10", "--out", str(folder / "p2")],
        ),
        (
            "pixels sample: label 10",
            ["pixels", "sample", str(pixel_run), "--label", "10", "--out", str(folder / "g.png")],
        ),
        (
            "pixels sample: negative guidance",
            [
                "pixels",
                "sample",
                str(pixel_run),
                "--guidance",
                "-2",
                "--out",
                str(folder / "g.png"),
            ],
        ),
        (
            "pixels sample: jpg output",
            ["pixels", "sample", str(pixel_run), "--out", str(folder / "g.jpg")],
        ),
        (
            "molecules sample: --out under a file",
            ["molecules", "sample", "-n", "1000", "--out", str(blocker / "m.sdf")],
        ),
        (
            "molecules sample: bad extension",
            ["molecules", "sample", "--out", str(folder / "m.xyz")],
        ),
        (
            "molecules sample: steps 0",
            ["molecules", "sample", "--steps", "0", "--out", str(folder / "m.sdf")],
        ),
        (
            "molecules sample: corrupt checkpoint",
            ["molecules", "sample", "--checkpoint", str(blocker), "--out", str(folder / "m.sdf")],
        ),
        (
            "molecules sample: first-hitting on marginal",
            [
                "molecules",
                "sample",
                "--sampler",
                "first-hitting",
                "-n",
                "2",
                "--out",
                str(folder / "m.sdf"),
            ],
        ),
        (
            "molecules train: missing data",
            ["molecules", "train", "--data", str(folder / "none.smi"), "--out", str(folder / "m1")],
        ),
        ("task: unknown task", ["task", "train", "nope", "--out", str(folder / "t1")]),
        (
            "task: config not JSON",
            ["task", "train", "text", "--out", str(folder / "t2"), "--config", "{bad"],
        ),
        ("threads -1", ["text", "sample", str(text_run), "--threads", "-1"]),
        *round_three(folder, corpus, text_run, t, s),
    ]


def round_three(
    folder: Path, corpus: Path, text_run: Path, t: list[str], s: list[str]
) -> list[tuple[str, list[str]]]:
    """The third battery's families: a run's own files, prepared data that disagree with their
    meta, hostile corpora and tokenizer settings, sizes that cannot fit, resume changes."""
    data = folder / "data"
    subprocess.run([*CLI, "text", "prepare", str(corpus), "--out", str(data), "--no-progress"],
                   check=True, capture_output=True)  # fmt: skip

    def damaged(name: str, edit) -> Path:
        dest = folder / name
        subprocess.run(["cp", "-r", str(data), str(dest)], check=True)
        edit(dest)
        return dest

    def flip(dest: Path) -> None:
        raw = bytearray((dest / "train.bin").read_bytes())
        raw[5] = (raw[5] + 1) % 4
        (dest / "train.bin").write_bytes(bytes(raw))

    def vocab(dest: Path) -> None:
        import json

        meta = json.loads((dest / "meta.json").read_text())
        meta["vocab_size"] = 10  # fewer ids than the data use
        (dest / "meta.json").write_text(json.dumps(meta))

    def no_meta(dest: Path) -> None:
        (dest / "meta.json").unlink()

    eod = folder / "eod.txt"
    eod.write_text("a\x1eb\n" * 200)
    weights = next((text_run / "checkpoints").glob("step_*/model.safetensors"))
    out = ["--out", str(folder / "x.txt")]
    return [
        ("3: sample over the run's weights", [*s, "--out", str(weights)]),
        ("3: export over a checkpoint",
         ["task", "export", str(text_run), "--out", str(weights.with_name("e.safetensors"))]),
        ("3: train into a prepared data dir", [*t, "--out", str(data)]),
        ("3: train into the current directory", [*t, "--out", ""]),
        ("3: resume with another process", [*t, "--out", str(text_run), "--resume",
                                             "--process", "uniform"]),
        ("3: resume with another corpus", ["text", "train", str(eod), "--out", str(text_run),
                                           "--resume"]),
        ("3: a train split edited after prepare", [*t[:2], str(damaged("d1", flip)),
                                                   *t[3:], "--out", str(folder / "q1")]),
        ("3: meta.json vocab_size changed", [*t[:2], str(damaged("d2", vocab)), *t[3:],
                                             "--out", str(folder / "q2")]),
        ("3: token files without meta.json", [*t[:2], str(damaged("d3", no_meta)), *t[3:],
                                              "--out", str(folder / "q3")]),
        ("3: corpus holding U+001E", ["text", "prepare", str(eod), "--out", str(folder / "d4")]),
        ("3: BPE vocabulary 10^9", ["text", "prepare", str(corpus), "--out", str(folder / "d5"),
                                    "--tokenizer", "bpe", "--vocab-size", "1000000000"]),
        ("3: /dev/null as corpus", ["text", "train", "/dev/null", "--out", str(folder / "q4")]),
        ("3: a file as run dir", ["text", "sample", str(corpus), "-n", "1"]),
        ("3: -n 10^9 samples", ["text", "sample", str(text_run), "-n", "1000000000",
                                "--length", "8"]),
        ("3: --seed 2^64", [*s, "--seed", str(2**64), *out]),
        ("3: infill [mask:4]", [*s, "--infill", "the [mask:4] king", *out]),
        ("3: --proportion 0.9,abc", [*s, "--sampler", "sundae", "--proportion", "0.9,abc"]),
        ("3: --max-train -5", ["molecules", "train", "--data", str(write_smiles(folder)),
                               "--max-train", "-5", "--out", str(folder / "q5")]),
    ]  # fmt: skip


def part2() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        text_run, pixel_run = folder / "text_run", folder / "pixel_run"
        corpus = write_corpus(folder)
        tiny = [
            "--seq-len",
            "16",
            "--layers",
            "1",
            "--d-model",
            "16",
            "--heads",
            "2",
            "--cond-dim",
            "8",
        ]
        subprocess.run(
            [
                *CLI,
                "text",
                "train",
                str(corpus),
                "--out",
                str(text_run),
                "--steps",
                "2",
                "--no-progress",
                *tiny,
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *CLI,
                "pixels",
                "train",
                "--data",
                "digits",
                "--levels",
                "4",
                "--layers",
                "1",
                "--d-model",
                "16",
                "--heads",
                "2",
                "--steps",
                "2",
                "--out",
                str(pixel_run),
                "--no-progress",
            ],
            check=True,
            capture_output=True,
        )
        for name, argv in bad_inputs(folder, text_run, pixel_run):
            res = subprocess.run(
                [*CLI, *argv],
                capture_output=True,
                text=True,
                env=dict(os.environ, OMP_NUM_THREADS="1"),
            )
            lines = [
                ln
                for ln in res.stderr.splitlines()
                if ln.strip() and not ln.startswith(("tensorboard", "warning:", "note:"))
            ]
            first = lines[0] if lines else ""
            ok = (
                res.returncode == 2
                and "Traceback" not in res.stderr
                and first.startswith(("error:", "Usage:", "Try"))
            )
            if res.returncode == 2 and first.startswith(
                "Usage:"
            ):  # click's usage errors: the line that names the problem
                first = next((ln for ln in lines if "Error" in ln or "Invalid" in ln), first)
            rows.append({"input": name, "exit": res.returncode, "first": first[:150], "ok": ok})
            print(
                f"{'ok ' if ok else 'BAD'} {res.returncode:>3}  {name:<42} {first[:110]}",
                flush=True,
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=6, help="kills per task")
    ap.add_argument("--steps", type=int, default=60, help="training steps per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-kills", action="store_true", help="only the bad-input table")
    args = ap.parse_args()
    os.chdir(ROOT)
    if not args.skip_kills:
        print("== kill -9 and resume ==", flush=True)
        rows = part1(args.kills, args.steps, args.seed)
        total = sum(r["kills"] for r in rows)
        same = all(r["identical"] for r in rows)
        print(
            f"total: {total} kills, {sum(r['survived'] for r in rows)} survived, "
            f"{sum(r['steps_lost'] for r in rows)} steps lost, all bit-identical: {same}"
        )
    print("== bad inputs ==", flush=True)
    bad = part2()
    print(f"{sum(r['ok'] for r in bad)} of {len(bad)} bad inputs answered with one line and exit 2")


if __name__ == "__main__":
    main()
