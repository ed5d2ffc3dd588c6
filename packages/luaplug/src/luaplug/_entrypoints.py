"""Entry points of one group, read from the metadata directories on ``sys.path``.

``importlib.metadata`` costs more to import than the rest of luaplug's start-up (it
pulls ``email``, ``zipfile``, ``csv``...), only to read a few ``entry_points.txt``
files. :func:`entry_points` reads them directly, with the same answer as
``importlib.metadata.entry_points(group=...)`` for the common layouts: plain
directories on ``sys.path`` holding ``*.dist-info`` / ``*.egg-info`` metadata
(installed wheels, editable installs, ``setup.py develop``).

Invariant: the result is either exactly what ``importlib.metadata`` would give,
in the same order, or ``None`` ("ask ``importlib.metadata``"). ``None`` is the
answer for anything this reader does not model: a zip file or ``*.egg`` on
``sys.path``, a non-``str`` path entry, another finder that reports
distributions, an ``entry_points.txt`` it cannot decode or parse.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import Final, final

__all__ = ["EntryPoint", "entry_points"]

_METADATA_SUFFIXES: Final = (".dist-info", ".egg-info")
# The errors importlib.metadata's PathDistribution.read_text treats as "no such file".
_ABSENT: Final = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


@final
class EntryPoint:
    """One ``name = value`` line of an ``entry_points.txt`` section."""

    __slots__ = ("group", "name", "value")

    def __init__(self, name: str, value: str, group: str) -> None:
        self.name = name
        self.value = value
        self.group = group

    def load(self) -> object:
        """Import the module ``value`` names and return it, or the attribute it names.

        ``value`` is ``module[:attr[.attr...]]``, then optional ``[extras]`` (ignored): a
        well-formed value loads as with ``importlib.metadata.EntryPoint.load``. (String
        operations: compiling the regular expression that one uses costs ~0.2 ms.)

        :raises ValueError: ``value`` is not of that form
        """
        module, colon, attrs = self.value.partition("[")[0].partition(":")
        path = attrs.strip().split(".") if colon else []
        module = module.strip()
        if not all(part.isidentifier() for part in [*module.split("."), *path]):
            raise ValueError(f"entry point {self.name!r} has an invalid value {self.value!r}")
        obj: object = import_module(module)
        for attr in path:
            obj = getattr(obj, attr)
        return obj

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"


def _normalize(name: str) -> str:
    """``importlib.metadata.Prepared.normalize`` (PEP 503, then dashes as underscores):
    lower case, every run of ``-``, ``_`` and ``.`` one ``_``."""
    name = name.lower().replace("-", "_").replace(".", "_")
    while "__" in name:
        name = name.replace("__", "_")
    return name


def _only_path_finder() -> bool:
    """Whether ``sys.path`` is the only place distributions come from (no other finder reports any)."""
    from importlib.machinery import PathFinder

    return all(f is PathFinder or getattr(f, "find_distributions", None) is None for f in sys.meta_path)


def _metadata_dirs(entry: str) -> list[tuple[str, str]] | None:
    """``(normalized name, path)`` of the metadata directories in ``entry``, in
    ``importlib.metadata``'s order (names in order of first appearance, each name's
    directories in listing order); ``None`` when ``entry`` is not a plain directory."""
    if os.path.basename(entry).lower().endswith(".egg"):
        return None  # EGG-INFO inside: its name comes from PKG-INFO
    try:
        children = os.listdir(entry or ".")
    except FileNotFoundError:
        return []
    except OSError:
        return None  # a zip file, or unreadable: importlib.metadata tries harder
    by_name: dict[str, list[str]] = {}
    for child in children:
        low = child.lower()
        if low.endswith(_METADATA_SUFFIXES):
            stem = low.rpartition(".")[0].partition("-")[0]
            if not stem:
                return None  # importlib.metadata names such a distribution from its METADATA
            by_name.setdefault(_normalize(stem), []).append(os.path.join(entry, child))
    return [(name, path) for name, paths in by_name.items() for path in paths]


def _parse(text: str, group: str) -> list[EntryPoint] | None:
    """The ``group`` section(s) of an ``entry_points.txt``, as ``importlib.metadata`` reads it."""
    found: list[EntryPoint] = []
    section: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is None:
            continue
        name, eq, value = line.partition("=")
        if not eq:
            return None  # importlib.metadata fails on such a line: let it say so
        if section == group:
            found.append(EntryPoint(name.strip(), value.strip(), group))
    return found


def _read(path: str) -> str | None:
    try:
        with open(os.path.join(path, "entry_points.txt"), encoding="utf-8") as f:
            return f.read()
    except _ABSENT:
        return None


def entry_points(group: str) -> list[EntryPoint] | None:
    """The entry points of ``group`` of every distribution on ``sys.path`` (the first
    distribution of each name only), or ``None`` when ``importlib.metadata`` must answer.
    """
    if not _only_path_finder():
        return None
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in sys.path:
        if not isinstance(entry, str):
            return None
        dirs = _metadata_dirs(entry)
        if dirs is None:
            return None
        for name, path in dirs:
            if name in seen:
                continue  # shadowed by an earlier distribution of that name
            seen.add(name)
            try:
                text = _read(path)
            except (OSError, UnicodeDecodeError):
                return None
            eps = _parse(text, group) if text is not None else []
            if eps is None:
                return None
            found.extend(eps)
    return found
