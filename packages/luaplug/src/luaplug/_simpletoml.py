"""A fast reader for the simple TOML most manifests are written in.

Every load reads a manifest, and ``tomllib`` is pure Python. Manifests are
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
_ARRAY: Final = rf"\[[ \t]*(?:{_SCALAR}[ \t]*(?:,[ \t]*{_SCALAR}[ \t]*)*,?[ \t]*)?\]"
# Every line of a text: a [table] header, a key = value pair, or nothing, then an
# optional comment (an optional CR: CRLF line ends); a line that is none of these is
# captured whole by the last group. Groups: table name, key, value, bad line.
_LINES: Final = re.compile(
    rf"^(?:[ \t]*(?:\[[ \t]*({_BARE})[ \t]*\]|({_BARE}|{_STR})[ \t]*=[ \t]*({_SCALAR}|{_ARRAY}))?"
    rf"[ \t]*{_COMMENT}\r?|(.+))$",
    re.MULTILINE,
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
    # findall: one match per line (every alternative runs from ^ to $), in one call.
    for name, key, value, bad in _LINES.findall(text):
        if bad:
            return None
        if name:
            if name in root:
                return None
            table = root[name] = {}
        elif key:
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
