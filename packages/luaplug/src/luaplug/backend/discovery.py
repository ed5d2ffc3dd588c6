"""Backend discovery and selection, and the pluggy hook a backend implements.

Backends are pluggy plugins found through the ``luaplug`` entry-point group;
entry name = backend name. A backend distribution declares::

    [project.entry-points.luaplug]
    mybackend = "mybackend_pkg.plugin"

and that module (which must import cheaply: no dlopen, no Lua state) implements
:meth:`HookSpecs.luaplug_register_backends`, marked with :data:`hookimpl`. Selection order: the explicit argument, then
``LUAPLUG_BACKEND``, then the host's configuration, then the best available
backend (highest ``priority``). ``LUAPLUG_DISABLED_BACKENDS`` (comma
separated) blocks plugins by name before they are imported.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import pluggy

from ..errors import BackendNotFoundError, BackendUnavailableError

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "register_backends",
    "PROJECT_NAME",
    "BackendInfo",
    "BackendRegistry",
    "HookSpecs",
    "available_backends",
    "get_backend",
    "hookimpl",
    "hookspec",
    "installed_backends",
    "plugin_manager",
    "reset",
    "select_backend",
]

#: the entry-point group and the pluggy project name
PROJECT_NAME: Final = "luaplug"
hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)

ENV_BACKEND: Final = "LUAPLUG_BACKEND"
ENV_DISABLED: Final = "LUAPLUG_DISABLED_BACKENDS"


@dataclass
class BackendInfo:
    """One backend as its plugin describes it.

    :ivar engine: ``"module:attribute"`` of the :class:`~luaplug.backend.Engine`
        subclass, imported only when the backend is probed or used
    :ivar priority: higher wins when no backend is named
    :ivar install_hint: what to install when it is unavailable
    """

    name: str
    engine: str
    priority: int = 0
    description: str = ""
    install_hint: str = ""
    _cls: type[Engine] | None = field(default=None, repr=False)
    _reason: str | None = field(default=None, repr=False)
    _probed: bool = field(default=False, repr=False)

    def engine_class(self) -> type[Engine]:
        """Import the engine class.

        :raises BackendUnavailableError: with the reason and the install hint
        """
        self.probe()
        if self._cls is None:
            raise BackendUnavailableError(self.name, self._reason or "unknown reason", self.install_hint)
        return self._cls

    def probe(self) -> str | None:
        """``None`` when the backend can run here, else why not (cached)."""
        if not self._probed:
            self._probed = True
            module, _, attr = self.engine.partition(":")
            try:
                cls = getattr(importlib.import_module(module), attr)
                check: Callable[[], str | None] | None = getattr(cls, "unavailable_reason", None)
                reason = check() if check is not None else None
            except Exception as exc:  # any import-time failure makes it unavailable
                reason = f"{type(exc).__name__}: {exc}"
                cls = None
            if reason is None:
                self._cls = cls
            self._reason = reason
        return self._reason

    @property
    def available(self) -> bool:
        return self.probe() is None


class BackendRegistry:
    """Handed to :meth:`HookSpecs.luaplug_register_backends`."""

    def __init__(self) -> None:
        self.backends: dict[str, BackendInfo] = {}

    def add(self, info: BackendInfo) -> None:
        """Add a backend (a later one with the same name replaces it)."""
        self.backends[info.name] = info


class HookSpecs:
    """The hooks of the ``luaplug`` project."""

    @hookspec
    def luaplug_register_backends(self, register: BackendRegistry) -> None:
        """Describe this plugin's backends with ``register.add(BackendInfo(...))``.

        :param register: collects :class:`BackendInfo` objects
        """


_lock: Final = threading.Lock()
_pm: pluggy.PluginManager | None = None
_found: dict[str, BackendInfo] | None = None


def register_backends(*infos: BackendInfo) -> Callable[[BackendRegistry], None]:
    """The hook implementation adding ``infos``; a plugin module binds it to the hook's name:
    ``luaplug_register_backends = register_backends(BackendInfo(...))``."""

    @hookimpl
    def luaplug_register_backends(register: BackendRegistry) -> None:
        for info in infos:
            register.add(info)

    return luaplug_register_backends


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(ENV_DISABLED, "").split(",") if n.strip()}


# Entry points are read from ``sys.path``'s metadata directories here rather than through
# ``importlib.metadata``: importing that module (``email``, ``zipfile``, ``csv``...) costs more
# than the rest of a runtime's start. Invariant: ``_read_entry_points`` returns exactly what
# ``importlib.metadata.entry_points(group=group)`` would, as ``(name, value)`` in the same
# order, or ``None`` for any layout it does not model — then ``importlib.metadata`` answers.
# (One deliberate difference: a line without ``=`` is passed over, where importlib.metadata
# raises.) tests/test_entry_point_reader.py compares the two.
_METADATA_SUFFIXES: Final = (".dist-info", ".egg-info")


def _normalized(name: str) -> str:
    """A distribution name as ``importlib.metadata`` compares them: lower case, each run of
    ``-``, ``_`` and ``.`` one ``_``."""
    name = name.lower().replace("-", "_").replace(".", "_")
    while "__" in name:
        name = name.replace("__", "_")
    return name


def _metadata_dirs(entry: str) -> list[tuple[str, str]] | None:
    """``(normalized name, path)`` of the metadata directories of one ``sys.path`` entry, in
    listing order; ``None`` for an entry that is not a plain directory (a zip file, an egg)."""
    if not isinstance(entry, str) or os.path.basename(entry).lower().endswith(".egg"):
        return None
    try:
        children = os.listdir(entry or ".")
    except FileNotFoundError:
        return []
    except OSError:
        return None
    found: list[tuple[str, str]] = []
    for child in children:
        low = child.lower()
        if low.endswith(_METADATA_SUFFIXES):
            stem = low.rpartition(".")[0].partition("-")[0]
            if not stem or not child.endswith(_METADATA_SUFFIXES):
                return None  # importlib.metadata names these from their METADATA file
            found.append((_normalized(stem), os.path.join(entry, child)))
    return found


def _section(text: str, group: str) -> list[tuple[str, str]]:
    """The ``name = value`` lines of the ``[group]`` sections of an ``entry_points.txt``. A line
    without ``=`` is passed over (``importlib.metadata`` fails on the whole environment)."""
    found: list[tuple[str, str]] = []
    section: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section is not None:
            name, eq, value = line.partition("=")
            if eq and section == group:
                found.append((name.strip(), value.strip()))
    return found


def _read_entry_points(group: str) -> list[tuple[str, str]] | None:
    """``(name, value)`` of every entry point in ``group``: the first distribution of each
    normalized name along ``sys.path``; ``None`` when ``importlib.metadata`` must answer (a
    finder other than the path finder reports distributions, or a layout not modelled here)."""
    from importlib.machinery import PathFinder

    if any(f is not PathFinder and getattr(f, "find_distributions", None) for f in sys.meta_path):
        return None
    seen: set[str] = set()
    found: list[tuple[str, str]] = []
    for entry in sys.path:
        dirs = _metadata_dirs(entry)
        if dirs is None:
            return None
        for name, path in dirs:
            if name in seen:
                continue
            seen.add(name)
            try:
                with open(os.path.join(path, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                continue
            except (OSError, UnicodeDecodeError):
                return None
            found.extend(_section(text, group))
    return found


def _load_value(value: str) -> object:
    """The object an entry point's value names: ``module[:attr[.attr...]] [extras]``.

    :raises ValueError: the value is not of that form
    """
    module, colon, attrs = value.partition("[")[0].partition(":")
    module = module.strip()
    path = attrs.strip().split(".") if colon else []
    if not all(part.isidentifier() for part in [*module.split("."), *path]):
        raise ValueError(f"invalid entry point value {value!r}")
    obj: object = importlib.import_module(module)
    for attr in path:
        obj = getattr(obj, attr)
    return obj


def _entry_points(group: str) -> list[tuple[str, Callable[[], object]]]:
    """``(name, load)`` of every entry point in ``group``, in ``importlib.metadata``'s order."""
    read = _read_entry_points(group)
    if read is not None:
        return [(name, functools.partial(_load_value, value)) for name, value in read]
    from importlib.metadata import entry_points  # only for layouts the reader does not model

    return [(ep.name, ep.load) for ep in entry_points(group=group)]


