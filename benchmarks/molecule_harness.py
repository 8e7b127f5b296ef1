"""The molecule harness: sample files scored twice (the library's metric code and an independent
RDKit count), beside DiGress's own samples and the data set itself, with standard errors.

    python benchmarks/molecule_harness.py --data qm9 [NAME=FILE ...] [--model M [-n 10000]]
        [--no-digress] [--bootstrap 50] [--out DIR] [--json results.json] [--threads 2]

- ``NAME=FILE``: a sample file (``molecules sample --out X.smi --keep-invalid`` lines, or one
  SMILES a line with ``None`` for a failure, as DiGress writes them).
- ``--model M`` (a shipped name, run dir, checkpoint or export): samples ``-n`` molecules twice
  through the command a chemist runs, ``M raw`` (``--model-alone``: no guard, repair or
  rejection; the model's own validity) and ``M default`` (guards and rejection), into ``--out``.
- DiGress's sample file for the data set (``$DIGRESS_ANCHORS``, default
  ``/work/shared/anchors/digress``) is scored as one more row unless ``--no-digress``. Its
  failures are ``None`` and its other lines are the largest fragment only, so its connected share
  cannot be read from the file (it reads as the valid share).

Each row is counted by ``discdiff.chem.metrics.molecule_metrics`` (profile on, novelty against
the training split and all splits, FCD through the ``fcd`` extra where installed) and by
``benchmarks/count_molecules.py`` (RDKit and numpy only: novelty against every split, ring kinds,
ring sizes, bootstrap SEs for the distances). A figure where the two differ by more than three
standard errors is marked ``!``: the library repairs some failed samples before counting
uniqueness and novelty, the counter does not, so small gaps there are expected.

``--card FILE`` writes those two rows as a model card's metrics (the independent count's value,
standard error and sample count: what ``discdiff/assets/catalogue.json`` holds), and ``--check-card
NAME`` compares them with the shipped model NAME's card: a figure reproduces when the two lie
within three combined standard errors (sqrt(se_card^2 + se_now^2)).

The issue's targets are checked for rows named ``... raw`` and ``... default`` (``--model``
names them so): QM9 (raw: strict validity >= 99%; default: aromatic 14-19%, atom / bond TV <=
0.0023 / 0.0035, uniqueness >= 97%, novelty against all of QM9 >= 35%) and MOSES (default: 100%
valid and connected, aromatic share and each common ring size within 10% of MOSES's test
molecules, novelty >= 90%; raw: validity >= 86%).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import count_molecules as cm  # noqa: E402  (the independent counter, beside this file)

from discdiff.chem.metrics import canonical_set, molecule_metrics, reference_stats  # noqa: E402

ANCHORS = Path(os.environ.get("DIGRESS_ANCHORS", "/work/shared/anchors/digress"))
DIGRESS = {"qm9": "final_smiles_qm9_noH.txt", "moses": "generated_smiles_moses.txt"}
#: (library key, counter key, label, a share): the figures both paths give
PAIRS = [
    ("validity", "valid", "valid (strict)", True),
    ("validity_connected", "connected", "valid and connected", True),
    ("uniqueness", "unique", "unique, of valid", True),
    ("novelty", "novel_vs_train", "novel vs train, of unique", True),
    ("novelty_whole", "novel_vs_all", "novel vs all splits", True),
    ("aromatic", "aromatic", "aromatic, of valid", True),
    ("atom_tv", "atom_tv", "atom TV", False),
    ("bond_tv", "bond_tv", "bond TV", False),
    ("ring_tv", "ring_tv", "ring-size TV", False),
    ("qed_w1", "qed_w1", "QED W1", False),
    ("sa_w1", "sa_w1", "SA W1", False),
    ("mw_w1", "mw_w1", "MW W1", False),
]
#: what a model card keeps of a raw / default row (counter key, card label)
CARD = {
    "raw": [("valid", "validity, strict"), ("connected", "validity, connected")],
    "default": [
        ("valid", "validity"),
        ("connected", "validity, connected"),
        ("unique", "uniqueness"),
        ("novel_vs_train", "novelty vs train"),
        ("novel_vs_all", "novelty vs all splits"),
        ("aromatic", "aromatic share"),
        ("atom_tv", "atom TV vs test"),
        ("bond_tv", "bond TV vs test"),
        ("ring_tv", "ring-size TV vs test"),
        ("qed_w1", "QED W1 vs test"),
        ("sa_w1", "SA W1 vs test"),
        ("mw_w1", "MW W1 vs test"),
    ],
}


class Data:
    """Both paths' views of one data set: split sets, reference molecules and statistics."""

    def __init__(self, name: str, splits: dict[str, list[str]], reference: list[str]) -> None:
        self.name = name
        raw = name == "moses"  # MOSES's strings are canonical: compared as they are (as MOSES)
        # the library's view (its canonical_set) and the counter's (RDKit alone)
        self.lib_train = canonical_set(splits["train"], canonicalize=not raw)
        self.lib_whole = set().union(
            self.lib_train, *(canonical_set(v, canonicalize=not raw) for k, v in splits.items()
                              if k != "train")
        )  # fmt: skip
        self.lib_reference = reference_stats(reference, profile=True)
        self.splits = cm.split_sets(name, splits)
        self.reference = cm.reference_profile(reference)
        self.reference_row = cm.reference_row(self.reference, reference)

    @classmethod
    def load(cls, name: str) -> Data:
        return cls(name, *cm.raw_data(name))


