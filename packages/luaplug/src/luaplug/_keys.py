"""Unknown keys in authored files (``manifest.toml``, ``api.toml``).

Both formats ignore keys they do not know, as polyplug does; a misspelt key would then
change meaning silently (``retrun`` makes a function void). Every unknown key is reported
once per parse as a WARNING naming the file, the key and the nearest known key;
``luaplug check --strict`` turns the reports into a failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["AUTHORING", "close_matches", "unknown_keys"]

#: ``extra`` of every authoring warning record: ``luaplug check`` prints these itself.
AUTHORING: Final = {"luaplug_authoring": True}


def close_matches(word: str, candidates: Iterable[str]) -> list[str]:
    """The one candidate closest to ``word``, if any is close (only a mistake needs difflib)."""
    import difflib

    return difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)


def unknown_keys(table: Mapping[str, Any], known: Iterable[str], where: str, path: str | None) -> list[str]:
    """One message per key of ``table`` not in ``known``.

    :param where: the dotted key of ``table`` itself ("" for the top level)
    """
    names = tuple(known)
    out = []
    for key in table:
        if key in names:
            continue
        full = f"{where}.{key}" if where else key
        close = close_matches(key, names)
        hint = f" (did you mean `{close[0]}`?)" if close else f" (known keys: {', '.join(sorted(names))})"
        out.append(f"{path or '<api>'}: unknown key `{full}`{hint}")
    return out
