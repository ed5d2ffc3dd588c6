"""The C entry needs setup.py for ``ext_modules``; everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import Extension, setup


def entry_include() -> list[str]:
    """Where luaplug_entry.h is: the installed luaplug's, else this checkout's core."""
    try:
        from luaplug.backend import get_include
    except ImportError:
        core = Path(__file__).resolve().parent.parent.parent / "packages/luaplug/src/luaplug/backend"
        return [str(core)] if (core / "luaplug_entry.h").is_file() else []
    return [get_include()]


# Optional: without a C compiler (or without luaplug at build time) the wheel still works, and
# the engine serves calls through the core's Python path (see luaplug_lupa.engine).
setup(
    ext_modules=[
        Extension("luaplug_lupa._entry", ["src/luaplug_lupa/_entry.c"], include_dirs=entry_include(), optional=True)
    ]
)