def has_fcd() -> bool:
    try:
        import fcd  # noqa: F401  (the optional extra)
    except ImportError:
        return False
    return True


def score(samples: list[str | None], data: Data, bootstrap: int, fcd: bool) -> dict:
    """One row: ``{"library": {...}, "independent": {...}}``."""
    lib = molecule_metrics(
        samples, data.lib_train, data.lib_reference, fcd=fcd, profile=True, whole=data.lib_whole
    )
    ind = cm.count(samples, data.splits, data.reference, bootstrap)
    return {"library": lib, "independent": ind}


def differs(lib: float, ind: tuple[float, float]) -> bool:
    """Whether the two paths differ by more than three standard errors (or 1e-9 without one)."""
    value, se = ind
    if not (math.isfinite(lib) and math.isfinite(value)):
        return math.isfinite(lib) != math.isfinite(value)
    return abs(lib - value) > max(3 * se if math.isfinite(se) else 0.0, 1e-9)


def targets(name: str, row: dict, data: Data) -> list[tuple[str, bool]]:
    """The issue's targets that apply to a row named ``... raw`` or ``... default``."""
    ind, lib = row["independent"], row["library"]
    v = {k: x[0] for k, x in ind.items() if isinstance(x, tuple)}
    kind = name.rsplit(" ", 1)[-1]
    if data.name == "qm9" and kind == "raw":
        return [("strict validity >= 99%", v["valid"] >= 0.99)]
    if data.name == "qm9" and kind == "default":
        return [
            ("aromatic 14-19%", 0.14 <= v["aromatic"] <= 0.19),
            ("atom TV <= 0.0023", v["atom_tv"] <= 0.0023),
            ("bond TV <= 0.0035", v["bond_tv"] <= 0.0035),
            ("uniqueness >= 97%", v["unique"] >= 0.97),
            ("novelty vs all of QM9 >= 35%", v["novel_vs_all"] >= 0.35),
        ]
    if data.name == "moses" and kind == "raw":
        return [("validity >= 86% (DiGress)", v["valid"] >= 0.86)]
    if data.name == "moses" and kind == "default":
        ref = data.reference_row
        ours = ind.get("ring_sizes", {})
        common = [s for s, f in ref["ring_sizes"].items() if f >= 0.01]
        return [
            ("100% valid", v["valid"] == 1.0),
            ("100% connected", v["connected"] == 1.0),
            ("aromatic within 10% of MOSES", abs(v["aromatic"] / ref["aromatic"][0] - 1) <= 0.1),
            (
                "ring sizes within 10% of MOSES (" + ", ".join(common) + ")",
                all(abs(ours.get(s, 0.0) / ref["ring_sizes"][s] - 1) <= 0.1 for s in common),
            ),
            ("novelty >= 90%", v.get("novel_vs_train", 0.0) >= 0.9 and lib["novelty"] >= 0.9),
        ]
    return []


