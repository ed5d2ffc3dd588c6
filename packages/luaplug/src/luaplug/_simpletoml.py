"""A fast reader for the simple TOML most manifests are written in.

``tomllib`` is pure Python and costs a good part of a bundle load. Manifests are
nearly always flat ``key = value`` lines and a ``[table]`` or two of the same, so
:func:`loads` reads exactly that subset and answers ``None`` for anything else
(escapes, dotted keys, inline tables, multi-line values, floats, dates, arrays of
tables, a repeated key or table...), in which case the caller uses ``tomllib``.

Invariant: whatever it accepts, it reads exactly as ``tomllib`` does (the test
suite checks both on every bundle and on generated manifests).
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["loads"]

_BARE: Final = r"[A-Za-z0-9_-]+"
# A basic string without escapes, quotes or control characters (tab excepted).
_STR: Final = r'"[^"\\\x00-\x08\x0a-\x1f\x7f]*"'
_INT: Final = r"[+-]?(?:0|[1-9][0-9]*)"
_SCALAR: Final = rf"(?:{_STR}|{_INT}|true|false)"
_COMMENT: Final = r"(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"
_TABLE: Final = re.compile(rf"\[[ \t]*({_BARE})[ \t]*\][ \t]*{_COMMENT}")
_PAIR: Final = re.compile(
    rf"({_BARE}|{_STR})[ \t]*=[ \t]*({_SCALAR}|\[[ \t]*(?:{_SCALAR}[ \t]*(?:,[ \t]*{_SCALAR}[ \t]*)*,?[ \t]*)?\])"
    rf"[ \t]*{_COMMENT}"
)
_ITEM: Final = re.compile(_SCALAR)


def _scalar(token: str) -> Any:
    if token[0] == '"':
        return token[1:-1]
    if token == "true":
        return True
    if token == "false":
        return False
    return int(token)


def loads(text: str) -> dict[str, Any] | None:
    """``text`` as ``tomllib.loads`` reads it, or ``None`` when it is not in the simple subset."""
    root: dict[str, Any] = {}
    table = root
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        line = line.strip(" \t")
        if not line or line[0] == "#":
            if "\r" in line or any(ch < " " and ch != "\t" for ch in line):
                return None
            continue
        m = _TABLE.fullmatch(line)
        if m is not None:
            name = m.group(1)
            if name in root:
                return None
            table = root[name] = {}
            continue
        m = _PAIR.fullmatch(line)
        if m is None:
            return None
        key, value = m.group(1), m.group(2)
        if key[0] == '"':
            key = key[1:-1]
        if key in table:
            return None
        if value[0] == "[":
            items = [_scalar(t) for t in _ITEM.findall(value[1:-1])]
            if len({type(x) for x in items}) > 1:
                return None  # mixed arrays: leave them to tomllib
            table[key] = items
        else:
            table[key] = _scalar(value)
    return root
