"""luaplug backend driving the system LuaJIT (``libluajit-5.1``) through cffi.

The compiled module ``luaplug_cffi._native`` is built at install time from
``lp_core.c``; :mod:`luaplug_cffi.plugin` is the cheap entry point.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
