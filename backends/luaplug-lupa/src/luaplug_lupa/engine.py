"""The lupa engine: one lupa ``LuaRuntime`` of LuaJIT 2.1 per bundle VM.

The runtime class is ``lupa.luajit21``'s when lupa has that module (lupa 2.x
wheels bundle LuaJIT), otherwise lupa's default ``lupa.LuaRuntime`` if that
one runs LuaJIT 2.1 (lupa 1.x is built against one Lua: distributions such as
Debian link it to the system ``libluajit-5.1``); any other Lua leaves the
backend unavailable. A lupa without ``max_memory`` (1.x) gives an engine
without ``CAP_MEMORY_LIMIT``.

lupa serializes calls into one runtime with its own lock (other threads wait)
and releases the GIL while Lua runs, so two bundles on two threads run in
parallel. It cannot re-enter a runtime that is already running on the same
thread (its call path keeps its traceback handler at absolute stack slot 1),
so the core refuses such calls with ``ReentrantCall`` before they reach lupa:
this engine does not declare ``nested_same_bundle_calls``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Final

from luaplug.backend import (
    CAP_MEMORY_LIMIT,
    CAP_PARALLEL_STATES,
    CAP_REFUSES_BYTECODE,
    DEFAULT_OPTIONS,
    MEMORY_TEXT,
    ContractProvider,
    Engine,
    EngineState,
    FastCall,
    LuaError,
    LuaMemoryError,
    LuaplugError,
    LuaSyntaxError,
    PythonBackedContract,
    StateOptions,
    prelude_source,
    python_interface,
)
from luaplug.backend import (
    abi_ffi as _cffi,
)


def _py(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _jit_version(module: Any) -> str:
    """``jit.version`` of a fresh runtime of ``module`` (``_VERSION`` when it is not LuaJIT)."""
    return str(_py(module.LuaRuntime(encoding=None).eval(b"jit and jit.version or _VERSION")))


def _select_lupa() -> tuple[Any, str, str | None]:
    """``(module, its name, None)`` for lupa's LuaJIT 2.1 runtime, or ``(None, "", why not)``."""
    try:
        import lupa.luajit21 as luajit21
    except ImportError as exc:
        missing = f"lupa.luajit21 cannot be imported ({exc})"
    else:
        return luajit21, "lupa.luajit21", None
    try:
        import lupa
    except ImportError as exc:
        return None, "", f"{missing}, nor lupa ({exc})"
    try:
        version = _jit_version(lupa)
    except Exception as exc:  # a lupa that cannot make a runtime at all
        return None, "", f"{missing}, and lupa.LuaRuntime fails: {exc}"
    if not version.startswith("LuaJIT 2.1"):
        return None, "", f"{missing}, and lupa {getattr(lupa, '__version__', '?')} runs {version}, not LuaJIT 2.1"
    return lupa, "lupa.LuaRuntime", None


def _has_max_memory(module: Any) -> bool:
    """Whether ``module.LuaRuntime`` takes ``max_memory`` (lupa 2.x; 1.x refuses the keyword)."""
    try:
        module.LuaRuntime(encoding=None, max_memory=0)
    except TypeError:
        return False
    return True


_lupa, _LUPA_MODULE, _IMPORT_ERROR = _select_lupa()
_MAX_MEMORY = _lupa is not None and _has_max_memory(_lupa)

try:
    from luaplug_lupa._entry import bind as _bind_entry
except ImportError:  # built without a C compiler: the core's Python closures serve calls
    _bind_entry = None  # type: ignore[assignment]

__all__ = ["LupaEngine", "LupaState"]

#: Bytes a capped state must have free once set up (see LupaState).
_SETUP_RESERVE: Final = 16 * 1024

_LuaErrors: tuple[type[Exception], ...] = (_lupa.LuaError,) if _lupa is not None else ()
# lupa 1.x has no LuaMemoryError (it has no allocator of its own to run out of).
_LuaMemoryErrors: tuple[type[Exception], ...] = (
    (_lupa.LuaMemoryError,) if _lupa is not None and hasattr(_lupa, "LuaMemoryError") else ()
)


