"""Host configuration: ``[tool.luaplug]`` in ``pyproject.toml``, or a ``luaplug.toml``.

Precedence for every setting, highest first:

1. the explicit argument (``Runtime("cffi", hot_reload=True)``, ``luaplug --backend``);
2. the environment (``LUAPLUG_BACKEND``, ``LUAPLUG_HOT_RELOAD``);
3. the configuration file;
4. the default (the best available backend; no hot reload).

The file is the one passed explicitly (``Runtime(config=path)``, ``luaplug --config``), else
the first found walking up from the *current directory* (so the same script run from another
directory may find another file, or none; ``Runtime(config=False)`` reads no file at all): in
each directory a ``luaplug.toml`` (settings at its top level) wins over a ``pyproject.toml``
that has a ``[tool.luaplug]`` table; a ``pyproject.toml`` without one is passed over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final, Literal

from .errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["CONFIG_FILE", "ENV_HOT_RELOAD", "Config", "find_config", "load_config", "resolve_config"]

#: The dedicated configuration file's name.
CONFIG_FILE: Final = "luaplug.toml"
#: Overrides ``hot_reload`` (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``).
ENV_HOT_RELOAD: Final = "LUAPLUG_HOT_RELOAD"

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Config:
    """Runtime settings from a configuration file (``None``: not set there).

    :ivar backend: the backend to use when neither the argument nor ``LUAPLUG_BACKEND`` names one
    :ivar hot_reload: allow :meth:`Runtime.reload <luaplug.Runtime.reload>`
    :ivar path: the file the settings came from (``None``: no file)
    """

    backend: str | None = None
    hot_reload: bool | None = None
    path: Path | None = None

    def hot_reload_setting(self, explicit: bool | None) -> bool:
        """``hot_reload`` after precedence: ``explicit``, ``LUAPLUG_HOT_RELOAD``, the file, ``False``.

        :raises ConfigError: the variable has an unknown value
        """
        if explicit is not None:
            return explicit
        raw = os.environ.get(ENV_HOT_RELOAD)
        if raw is not None:
            value = raw.strip().lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            raise ConfigError(f"expected 1/true/yes/on or 0/false/no/off, not {raw!r}", path=ENV_HOT_RELOAD)
        return bool(self.hot_reload)


_KEYS: Final = {f.name for f in fields(Config)} - {"path"}


def _settings(table: Mapping[str, Any], path: Path, prefix: str) -> Config:
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"unknown setting (known: {', '.join(sorted(_KEYS))})", path=str(path), key=prefix + key)
    backend = table.get("backend")
    if backend is not None and (not isinstance(backend, str) or not backend):
        raise ConfigError(f"must be a backend name, not {backend!r}", path=str(path), key=prefix + "backend")
    hot = table.get("hot_reload")
    if hot is not None and not isinstance(hot, bool):
        raise ConfigError(f"must be true or false, not {hot!r}", path=str(path), key=prefix + "hot_reload")
    return Config(backend=backend, hot_reload=hot, path=path)


def _read_toml(path: Path) -> dict[str, Any]:
    from .manifest import toml_reader

    toml = toml_reader()
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = toml.load(f)
            return data
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(path)) from None
    except RecursionError:
        raise ConfigError("not valid TOML: values nested too deeply", path=str(path)) from None


def _tool_table(data: Mapping[str, Any], path: Path) -> Mapping[str, Any] | None:
    tool = data.get("tool")
    table = tool.get("luaplug") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError("must be a table", path=str(path), key="tool.luaplug")
    return table


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read the settings of one file: ``[tool.luaplug]`` of a ``pyproject.toml``, else the
    top level of any other file (``luaplug.toml``).

    :raises ConfigError: unreadable, not TOML, an unknown key or a wrong value type
    """
    from pathlib import Path

    p = Path(path)
    data = _read_toml(p)
    if p.name == "pyproject.toml":
        return _settings(_tool_table(data, p) or {}, p, "tool.luaplug.")
    return _settings(data, p, "")


def _may_configure_luaplug(data: bytes) -> bool:
    """Whether the TOML document ``data`` may have a ``tool.luaplug`` key; ``False`` is certain.

    Lets discovery pass over other projects' ``pyproject.toml`` files without parsing
    them. In valid TOML a key spells ``luaplug`` in a table header, before the first
    ``=`` of a key/value line, or inside an inline table (``{``); a line that has the
    word only after its first ``=`` and no ``{``, or only in a comment line, holds it as
    a value or a comment. An escape (``\\u``) could spell the key in quotes, so a file
    with one is left to the TOML parser, as is one that has the word but is not UTF-8.
    Invalid TOML is passed over either way.
    """
    if b"luaplug" not in data:
        return b"\\u" in data or b"\\U" in data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    if "\\u" in text or "\\U" in text:
        return True
    for line in text.split("\n"):
        at = line.find("luaplug")
        if at < 0 or line.lstrip().startswith("#"):
            continue
        eq = line.find("=")
        if eq < 0 or eq > at or "{" in line:
            return True
    return False


def find_config(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The configuration file that applies to ``start`` (default: the current directory), or ``None``."""
    # os.path rather than pathlib until a file is found: this runs for every runtime.
    d = os.path.realpath(os.fspath(start) if start is not None else os.getcwd())
    while True:
        candidate = os.path.join(d, CONFIG_FILE)
        if os.path.isfile(candidate):
            from pathlib import Path

            return Path(candidate)
        pyproject = os.path.join(d, "pyproject.toml")
        if os.path.isfile(pyproject) and _pyproject_configures(pyproject):
            from pathlib import Path

            return Path(pyproject)
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def _pyproject_configures(path: str) -> bool:
    """Whether the ``pyproject.toml`` at ``path`` has a ``[tool.luaplug]`` table.

    Someone else's unreadable or broken ``pyproject.toml`` says nothing about luaplug: ``False``.

    :raises ConfigError: ``tool.luaplug`` is not a table
    """
    try:
        with open(path, "rb") as f:
            if not _may_configure_luaplug(f.read()):
                return False
    except OSError:
        return False
    from pathlib import Path

    p = Path(path)
    try:
        data = _read_toml(p)
    except ConfigError:
        return False
    return _tool_table(data, p) is not None


def resolve_config(config: Config | str | os.PathLike[str] | Literal[False] | None = None) -> Config:
    """The settings a runtime uses: ``config`` itself, the file it names, the discovered one
    (``None``), or no file at all (``False``: the environment and the defaults only).

    :raises ConfigError: the file is invalid
    """
    if config is False:
        return Config()
    if isinstance(config, Config):
        return config
    path = config if config is not None else find_config()
    return Config() if path is None else load_config(path)
