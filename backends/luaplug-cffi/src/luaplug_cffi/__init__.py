"""luaplug backend driving the system LuaJIT (``libluajit-5.1``) through cffi.

The compiled module ``luaplug_cffi._native`` is built at install time from
``lp_core.c``; :mod:`luaplug_cffi.plugin` is the cheap entry point.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