def _load_entry_points(pm: pluggy.PluginManager, group: str) -> None:
    """Register the plugin of every entry point in ``group`` (the first distribution of a name
    only; the first entry point of a name wins; blocked names are never imported)."""
    for name, load in _entry_points(group):
        if pm.has_plugin(name) or pm.is_blocked(name):
            continue
        pm.register(load(), name=name)


def plugin_manager() -> pluggy.PluginManager:
    """The plugin manager, with entry points loaded (once)."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(PROJECT_NAME)
            pm.add_hookspecs(HookSpecs)
            for name in _disabled():
                pm.set_blocked(name)
            _load_entry_points(pm, PROJECT_NAME)
            pm.check_pending()
            _pm = pm
        return _pm


def reset() -> None:
    """Forget discovered backends (tests; after changing the environment)."""
    global _pm, _found
    with _lock:
        _pm = None
        _found = None


def installed_backends() -> dict[str, BackendInfo]:
    """Every installed, non-disabled backend by name (nothing is imported)."""
    global _found
    if _found is None:
        pm = plugin_manager()
        register = BackendRegistry()
        pm.hook.luaplug_register_backends(register=register)
        disabled = _disabled()
        _found = {n: b for n, b in register.backends.items() if n not in disabled}
    return _found


def available_backends() -> list[str]:
    """Names of the backends that can run here, best first."""
    found = installed_backends()
    return [b.name for b in sorted(found.values(), key=lambda b: (-b.priority, b.name)) if b.available]


def get_backend(name: str) -> BackendInfo:
    """The installed backend ``name``.

    :raises BackendNotFoundError: no such backend (the message lists installed ones)
    """
    found = installed_backends()
    if name not in found:
        blocked = name in _disabled()
        raise BackendNotFoundError(name, found, disabled_by=ENV_DISABLED if blocked else None)
    return found[name]


def select_backend(name: str | None = None, *, configured: str | None = None) -> BackendInfo:
    """Pick a backend: ``name``, then ``LUAPLUG_BACKEND``, then ``configured``,
    then the best available one.

    :raises BackendNotFoundError: a named backend is not installed
    :raises BackendUnavailableError: a named backend cannot run, or none can
    """
    chosen = name or os.environ.get(ENV_BACKEND) or configured
    if chosen:
        info = get_backend(chosen)
        info.engine_class()
        return info
    best = available_backends()
    if not best:
        found = installed_backends()
        none = "no backend is installed"
        if _disabled():
            none = f"no backend is enabled ({ENV_DISABLED} disables {', '.join(sorted(_disabled()))})"
        reasons = "; ".join(f"{b.name}: {b.probe()}" for b in found.values()) or none
        raise BackendUnavailableError("(any)", reasons, "install luaplug-lupa, or luaplug-cffi with libluajit-5.1-dev")
    return installed_backends()[best[0]]
