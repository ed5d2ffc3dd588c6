"""Which lupa runs LuaJIT 2.1 here (``lupa.luajit21``, bundled by lupa 2.x wheels, or lupa's default
runtime when lupa is built against LuaJIT 2.1, as Debian's is)."""

from __future__ import annotations

from typing import Any

__all__ = ["decoded", "jit_version", "select_lupa"]


def decoded(value: Any) -> Any:
    """A value lupa hands over (strings as bytes: encoding=None) as Python's (text decoded)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def jit_version(module: Any) -> str:
    """``jit.version`` of a fresh runtime of ``module`` (``_VERSION`` when it is not LuaJIT)."""
    return str(decoded(module.LuaRuntime(encoding=None).eval(b"jit and jit.version or _VERSION")))


def select_lupa() -> tuple[Any, str, str | None]:
    """``(module, its name, None)`` for lupa's LuaJIT 2.1 runtime, or ``(None, "", why not)``."""
    try:
        import lupa.luajit21 as luajit21
    except ImportError as exc:
        missing = f"lupa.luajit21 cannot be imported ({exc})"
    else:
        return luajit21, "lupa.luajit21", None
    try:
        import lupa

        version = jit_version(lupa)
    except ImportError as exc:
        return None, "", f"{missing}, nor lupa ({exc})"
    except Exception as exc:  # a lupa that cannot make a runtime at all
        return None, "", f"{missing}, and lupa.LuaRuntime fails: {exc}"
    if version.startswith("LuaJIT 2.1"):
        return lupa, "lupa.LuaRuntime", None
    return None, "", f"{missing}, and lupa {getattr(lupa, '__version__', '?')} runs {version}, not LuaJIT 2.1"