def _translate(exc: Exception) -> LuaError:
    """luaplug's exception for one of lupa's (the one boundary mapping)."""
    assert _lupa is not None
    if isinstance(exc, _lupa.LuaSyntaxError):
        return LuaSyntaxError(str(exc))
    if isinstance(exc, _LuaMemoryErrors):
        return LuaMemoryError(str(exc))
    return LuaError(str(exc))


@contextmanager
def _mapped() -> Iterator[None]:
    """Translate lupa's exceptions into luaplug's."""
    assert _lupa is not None
    try:
        yield
    except _lupa.LuaError as exc:
        raise _translate(exc) from exc


@functools.lru_cache(maxsize=1)
def _prelude_code() -> bytes:
    """The host prelude as bytecode of lupa's LuaJIT, compiled once per process
    (loading bytecode is several times faster than compiling the source)."""
    assert _lupa is not None
    with _mapped():
        dump = _lupa.LuaRuntime(encoding=None).execute(
            b"local src = ...; return string.dump(assert(loadstring(src, '=luaplug_host')), true)",
            prelude_source().encode("utf-8"),
        )
    return bytes(dump)


#: Prelude entries called after loading, looked up once per state (the loading
#: ones are not kept: the prelude drops them once the bundle is loaded).
_CACHED_ENTRIES: frozenset[str] = frozenset({"create", "destroy", "shutdown"})

#: Registry slots a capped state keeps free for the references lupa takes under the cap.
_SPARE_REFS = 256


