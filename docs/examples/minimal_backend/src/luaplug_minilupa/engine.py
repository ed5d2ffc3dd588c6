"""A luaplug engine over lupa's LuaJIT 2.1: one ``lupa.luajit21.LuaRuntime`` per bundle VM.

It declares no optional capability (no memory cap, no same-thread re-entry, no claim about
threads): luaplug's core refuses what needs one.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from luaplug.backend import (
    EngineState,
    FastCall,
    GuardedEngine,
    LuaError,
    LuaplugError,
    LuaSyntaxError,
    StateOptions,
    map_errors,
    prelude_code,
)

try:
    import lupa.luajit21 as lupa
except ImportError as exc:
    lupa = None
    _IMPORT_ERROR: str | None = f"lupa.luajit21 cannot be imported ({exc})"
else:
    _IMPORT_ERROR = None

# Every lupa exception leaves this module as luaplug's: a syntax error as LuaSyntaxError,
# any other Lua error as LuaError.
_errors = map_errors({lupa.LuaSyntaxError: LuaSyntaxError}, catch=(lupa.LuaError,)) if lupa else map_errors({})
# The prelude as stripped bytecode, compiled once per process: its frames then read the same
# in every Lua traceback a bundle's error carries, on every backend.
_prelude = prelude_code(
    lambda src: bytes(lupa.LuaRuntime(encoding=None).execute(b"return string.dump(assert(load(...)), true)", src))
)


class MiniState(EngineState):
    """One bundle VM: a fresh lupa runtime with the host prelude in it. Strings cross as bytes."""

    def __init__(self, options: StateOptions) -> None:
        super().__init__()  # the cell the prelude keeps (running thread, depth, ...)
        rt = lupa.LuaRuntime(encoding=None, register_eval=False, register_builtins=False)
        rt.globals().python = None  # no way back into Python from bundle code
        rt.globals().package.loaded.python = None
        with _errors:
            self._prelude: Any = rt.execute(b"return assert(load(..., '=luaplug_host', 'b'))()", _prelude())

    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        if self._prelude is None:
            raise LuaplugError("the bundle VM is closed")
        with _errors:
            fn = self._prelude[entry.encode()]
            if fn is None:
                raise LuaError(f"no prelude entry {entry!r}")
            result = fn(*(a.encode() if isinstance(a, str) else a for a in args))
        results = result if isinstance(result, tuple) else () if result is None else (result,)
        return tuple(r.decode("utf-8", "replace") if isinstance(r, bytes) else r for r in results)

    def dispatcher(self, cidx: int) -> FastCall:
        fn: FastCall | None = self._prelude.dispatcher(cidx)
        if fn is None:
            raise LuaplugError(f"no contract #{cidx} in this VM")
        return fn

    def close(self) -> None:
        prelude, self._prelude = self._prelude, None
        if prelude is not None and not self.active_on_this_thread():
            with contextlib.suppress(lupa.LuaError):  # closing never fails; the VM goes anyway
                prelude.shutdown()


class MiniEngine(GuardedEngine):
    """LuaJIT 2.1 through ``lupa.luajit21``."""

    name: ClassVar[str] = "minilupa"
    import_error = _IMPORT_ERROR
    state_class = MiniState

    def lua_version(self) -> str:
        return str(lupa.LuaRuntime().eval("jit.version")) if lupa is not None else ""
