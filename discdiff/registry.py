"""Named things: processes, schedules, samplers, denoisers and tasks, found by name.

Every place that turns a name into an object (a task config's ``process="absorbing"``, the
CLI's ``--sampler caching``, a run's saved ``{"type": "transformer"}``) asks a
:class:`Registry`; nothing switches on strings. Registering is all it takes for a new thing to
reach every task, the command line (its ``--help`` lists the registered names) and the
conformance tests in ``tests/conformance``.

Names are case-sensitive; ``_`` and ``-`` are the same (``first_hitting`` is
``first-hitting``). A registry also resolves an import path ``"package.module:Name"``, so a
run can name a class that was never registered (a user's own denoiser).

Plug-ins: a package that declares an entry point in the group ``discdiff.plugins``::

    [project.entry-points."discdiff.plugins"]
    my_plugin = "my_package.discdiff_plugin"        # a module, or "module:function"

is imported the first time any registry is read (a function entry is then called with no
arguments); its ``register_*`` calls run at that point. A plug-in that fails to import is
reported once as a warning naming it, never silently dropped and never fatal.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = [
    "Registry",
    "PLUGIN_GROUP",
    "load_plugins",
    "import_path",
    "import_object",
]

T = TypeVar("T")

PLUGIN_GROUP = "discdiff.plugins"
_plugins_loaded = False
_plugin_errors: dict[str, str] = {}


def _normal(name: str) -> str:
    return name.replace("_", "-")


def import_path(obj: Any) -> str:
    """``"module:QualName"`` of a class or function (what :func:`import_object` reads back)."""
    return f"{obj.__module__}:{obj.__qualname__}"


def import_object(path: str) -> Any:
    """The object named by ``"package.module:Name"`` (dots after the colon walk attributes)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:Name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} (from {path!r}): {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_plugins(force: bool = False) -> dict[str, str]:
    """Import every ``discdiff.plugins`` entry point once; returns {entry: error} of failures."""
    global _plugins_loaded
    if _plugins_loaded and not force:
        return dict(_plugin_errors)
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
        except Exception as err:  # a broken plug-in must not take the library down
            msg = f"{type(err).__name__}: {err}"
            if _plugin_errors.get(ep.name) != msg:
                warnings.warn(
                    f"discdiff plug-in {ep.name!r} ({ep.value}) failed to load: {msg}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            _plugin_errors[ep.name] = msg
    return dict(_plugin_errors)


def import_package_modules(package: str, path: Any) -> list[str]:
    """Import every module of a package folder that is not imported yet (names without a
    leading underscore): a new file in ``discdiff/samplers/`` (or processes/, nn/, tasks/) that
    registers what it defines reaches every command with no edit of the package's
    ``__init__.py``. A module that fails to import is reported as a RuntimeWarning naming it,
    and the others still load. Returns the modules imported now."""
    import pkgutil
    import sys

    done = []
    for info in pkgutil.iter_modules(path):
        name = f"{package}.{info.name}"
        if info.name.startswith("_") or name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as err:  # a broken drop-in must not take the library down
            warnings.warn(
                f"{name} failed to import: {type(err).__name__}: {err}", RuntimeWarning, 2
            )
    return done


class Registry(Generic[T]):
    """A name -> object table for one kind of thing (``kind`` is used in messages).

    ``register(name, obj)`` (or ``@register(name)``) adds an entry; registering the same
    object twice under a name is a no-op, a different one is an error unless ``replace=True``.
    ``get(name)`` returns it (an import path is imported); ``names()`` lists what is there.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}
        self._names: dict[str, str] = {}  # normalised key -> the spelling it was registered with

    def register(
        self, name: str, obj: T | None = None, *, replace: bool = False, doc: str | None = None
    ) -> Any:
        """Add ``obj`` under ``name``; without ``obj``, a decorator that registers its target."""
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(
                f"{self.kind} name must be a non-empty string without ':', got {name!r}"
            )
        if obj is None:

            def deco(target: T) -> T:
                self.register(name, target, replace=replace, doc=doc)
                return target

            return deco
        key = _normal(name)
        existing = self._items.get(key)
        if existing is not None and _same_definition(existing, obj):
            replace = True  # the same class or function defined again (a module re-imported)
        if existing is not None and existing is not obj and existing != obj and not replace:
            raise ValueError(
                f"{self.kind} {name!r} is already registered to {_describe(existing)}; "
                "pass replace=True to override it"
            )
        self._items[key] = obj
        self._names[key] = name
        target = obj[0] if isinstance(obj, tuple) and obj else obj
        text = doc if doc is not None else (getattr(target, "__doc__", None) or "")
        self._docs[key] = text.strip().splitlines()[0] if text.strip() else ""
        return obj

    def unregister(self, name: str) -> None:
        """Remove an entry (tests and plug-in reloads)."""
        self._items.pop(_normal(name), None)
        self._docs.pop(_normal(name), None)
        self._names.pop(_normal(name), None)

    def get(self, name: str) -> T:
        """The object registered as ``name``, or the one an import path names."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if ":" in name:
            return import_object(name)
        key = _normal(name)
        if key not in self._items:
            load_plugins()
        if key not in self._items:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or 'none'}"
            )
        return self._items[key]

    def name_of(self, obj: Any) -> str | None:
        """The registered name of ``obj`` (identity or equality), or None."""
        for key, value in self._items.items():
            if value is obj or value == obj:
                return self._names[key]
        return None

    def names(self) -> list[str]:
        """Registered names, sorted (plug-ins included)."""
        load_plugins()
        return sorted(self._names[k] for k in self._items)

    def describe(self) -> dict[str, str]:
        """name -> first line of its docstring (for ``--help`` texts)."""
        return {k: self._docs.get(_normal(k), "") for k in self.names()}

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        load_plugins()
        return _normal(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"


def _same_definition(a: Any, b: Any) -> bool:
    a = a[0] if isinstance(a, tuple) and a else a
    b = b[0] if isinstance(b, tuple) and b else b
    key = ("__module__", "__qualname__")
    return all(hasattr(x, k) for x in (a, b) for k in key) and all(
        getattr(a, k) == getattr(b, k) for k in key
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, tuple) and obj:
        obj = obj[0]
    return getattr(obj, "__qualname__", None) or repr(obj)


def names_help(registry: Registry[Any], sep: str = " | ") -> str:
    """The registered names joined for a help text."""
    return sep.join(registry.names())


Factory = Callable[..., Any]