class LupaState(EngineState):
    """One bundle VM on lupa. Strings cross as bytes (``encoding=None``)."""

    def __init__(self, host_address: int, options: StateOptions = DEFAULT_OPTIONS) -> None:
        super().__init__()
        assert _lupa is not None
        if options.memory_limit is not None and not _MAX_MEMORY:
            # The core refuses such a load first (CAP_MEMORY_LIMIT); never run uncapped.
            raise LuaplugError(f"{_LUPA_MODULE} has no max_memory: this engine cannot cap a VM's memory")
        with _mapped():
            # Where lupa has one, always its counting allocator (max_memory 0: no cap):
            # it uses the process allocator, which reuses what earlier states freed,
            # where LuaJIT's own would keep a private arena per state.
            # The cap is set once the prelude is in: lupa allocates outside a
            # protected call while it sets a state up, and an allocation failing
            # there ends the process (Lua's panic).
            limit = {"max_memory": 0} if _MAX_MEMORY else {}
            rt = _lupa.LuaRuntime(encoding=None, register_eval=False, register_builtins=False, **limit)
            g = rt.globals()
            # Taken before the prelude runs (it may restrict the globals); load() with a
            # chunk name and mode is LuaJIT's, and works on every lupa version.
            load_chunk = rt.eval(b"function(code, name, mode) return assert(load(code, name, mode))() end")
            # No way back into Python from bundle code.
            g[b"python"] = None
            g[b"package"][b"loaded"][b"python"] = None
            self._prelude: Any = load_chunk(_prelude_code(), b"=luaplug_host", b"b")
            self._prelude.setup(
                host_address, self.cell_address, self.thread_fn_address, None, options.memory_limit is not None
            )
        self._capped = bool(options.memory_limit)
        self._entries: dict[str, Any] = {}  # prelude entries, looked up once
        if options.memory_limit:
            # Every Lua object lupa hands to Python holds a registry reference, taken outside a
            # protected call: take the cached entries now, and leave free registry slots
            # behind, so the references taken under the cap (dispatchers, entries) reuse them.
            with _mapped():
                for entry in _CACHED_ENTRIES:
                    self._entries[entry] = self._prelude[entry.encode("ascii")]
                spare = [rt.table() for _ in range(_SPARE_REFS)]
                del spare
            # What loading still asks of lupa outside protected calls (package
            # paths, names) must fit under the cap.
            if rt.get_memory_used() + _SETUP_RESERVE > options.memory_limit:
                raise LuaMemoryError(MEMORY_TEXT)
            rt.set_max_memory(options.memory_limit)
        self._rt: Any = rt

    def run_chunk(self, source: str, chunk_name: str) -> None:
        # The text goes in by address: the prelude copies it into the VM inside a
        # protected call, where a copy over the cap is an ordinary memory error
        # (lupa would push it unprotected).
        data = source.encode("utf-8")
        buf = _cffi.from_buffer(data)
        res = self.call_prelude("run_chunk_at", int(_cffi.cast("uintptr_t", buf)), len(data), chunk_name)
        self._chunk_result(res)

    def prepend_package_field(self, field: str, entries: str) -> None:
        with _mapped():
            pkg = self._rt.globals()[b"package"]
            key = field.encode("utf-8")
            current = pkg[key]
            new = entries.encode("utf-8")
            pkg[key] = new + b";" + current if current else new

    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        prelude = self._prelude
        if prelude is None:
            raise LuaplugError("the bundle VM is closed")
        conv = [a.encode("utf-8") if isinstance(a, str) else a for a in args]
        fn = self._entries.get(entry)
        try:
            if fn is None:
                fn = prelude[entry.encode("ascii")]
                if entry in _CACHED_ENTRIES:
                    self._entries[entry] = fn
            result = fn(*conv)
        except _LuaErrors as exc:  # try/except, not _mapped(): this path serves create/destroy
            raise _translate(exc) from exc
        if result is None:
            return ()
        if isinstance(result, tuple):
            return tuple(_py(v) for v in result)
        return (_py(result),)

    def dispatcher(self, cidx: int) -> FastCall:
        fn = self._prelude.dispatcher(cidx)
        if fn is None:
            raise LuaplugError(f"no contract #{cidx} in this VM")
        return fn  # type: ignore[no-any-return]

    def bound_dispatcher(self, cidx: int, instance_id: int) -> Any:
        prelude = self._prelude
        if prelude is None or self.retired:
            raise LuaplugError("the bundle VM is closed")
        with _mapped():
            fn = prelude.bind(cidx, instance_id)
        if fn is None:
            raise LuaplugError(f"no contract #{cidx} in this VM")
        return fn

    def native_entry(self, cidx: int, instance_id: int, instance: Any, mode: int) -> Any:
        # The C entry (_entry.c) over the prelude's bound dispatcher: no Python
        # frame per call; it refuses a same-thread re-entry from the cell itself.
        # Not under a memory cap: lupa keeps the bound dispatcher (a new Lua function per
        # instance) through a registry reference it allocates outside a protected call,
        # so a full heap would end the process; the generic path uses the contract's
        # dispatcher, made at load.
        if _bind_entry is None or self._capped:
            return None
        try:
            target = self.bound_dispatcher(cidx, instance_id)
        except LuaplugError:
            return None  # closed meanwhile: the generic path answers StaleHandle
        # The entry keeps this state, and so the cell it reads, alive.
        return _bind_entry(target, self.cell_address, self, instance, mode)

    def interface(self, provider: ContractProvider, cidx: int) -> Any:
        assert isinstance(provider, PythonBackedContract)
        return python_interface(provider)

    def close(self) -> None:
        prelude, self._prelude = self._prelude, None
        if prelude is not None and not self.active_on_this_thread():
            try:
                # the entry taken at setup under a cap: looking it up could need memory
                shutdown = self._entries.get("shutdown")
                (shutdown if shutdown is not None else prelude.shutdown)()
            except Exception:  # closing must not fail; the runtime is dropped anyway
                pass
        self._entries.clear()
        self._rt = None


class LupaEngine(Engine):
    """Engine on lupa's LuaJIT 2.1 (``lupa.luajit21``, or a lupa built against LuaJIT 2.1)."""

    name: ClassVar[str] = "lupa"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_PARALLEL_STATES, CAP_REFUSES_BYTECODE} | ({CAP_MEMORY_LIMIT} if _MAX_MEMORY else set())
    )

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this engine cannot run here, or ``None``."""
        return _IMPORT_ERROR

    def new_state(self, *, host_address: int, bundle: str, options: StateOptions = DEFAULT_OPTIONS) -> EngineState:
        if _lupa is None:
            raise LuaplugError(_IMPORT_ERROR or "lupa's LuaJIT 2.1 is unavailable")
        return LupaState(host_address, options)

    def lua_version(self) -> str:
        """The LuaJIT version, then the lupa version and module it comes through."""
        if _lupa is None:
            return ""
        with _mapped():
            version = _jit_version(_lupa)
        return f"{version} (lupa {getattr(_lupa, '__version__', '?')}, {_LUPA_MODULE})"