def _cell(x: float | tuple[float, float] | None, pct: bool) -> str:
    if x is None:
        return "-"
    value, se = x if isinstance(x, tuple) else (x, None)
    if value is None or not math.isfinite(value):
        return "-"
    f = 100.0 if pct else 1.0
    digits = 2 if pct else 4
    s = f"{value * f:.{digits}f}"
    return s + (f" +- {se * f:.{digits}f}" if se is not None and math.isfinite(se) else "")


def report(rows: dict[str, dict], data: Data) -> str:
    """The comparison table, ring kinds and sizes beside the data set, and the targets."""
    names = list(rows)
    w = max(26, *(len(n) + 2 for n in names))
    ref = data.reference_row
    out = [f"{'':30s}" + "".join(f"{n:>{w}s}" for n in names) + f"{data.name + ' test':>18s}"]
    out.append(f"{'samples':30s}" + "".join(
        f"{rows[n]['independent']['samples']:>{w}d}" for n in names) + f"{ref['samples']:>18d}"
    )  # fmt: skip
    for lib_key, ind_key, label, pct in PAIRS:
        cells = []
        for n in names:
            lib, ind = rows[n]["library"].get(lib_key), rows[n]["independent"].get(ind_key)
            mark = "!" if lib is not None and ind is not None and differs(lib, ind) else " "
            cells.append(f"{_cell(lib, pct)} | {_cell(ind, pct)}{mark}")
        extra = _cell(ref["aromatic"], True) if ind_key == "aromatic" else ""
        out.append(f"{label:30s}" + "".join(f"{c:>{w}s}" for c in cells) + f"{extra:>18s}")
    for n in names:
        f = rows[n]["library"].get("fcd")
        if f is not None:
            out.append(f"FCD ({n}): {f:.3f}")
    out.append("each cell: library | independent +- SE (% where a share); ! = over 3 SE apart")
    for title, key in (("% of valid with a ring kind", "ring_kinds"), ("% of rings by size",
                                                                       "ring_sizes")):  # fmt: skip
        cols = {n: rows[n]["independent"].get(key, {}) for n in names} | {"test": ref[key]}
        keys = sorted({k for c in cols.values() for k in c})

        def val(c: dict, k: str) -> float:
            x = c.get(k, 0.0)
            return x[0] if isinstance(x, (tuple, list)) else x

        keys = [k for k in keys if max(val(c, k) for c in cols.values()) >= 0.002]
        out.append("")
        out.append(f"{title:30s}" + "".join(f"{n:>{w}s}" for n in cols))
        for k in keys:
            out.append(f"{k:30s}" + "".join(f"{_cell(c.get(k, 0.0), True):>{w}s}"
                                            for c in cols.values()))  # fmt: skip
    for n in names:
        checks = rows[n].get("targets", [])
        if checks:
            out.append("")
            out.append(f"targets ({n}): {sum(ok for _, ok in checks)} of {len(checks)} met")
            out += [f"  [{'x' if ok else ' '}] {t}" for t, ok in checks]
    return "\n".join(out)


def card_rows(rows: dict[str, dict]) -> list[dict]:
    """The card metrics of the rows named ``... raw`` / ``... default``: value, SE, n (the
    samples drawn; a share's own denominator may be the valid or unique ones), unit."""
    out = []
    for name, row in rows.items():
        kind = name.rsplit(" ", 1)[-1]
        ind = row["independent"]
        for key, label in CARD.get(kind, []):
            value, se = ind[key]
            share = key in ("valid", "connected", "unique", "aromatic") or key.startswith("novel")
            out.append({"metric": f"{label} ({kind})", "value": round(value, 6),
                        "se": round(se, 6), "n": ind["samples"]} | ({"unit": "%"} if share else {})
                       )  # fmt: skip
    return out


