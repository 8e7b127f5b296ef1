"""Fused CPU kernels in C (the uniform rate KL, the score entropy), built on first use with the
system's C compiler and cached on disk.

Eager torch runs a loss as a chain of whole-tensor passes; where a loss needs a transcendental
per class (the uniform rate KL's log1p), that chain costs 2-3x a cross-entropy on a CPU. A
kernel that does every pass of a row while the row sits in cache costs about one. The kernels
are optional: where no compiler is found, the platform is not x86-64 Linux (libmvec's vector
exp), or ``DISCDIFF_NATIVE=0`` is set, :func:`library` returns None, says why once (a
warning) and callers keep their torch path, which computes the same values.

The shared library is keyed by the source, the flags, the compiler's version and the CPU's
feature flags (it is built with ``-march=native``), written to a temporary file and renamed into
``$DISCDIFF_CACHE`` (default ``~/.cache/discdiff``)``/native``, so concurrent first uses never see a
half-written file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from discdiff.cache import cache_root

__all__ = ["library", "reason", "cache_dir"]

_SOURCES = [Path(__file__).with_name(n) for n in ("uniform_kl.c", "score_entropy.c")]
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC"]
_LIBS = ["-lmvec", "-lm"]
_state: dict[str, object] = {}


def cache_dir() -> Path:
    """Where built kernels live: ``$DISCDIFF_CACHE/native``, by default ``~/.cache/discdiff/native``."""
    return cache_root() / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _writable(d: Path) -> Path:
    """d, created; where it cannot be written (a read-only home), a per-user temporary one."""
    for cand in (d, Path(tempfile.gettempdir()) / f"discdiff-{os.getuid()}" / "native"):
        try:
            cand.mkdir(parents=True, exist_ok=True)
            if os.access(cand, os.W_OK):
                return cand
        except OSError:
            continue
    raise RuntimeError(f"cannot create the kernel cache {d} (nor one under the temp directory)")


def _build() -> ctypes.CDLL:
    """Compile (or find the cached build of) the kernel library; raises RuntimeError with the
    reason when it cannot."""
    if os.environ.get("DISCDIFF_NATIVE", "1").strip() in ("0", "false", "no", "off"):
        raise RuntimeError("disabled by DISCDIFF_NATIVE=0")
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        raise RuntimeError(
            f"built for x86-64 Linux only (this is {sys.platform} {platform.machine()})"
        )
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc or not shutil.which(cc):
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(f"the C compiler {cc} does not run: {err}") from None
    src = b"\0".join(p.read_bytes() for p in _SOURCES)
    key = hashlib.sha256(
        b"\0".join(
            [src, " ".join(_FLAGS + _LIBS).encode(), version.encode(), _cpu_flags().encode()]
        )
    ).hexdigest()[:16]
    out_dir = _writable(cache_dir())
    target = out_dir / f"kernels-{key}.so"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".build-", suffix=".so")
        os.close(fd)
        try:
            proc = subprocess.run(
                [cc, *_FLAGS, *map(str, _SOURCES), "-o", tmp, *_LIBS],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if proc.returncode != 0:
                msg = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
                raise RuntimeError(f"{cc} failed to build the kernels: {msg}")
            os.replace(tmp, target)
        except (OSError, subprocess.SubprocessError) as err:
            raise RuntimeError(f"building the kernels failed: {err}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    c_int = ctypes.c_int
    lib.uniform_rate_kl.argtypes = [p, p, p, p, p, p, p, i64, p, p, p, i64, i64, c_int, c_int]
    lib.uniform_rate_kl.restype = i64
    lib.log1p_pos_array.argtypes = [p, p, i64]
    lib.log1p_pos_array.restype = None
    lib.score_entropy_rows.argtypes = [p, p, p, p, p, p, p, p, c_int, ctypes.c_float, p, p, p]
    lib.score_entropy_rows.argtypes += [i64, i64, c_int]
    lib.score_entropy_rows.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The built kernel library, or None (with one warning per process saying why)."""
    if "lib" not in _state:
        try:
            _state["lib"], _state["reason"] = _build(), None
        except RuntimeError as err:
            _state["lib"], _state["reason"] = None, str(err)
            if "DISCDIFF_NATIVE=0" not in str(err):
                warnings.warn(
                    f"discdiff: fused CPU kernels unavailable ({err}); using the torch path",
                    RuntimeWarning, stacklevel=2,
                )  # fmt: skip
    return _state["lib"]  # type: ignore[return-value]


def reason() -> str | None:
    """Why :func:`library` returned None (None when it is built)."""
    library()
    return _state["reason"]  # type: ignore[return-value]


def reset() -> None:
    """Forget the loaded library and its reason (tests; a changed environment)."""
    _state.clear()
