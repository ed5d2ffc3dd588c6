"""A luaplug engine over lupa's LuaJIT 2.1: one ``lupa.luajit21.LuaRuntime`` per bundle VM.

It declares no optional capability: no memory cap, no same-thread re-entry, no claim about
threads. luaplug's core refuses what needs a capability this engine lacks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from luaplug.backend import (
    DEFAULT_OPTIONS,
    ContractProvider,
    Engine,
    EngineState,
    FastCall,
    LuaError,
    LuaplugError,
    LuaSyntaxError,
    PythonBackedContract,
    StateOptions,
    prelude_source,
    python_interface,
)

try:
    import lupa.luajit21 as lupa
except ImportError as exc:
    lupa = None
    _UNAVAILABLE: str | None = f"lupa.luajit21 cannot be imported ({exc})"
else:
    _UNAVAILABLE = None


def _scalar(value: Any) -> Any:
    """A Lua result as Python: strings cross as bytes (``encoding=None``) and come out as ``str``."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _lua_error(exc: Exception) -> LuaError:
    """luaplug's exception for one of lupa's."""
    if isinstance(exc, lupa.LuaSyntaxError):
        return LuaSyntaxError(str(exc))
    return LuaError(str(exc))


class MiniState(EngineState):
    """One bundle VM: a fresh lupa runtime with the host prelude in it."""

    def __init__(self, host_address: int) -> None:
        super().__init__()  # owns the cell the prelude keeps (running thread, depth, ...)
        rt = lupa.LuaRuntime(encoding=None, register_eval=False, register_builtins=False)
        g = rt.globals()
        g.python = None  # no way back into Python from bundle code
        g.package.loaded.python = None
        # The prelude runs as stripped bytecode, as on luaplug's own backends: its frames then
        # read the same in every Lua traceback a bundle's error carries.
        load = rt.eval(
            b"function(src) return assert(load(string.dump(assert(load(src, '=luaplug_host', 't')), true),"
            b" '=luaplug_host', 'b'))() end"
        )
        try:
            self._prelude: Any = load(prelude_source().encode("utf-8"))
            self._prelude.setup(host_address, self.cell_address, self.thread_fn_address, None, False)
        except lupa.LuaError as exc:
            raise _lua_error(exc) from exc
        self._rt: Any = rt

    def prepend_package_field(self, field: str, entries: str) -> None:
        package = self._rt.globals().package
        key, current = field.encode("utf-8"), package[field.encode("utf-8")]
        package[key] = entries.encode("utf-8") + (b";" + current if current else b"")

    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        if self._prelude is None:
            raise LuaplugError("the bundle VM is closed")
        lua_args = [a.encode("utf-8") if isinstance(a, str) else a for a in args]
        try:
            result = self._prelude[entry.encode("ascii")](*lua_args)
        except lupa.LuaError as exc:
            raise _lua_error(exc) from exc
        if result is None:
            return ()
        return tuple(map(_scalar, result)) if isinstance(result, tuple) else (_scalar(result),)

    def dispatcher(self, cidx: int) -> FastCall:
        fn = self._prelude.dispatcher(cidx)
        if fn is None:
            raise LuaplugError(f"no contract #{cidx} in this VM")
        return fn  # type: ignore[no-any-return]

    def interface(self, provider: ContractProvider, cidx: int) -> Any:
        assert isinstance(provider, PythonBackedContract)
        return python_interface(provider)

    def close(self) -> None:
        prelude, self._prelude = self._prelude, None
        if prelude is not None and not self.active_on_this_thread():
            prelude.shutdown()
        self._rt = None


class MiniEngine(Engine):
    """LuaJIT 2.1 through ``lupa.luajit21``."""

    name: ClassVar[str] = "minilupa"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    @staticmethod
    def unavailable_reason() -> str | None:
        return _UNAVAILABLE

    def new_state(self, *, host_address: int, bundle: str, options: StateOptions = DEFAULT_OPTIONS) -> EngineState:
        if lupa is None:
            raise LuaplugError(_UNAVAILABLE or "lupa.luajit21 is unavailable")
        return MiniState(host_address)

    def lua_version(self) -> str:
        return str(_scalar(lupa.LuaRuntime(encoding=None).eval(b"jit.version"))) if lupa is not None else ""
