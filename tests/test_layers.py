"""The arrows of the architecture, read from the imports (README, "Architecture"): nothing
imports upwards, and no module but the package's own __init__ imports the package root."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "discdiff"

#: package -> the discdiff packages it must never import (lower layers never reach up)
FORBIDDEN = {
    "schedules": {"processes", "losses", "samplers", "nn", "training", "tasks", "chem", "cli"},
    "processes": {"losses", "samplers", "nn", "training", "tasks", "chem", "cli", "objectives"},
    "losses": {"samplers", "training", "tasks", "chem", "cli", "objectives"},
    "objectives": {"samplers", "training", "tasks", "chem", "cli"},
    "samplers": {"training", "tasks", "cli", "objectives"},
    "nn": {"losses", "samplers", "training", "tasks", "chem", "cli", "objectives"},
    "training": {"samplers", "tasks", "chem", "cli", "nn", "objectives"},
    "chem": {"tasks", "cli", "training", "samplers", "datasets", "losses", "nn", "objectives"},
    "constraints": {"processes", "losses", "samplers", "nn", "training", "tasks", "chem", "cli"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            if node.module == "discdiff":
                out += [f"discdiff.{a.name}" for a in node.names]
    return out


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def test_no_module_imports_upwards_or_the_package_root():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "__init__.py":
            continue
        pkg = _package(path)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "discdiff":
                continue
            if len(parts) == 1:
                wrong.append(f"{path.relative_to(ROOT)} imports the package root")
            elif parts[1] in FORBIDDEN.get(pkg, set()):
                wrong.append(f"{path.relative_to(ROOT)} ({pkg}) imports {name}")
    assert not wrong, "\n".join(wrong)


#: what the command line may not import: it reaches training, samplers, denoisers and data
#: through the tasks (the spine) and presents with files, chem's writers and the catalogue
CLI_FORBIDDEN = {
    "samplers", "training", "nn", "losses", "processes", "schedules", "objectives", "datasets",
    "constraints",
}  # fmt: skip


def test_the_command_line_imports_tasks_and_presentation_only():
    cli = ROOT.parent / "cli"
    wrong = []
    for path in sorted(cli.rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "discdiff" and len(parts) > 1 and parts[1] in CLI_FORBIDDEN:
                wrong.append(f"cli/{path.relative_to(cli)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages by name (the cli/ and datasets/ folders install under
    discdiff): a folder with an __init__.py missing there would be left out of a wheel, and a
    non-editable install would fail to import it."""
    import tomllib

    top = ROOT.parent
    setup = tomllib.loads((top / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    dirs = {name: top / folder for name, folder in setup["package-dir"].items()}
    found = set()
    for name, folder in dirs.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            if "build" in rel or any(p.startswith((".", "_")) for p in rel):
                continue
            found.add(".".join((name, *rel)))
    assert found - listed == set(), f"package folders not in pyproject.toml: {found - listed}"
