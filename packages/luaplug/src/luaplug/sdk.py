"""The guest SDK Lua modules luaplug ships (``polyplug_guest``, ``polyplug_abi``, ``abi``)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["SDK_MODULES", "sdk_path"]

#: Module names a bundle may ``require`` without vendoring them.
SDK_MODULES = ("polyplug_guest", "polyplug_abi", "abi")


@lru_cache(maxsize=1)
def sdk_path() -> Path:
    """Directory holding the SDK modules as ``<name>.lua`` files.

    luaplug puts it on every bundle's ``package.path`` after the bundle's own
    directory; bundle authors and the reference runtime can use it as well.
    """
    from pathlib import Path  # imported by the first load, not with luaplug

    return Path(__file__).resolve().parent / "sdk"
