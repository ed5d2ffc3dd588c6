"""luaplug backend on lupa's bundled LuaJIT (``lupa.luajit21``).

Import :mod:`luaplug_lupa.engine` for the engine; this package's ``plugin``
module is the cheap entry point luaplug discovers.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