def check_card(rows: list[dict], card: list[dict]) -> list[tuple[str, bool, str]]:
    """(metric, reproduces, detail) for each of ``rows`` the card also has."""
    known = {r["metric"]: r for r in card}
    out = []
    for r in rows:
        c = known.get(r["metric"])
        if c is None or c.get("se") is None:
            continue
        tol = 3 * math.hypot(c["se"], r["se"])
        ok = abs(r["value"] - c["value"]) <= max(tol, 1e-12)
        out.append((r["metric"], ok, f"card {c['value']:.4f} +- {c['se']:.4f}, now "
                                     f"{r['value']:.4f} +- {r['se']:.4f}"))  # fmt: skip
    return out


def sample_model(model: str, n: int, out: Path, seed: int, threads: int) -> dict[str, Path]:
    """``M raw`` and ``M default`` sample files from the ``molecules sample`` command."""
    exe = Path(sys.executable).parent / "discdiff"  # this environment's command, else PATH's
    if not exe.is_file():
        exe = Path(shutil.which("discdiff") or "discdiff")
    files = {}
    for kind, flags in (("raw", ["--model-alone"]), ("default", [])):
        path = out / f"{Path(model).name}_{kind}.smi"
        start = time.perf_counter()
        cmd = [str(exe), "molecules", "sample", model, "-n", str(n), "--seed", str(seed),
               "--threads", str(threads), "--no-progress", "--out", str(path), *flags]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"sampled {model} {kind}: {n} in {time.perf_counter() - start:.1f} s")
        files[f"{Path(model).name} {kind}"] = path
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", help="NAME=FILE sample files")
    p.add_argument("--data", default="qm9", choices=("qm9", "moses"))
    p.add_argument("--model", default=None, help="sample this model first (raw and default)")
    p.add_argument("-n", type=int, default=10_000, help="molecules per --model sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-digress", action="store_true")
    p.add_argument("--bootstrap", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("runs/molecule_harness"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--card", type=Path, default=None, help="write the raw/default card metrics")
    p.add_argument("--check-card", default=None, help="compare with this shipped model's card")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    entries: dict[str, Path] = {}
    for spec in args.files:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            p.error(f"{spec!r}: expected NAME=FILE with an existing file")
        entries[name] = Path(path)
    if args.model is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        entries.update(sample_model(args.model, args.n, args.out, args.seed, args.threads))
    digress = ANCHORS / DIGRESS[args.data]
    if not args.no_digress:
        if not digress.is_file():
            p.error(f"DiGress's samples are not at {digress} (set DIGRESS_ANCHORS or --no-digress)")
        entries[f"DiGress {args.data}"] = digress
    if not entries:
        p.error("nothing to score: give NAME=FILE, --model, or leave DiGress's file in")
    start = time.perf_counter()
    data = Data.load(args.data)
    print(f"[{args.data}] splits and reference: {time.perf_counter() - start:.1f} s")
    fcd = has_fcd()
    rows = {}
    for name, path in entries.items():
        t = time.perf_counter()
        rows[name] = score(cm.read_samples(path), data, args.bootstrap, fcd)
        rows[name]["targets"] = targets(name, rows[name], data)
        rows[name]["file"] = str(path)
        print(f"scored {name}: {time.perf_counter() - t:.1f} s")
    print()
    print(report(rows, data))
    if not fcd:
        print("\nFCD: the optional `fcd` package is not installed (pip install 'discdiff[fcd]')")
    if args.json is not None:
        args.json.write_text(json.dumps({"data": args.data, "reference": data.reference_row,
                                         "rows": rows}, indent=1, default=str))  # fmt: skip
    card = card_rows(rows)
    if args.card is not None:
        args.card.write_text(json.dumps(card, indent=1))
    if args.check_card is not None:
        from discdiff.catalogue import model_card

        checks = check_card(card, model_card(args.check_card).metrics)
        print(f"\ncard {args.check_card}: {sum(ok for _, ok, _ in checks)} of {len(checks)} "
              "figures reproduce (within 3 combined SE)")  # fmt: skip
        for metric, ok, detail in checks:
            print(f"  [{'x' if ok else ' '}] {metric}: {detail}")
        if not all(ok for _, ok, _ in checks):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
