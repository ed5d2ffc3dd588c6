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

from typing import Any, ClassVar, Final

from luaplug.backend import (
    CAP_MEMORY_LIMIT,
    CAP_PARALLEL_STATES,
    CAP_REFUSES_BYTECODE,
    MEMORY_TEXT,
    EngineState,
    GuardedEngine,
    LuaMemoryError,
    LuaplugError,
    LuaSyntaxError,
    StateOptions,
    map_errors,
    native_entries,
    prelude_code,
)
from luaplug.backend import abi_ffi as _cffi

from ._select import decoded, has_max_memory, jit_version, select_lupa

_lupa, _LUPA_MODULE, _IMPORT_ERROR = select_lupa()
_MAX_MEMORY = _lupa is not None and has_max_memory(_lupa)

try:
    from luaplug_lupa._entry import bind as _bind_entry
except ImportError:  # built without a C compiler: the core's Python path serves calls
    _bind_entry = None  # type: ignore[assignment]

__all__ = ["LupaEngine", "LupaState"]

#: Bytes a capped state must have free once its prelude is in (see LupaState).
_SETUP_RESERVE: Final = 16 * 1024
#: lupa's exceptions as luaplug's (lupa 1.x has no LuaMemoryError: no allocator of its own).
_errors = map_errors(
    {getattr(_lupa, "LuaSyntaxError", None): LuaSyntaxError, getattr(_lupa, "LuaMemoryError", None): LuaMemoryError},
    catch=(_lupa.LuaError,) if _lupa is not None else (),
)
_prelude_code = prelude_code(
    lambda src: bytes(
        _lupa.LuaRuntime(encoding=None).execute(
            b"local src = ...; return string.dump(assert(loadstring(src, '=luaplug_host')), true)", src
        )
    )
)
#: Prelude entries called after loading, looked up once per state (the loading
#: ones are not kept: the prelude drops them once the bundle is loaded).
_CACHED_ENTRIES: frozenset[str] = frozenset({"create", "destroy", "shutdown"})

#: Registry slots a capped state keeps free for the references lupa takes under the cap.
_SPARE_REFS = 256


class LupaState(EngineState):
    """One bundle VM on lupa. Strings cross as bytes (``encoding=None``)."""

    def __init__(self, options: StateOptions) -> None:
        super().__init__()
        assert _lupa is not None
        if options.memory_limit is not None and not _MAX_MEMORY:
            # The core refuses such a load first (CAP_MEMORY_LIMIT); never run uncapped.
            raise LuaplugError(f"{_LUPA_MODULE} has no max_memory: this engine cannot cap a VM's memory")
        with _errors:
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
        self._capped = bool(options.memory_limit)
        self._entries: dict[str, Any] = {}  # prelude entries, looked up once
        if options.memory_limit:
            # Every Lua object lupa hands to Python holds a registry reference, taken outside a
            # protected call: take the cached entries now, and leave free registry slots
            # behind, so the references taken under the cap (dispatchers, entries) reuse them.
            with _errors:
                for entry in _CACHED_ENTRIES:
                    self._entries[entry] = self._prelude[entry.encode("ascii")]
                spare = [rt.table() for _ in range(_SPARE_REFS)]
                del spare
            # What loading still asks of lupa outside protected calls (the prelude's
            # setup, package paths, names) must fit under the cap.
            if rt.get_memory_used() + _SETUP_RESERVE > options.memory_limit:
                raise LuaMemoryError(MEMORY_TEXT)
            rt.set_max_memory(options.memory_limit)

    def run_chunk(self, source: str, chunk_name: str) -> None:
        # The text goes in by address: the prelude copies it into the VM inside a
        # protected call, where a copy over the cap is an ordinary memory error
        # (lupa would push it unprotected).
        data = source.encode("utf-8")
        buf = _cffi.from_buffer(data)
        res = self.call_prelude("run_chunk_at", int(_cffi.cast("uintptr_t", buf)), len(data), chunk_name)
        self._chunk_result(res)

    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        prelude = self._prelude
        if prelude is None:
            raise LuaplugError("the bundle VM is closed")
        conv = [a.encode("utf-8") if isinstance(a, str) else a for a in args]
        fn = self._entries.get(entry)
        with _errors:
            if fn is None:
                fn = prelude[entry.encode("ascii")]
                if entry in _CACHED_ENTRIES:
                    self._entries[entry] = fn
            result = fn(*conv)
        if result is None:
            return ()
        if isinstance(result, tuple):
            return tuple(decoded(v) for v in result)
        return (decoded(result),)

    def dispatcher(self, cidx: int) -> Any:  # a lupa function, called as a FastCall
        fn = self._prelude.dispatcher(cidx)
        if fn is None:
            raise LuaplugError(f"no contract #{cidx} in this VM")
        return fn

    def bound_dispatcher(self, cidx: int, instance_id: int) -> Any:
        prelude = self._prelude
        if prelude is None or self.retired:
            raise LuaplugError("the bundle VM is closed")
        with _errors:
            fn = prelude.bind(cidx, instance_id)
        if fn is None:
            raise LuaplugError(f"no contract #{cidx} in this VM")
        return fn

    def native_entry(self, cidx: int, instance_id: int, instance: Any, mode: int) -> Any:
        # The shared entry over the prelude's bound dispatcher; it refuses a same-thread
        # re-entry from the cell itself (see _entry.c). Not under a memory cap: lupa keeps
        # the bound dispatcher (a new Lua function per instance) through a registry
        # reference it allocates outside a protected call, so a full heap would end the
        # process; the generic path uses the contract's dispatcher, made at load.
        if _bind_entry is None or not native_entries() or self._capped:
            return None
        try:
            target = self.bound_dispatcher(cidx, instance_id)
        except LuaplugError:
            return None  # closed meanwhile: the generic path answers StaleHandle
        return _bind_entry(self, instance, mode, target, 0, 0)

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


class LupaEngine(GuardedEngine):
    """Engine on lupa's LuaJIT 2.1 (``lupa.luajit21``, or a lupa built against LuaJIT 2.1)."""

    name: ClassVar[str] = "lupa"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_PARALLEL_STATES, CAP_REFUSES_BYTECODE} | ({CAP_MEMORY_LIMIT} if _MAX_MEMORY else set())
    )
    import_error = _IMPORT_ERROR
    state_class = LupaState

    def lua_version(self) -> str:
        """The LuaJIT version, then the lupa version and module it comes through."""
        if _lupa is None:
            return ""
        with _errors:
            version = jit_version(_lupa)
        return f"{version} (lupa {getattr(_lupa, '__version__', '?')}, {_LUPA_MODULE})"
