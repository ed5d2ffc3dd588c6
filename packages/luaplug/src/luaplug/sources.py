"""Where a bundle's Lua source comes from (spec §10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["BundleSource", "BytesSource", "CodeSource", "PathSource"]


@dataclass(frozen=True)
class PathSource:
    """A bundle directory on disk: the entry file is read from it, and the
    directory goes first on ``package.path``."""

    path: Path
    kind: str = "path"


@dataclass(frozen=True)
class CodeSource:
    """In-memory Lua source text; no directory on ``package.path``, no hot reload."""

    code: str
    kind: str = "code"


@dataclass(frozen=True)
class BytesSource:
    """In-memory bytes that must be UTF-8 Lua source."""

    data: bytes
    kind: str = "bytes"


BundleSource = PathSource | CodeSource | BytesSource
