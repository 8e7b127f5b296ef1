"""Ship an exported model: copy it into the package's assets and write its card in the catalogue.

    python benchmarks/catalogue_entry.py NAME WEIGHTS.safetensors --card card.json \\
        --title "..." --data "..." --recipe "..." --training "..." [--measured-by "..."] \\
        [--note "..." ...] [--commit SHA] [--replace] [--assets DIR]

``WEIGHTS`` is what ``molecules export`` / ``task export`` wrote (its ``_config.json`` and any
``_files/`` folder beside it come too, renamed to ``NAME_...`` with ``-`` as ``_``). ``--card``
is the metrics list ``benchmarks/molecule_harness.py --card`` writes (or any list of
``{"metric", "value", "se", "n", "unit"}`` rows). The parameters are counted from the loaded
model, the size and sha256 read from the copied file, the commit defaults to the current
``git rev-parse --short HEAD``. The card is refused when the file is over the catalogue's
20 MB, when a metric lacks its standard error, or when NAME exists and ``--replace`` is not
given; nothing is written then. Afterwards ``discdiff models show NAME`` prints the card and
``tests/test_catalogue.py`` checks it against its file and its model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from discdiff import catalogue
from discdiff.files import sha256_file
from discdiff.nn import count_parameters
from discdiff.tasks import runs


def _json(doc: dict) -> str:
    """The catalogue in its own layout: one line per metric, one per note."""
    models = []
    for m in doc["models"]:
        parts = []
        for k, v in m.items():
            if k in ("metrics", "notes"):
                inner = ",\n".join("    " + json.dumps(x) for x in v)
                parts.append(f'   "{k}": [\n{inner}\n   ]')
            else:
                parts.append(f"   {json.dumps(k)}: {json.dumps(v)}")
        models.append("  {\n" + ",\n".join(parts) + "\n  }")
    return '{\n "models": [\n' + ",\n".join(models) + "\n ]\n}\n"


def add(args: argparse.Namespace) -> dict:
    """Copy the files and write the card; returns the card. Raises ValueError before writing."""
    assets = Path(args.assets)
    catalogue_file = assets / "catalogue.json"
    doc = json.loads(catalogue_file.read_text())
    names = [m["name"] for m in doc["models"]]
    if args.name in names and not args.replace:
        raise ValueError(f"{args.name!r} is in the catalogue already (--replace to replace it)")
    weights = Path(args.weights)
    size = weights.stat().st_size
    if size > catalogue.MAX_BYTES:
        raise ValueError(
            f"{weights} is {size:,} bytes, over the catalogue's {catalogue.MAX_BYTES:,}"
        )
    metrics = json.loads(Path(args.card).read_text())
    lacking = [m.get("metric", "?") for m in metrics if m.get("se") is None or "n" not in m]
    if lacking:
        raise ValueError(f"metrics without a standard error or sample count: {lacking[:3]}")
    task, model = runs.from_pretrained(weights)  # refuses a damaged or mixed export
    stem = args.name.replace("-", "_")
    src_cfg, src_files = runs.config_path(weights), runs._files_dir(weights)
    dst = assets / f"{stem}_model.safetensors"
    shutil.copyfile(weights, dst)
    shutil.copyfile(src_cfg, runs.config_path(dst))
    if src_files.is_dir():
        shutil.rmtree(runs._files_dir(dst), ignore_errors=True)
        shutil.copytree(src_files, runs._files_dir(dst))
    commit = (
        args.commit
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    card = {
        "name": args.name,
        "title": args.title,
        "task": args.task or task.name,
        "file": dst.name,
        "data": args.data,
        "recipe": args.recipe,
        "commit": commit,
        "parameters": count_parameters(model),
        "training": args.training,
        "metrics": metrics,
        "measured_by": args.measured_by,
        "sha256": sha256_file(dst),
        "bytes": dst.stat().st_size,
        "notes": list(args.note),
    }
    models = [m for m in doc["models"] if m["name"] != args.name]
    at = names.index(args.name) if args.name in names else len(models)
    models.insert(at, card)
    catalogue_file.write_text(_json({"models": models}))
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("weights")
    p.add_argument("--card", required=True, help="the metrics rows (JSON list)")
    p.add_argument("--title", required=True)
    p.add_argument("--task", default=None, help="the card's task (default: the model's)")
    p.add_argument("--data", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument("--training", required=True)
    p.add_argument("--measured-by", default="")
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--commit", default=None)
    p.add_argument("--replace", action="store_true")
    p.add_argument("--assets", default=str(catalogue.ASSETS))
    args = p.parse_args(argv)
    try:
        card = add(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{card['name']}: {card['file']} ({card['bytes']:,} bytes, {card['parameters']:,} "
          "parameters) in the catalogue")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
