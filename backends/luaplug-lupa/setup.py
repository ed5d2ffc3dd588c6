"""The C entry needs setup.py for ``ext_modules``; everything else is in pyproject.toml."""

from setuptools import Extension, setup

# Optional: without a C compiler the wheel still works, and the engine serves
# calls through the core's Python closures (see luaplug_lupa.engine).
setup(ext_modules=[Extension("luaplug_lupa._entry", ["src/luaplug_lupa/_entry.c"], optional=True)])
