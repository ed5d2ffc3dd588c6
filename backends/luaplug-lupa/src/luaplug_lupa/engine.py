"""The lupa engine: one lupa ``LuaRuntime`` of LuaJIT 2.1 per bundle VM (which lupa: ``_select``).

A lupa without ``max_memory`` (1.x) gives an engine without ``CAP_MEMORY_LIMIT``. lupa serializes
calls into one runtime with its own lock (other threads wait) and releases the GIL while Lua runs,
so two bundles on two threads run in parallel. It cannot re-enter a runtime already running on the
same thread (its call path keeps its traceback handler at absolute stack slot 1), so the core
refuses such calls with ``ReentrantCall`` before they reach lupa: no ``nested_same_bundle_calls``.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Final

from luaplug.backend import (
    CAP_MEMORY_LIMIT,
    CAP_PARALLEL_STATES,
    CAP_REFUSES_BYTECODE,
    MEMORY_TEXT,
    ContractProvider,
    EngineState,
    GuardedEngine,
    LuaError,
    LuaMemoryError,
    LuaplugError,
    NativeLookups,
    PythonBackedContract,
    StateOptions,
    import_native,
    lua_errors,
    native_entries,
    peer_interface,
    prelude_code,
    set_native_peers,
    set_wait_graph,
)

from ._select import decoded, jit_version, select_lupa

_lupa, _LUPA_MODULE, _IMPORT_ERROR = select_lupa()
#: Whether the runtime takes ``max_memory`` (lupa 2.x; lupa 1.x has neither it nor ``set_max_memory``).
_MAX_MEMORY = hasattr(getattr(_lupa, "LuaRuntime", None), "set_max_memory")
_entry, _ = import_native("luaplug_lupa._entry")  # None: built without a C compiler
_PEER_FUNCTIONS: Final = _entry.peer_functions() if _entry is not None else (0, 0, 0)
if _entry is not None and native_entries():
    # Peer waits on lupa VMs are checked for cycles in C (luaplug_entry.h's graph section), unless
    # a graph is registered already: luaplug-cffi's, which also sees its own VM locks.
    set_wait_graph(_entry.wait_begin, _entry.wait_end, addresses=_entry.wait_functions(), replace=False)

__all__ = ["LupaEngine", "LupaState"]

#: Bytes a capped state must have free once its prelude is in (see LupaState).
_SETUP_RESERVE: Final = 16 * 1024
#: Bytes a capped state must have free before a prelude call (lupa's own unprotected work).
_CALL_HEADROOM: Final = 4 * 1024
#: What loading the hardening part of the prelude and running it takes on top of that.
_HARDEN_RESERVE: Final = 112 * 1024
#: lupa's exceptions as luaplug's (lupa 1.x has no LuaMemoryError: no allocator of its own).
_CATCH: Final[tuple[type[BaseException], ...]] = (_lupa.LuaError,) if _lupa is not None else ()
_errors = lua_errors(getattr(_lupa, "LuaSyntaxError", None), getattr(_lupa, "LuaMemoryError", None), catch=_CATCH)
_DUMP: Final = b"local src = ...; return string.dump(assert(loadstring(src, '=luaplug_host')), true)"
_prelude_code = prelude_code(lambda src: bytes(_lupa.LuaRuntime(encoding=None).execute(_DUMP, src)))
#: Prelude entries called after loading, looked up once per state (the loading
#: ones are not kept: the prelude drops them once the bundle is loaded).
_CACHED_ENTRIES: frozenset[str] = frozenset({"create", "destroy", "shutdown"})

#: Registry slots a capped state keeps free for the references lupa takes under the cap.
_SPARE_REFS = 256


class LupaState(EngineState):
    """One bundle VM on lupa. Strings cross as bytes (``encoding=None``)."""

    # The shared per-instance entry (luaplug_entry.h) over the prelude's bound dispatcher; it refuses
    # a same-thread re-entry from the cell itself. None: the core's Python path serves calls.
    native_bind = None if _entry is None else _entry.bind

    def __init__(self, options: StateOptions) -> None:
        super().__init__()
        with _errors:
            # Where lupa has one, always its counting allocator (max_memory 0: no cap): it uses the
            # process allocator, which reuses what earlier states freed (LuaJIT's own keeps a
            # private arena per state). The cap is set once the prelude is in: lupa allocates
            # outside a protected call while it sets a state up, and a failure there is Lua's panic.
            limit = {"max_memory": 0} if _MAX_MEMORY else {}
            rt = _lupa.LuaRuntime(encoding=None, register_eval=False, register_builtins=False, **limit)
            g = rt.globals()
            # Taken before the prelude runs (it may restrict the globals); load() with a
            # chunk name and mode is LuaJIT's, and works on every lupa version.
            loaded = g[b"load"](_prelude_code(), b"=luaplug_host", b"b")
            if isinstance(loaded, tuple):  # (nil, message): the prelude did not load
                raise LuaError(f"the host prelude did not load: {decoded(loaded[-1])}")
            # No way back into Python from bundle code.
            g[b"python"] = g[b"package"][b"loaded"][b"python"] = None
            self._prelude: Any = loaded()
        self._capped = bool(options.memory_limit)
        self._cap = options.memory_limit or 0
        self._rt: Any = rt
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
            # setup, package paths, names; for a budget or untrusted mode also the
            # hardening, whose arguments lupa pushes unprotected) must fit under the cap.
            hardened = bool(options.instruction_limit or options.untrusted)
            reserve = _SETUP_RESERVE + (_HARDEN_RESERVE if hardened else 0)
            if rt.get_memory_used() + reserve > options.memory_limit:
                raise LuaMemoryError(MEMORY_TEXT)
            rt.set_max_memory(options.memory_limit)

    def prelude_part(self, part: str) -> bytes:
        return _prelude_code(part)

    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        if self._prelude is None:
            raise LuaplugError("the bundle VM is closed")
        fn = self._entries.get(entry)
        call_args: tuple[object, ...] = args
        if str in map(type, args):
            call_args = tuple(a.encode("utf-8") if isinstance(a, str) else a for a in args)
        if self._cap:
            # lupa pushes the arguments (and a little of its own) outside a protected call,
            # where running out of memory ends the process: refuse the call unless that fits.
            need = _CALL_HEADROOM + sum(len(a) + 32 for a in call_args if isinstance(a, bytes))
            if self._rt.get_memory_used() + need > self._cap:
                raise LuaMemoryError(MEMORY_TEXT)
        try:  # _errors' mapping, without a with block (create and destroy serve peer calls)
            if fn is None:
                fn = self._prelude[entry.encode("ascii")]
                if fn is None:
                    raise LuaError(f"no prelude entry {entry!r} in this VM")
                if entry in _CACHED_ENTRIES:
                    self._entries[entry] = fn
            result = fn(*call_args)
        except _CATCH as exc:
            raise _errors(exc) from exc
        if result is None:
            return ()
        return tuple(map(decoded, result)) if isinstance(result, tuple) else (decoded(result),)

    def dispatcher(self, cidx: int) -> Any:  # a lupa function, called as a FastCall
        fn = self._prelude.dispatcher(cidx)
        if fn is None:
            raise LuaplugError(f"no contract #{cidx} in this VM")
        return fn

    def bound_dispatcher(self, cidx: int, instance_id: int) -> Any:
        if self._prelude is None or self.retired:
            raise LuaplugError("the bundle VM is closed")
        with _errors:
            return self._prelude.bind(cidx, instance_id)  # None: no such contract

    def interface(self, provider: ContractProvider, cidx: int) -> Any:
        # C pointers (luaplug_entry.h's peer section) unless the compiled module is missing or
        # native entries are off; then the core's Python callbacks.
        if _entry is None or not native_entries() or not isinstance(provider, PythonBackedContract):
            return super().interface(provider, cidx)
        entries: dict[str, Any] | None = None
        if not self._capped:
            # Under a cap, create and destroy go through call_prelude, which keeps lupa's
            # unprotected pushes within it. close() empties the dict: later calls go to Python.
            with _errors:
                for name in ("create", "destroy"):
                    if name not in self._entries:
                        self._entries[name] = self._prelude[name.encode("ascii")]
            entries = self._entries
        # guard: lupa cannot re-enter a runtime running on this thread (no nested calls).
        return peer_interface(_entry.peer, _PEER_FUNCTIONS, provider, self, cidx, guard=True, entries=entries)

    def engine_error(self, exc: BaseException) -> BaseException:
        return _errors(exc) if isinstance(exc, _CATCH) else exc

    def native_target(self, cidx: int, instance_id: int) -> tuple[Any, int, int] | None:
        # Not under a memory cap: lupa keeps the bound dispatcher (a new Lua function per
        # instance) through a registry reference it allocates outside a protected call, so a
        # full heap would end the process; the generic path uses the contract's dispatcher,
        # made at load.
        return None if self._capped else super().native_target(cidx, instance_id)

    def close(self) -> None:
        prelude, self._prelude = self._prelude, None
        self._rt = None  # the runtime goes with its last Lua object, not with this state
        if prelude is not None and not self.active_on_this_thread():
            with contextlib.suppress(Exception):  # closing must not fail; the runtime is dropped anyway
                # the entry taken at setup under a cap: looking it up could need memory
                shutdown = self._entries.get("shutdown")
                (shutdown if shutdown is not None else prelude.shutdown)()
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
        with _errors:
            version = jit_version(_lupa) if _lupa is not None else ""
        return version and f"{version} (lupa {getattr(_lupa, '__version__', '?')}, {_LUPA_MODULE})"


if _entry is not None:
    # The HostApi's peer lookups in C (luaplug_entry.h), published by _entry's init; without the
    # compiled module (or with another backend's already in place) they stay as they are.
    set_native_peers(NativeLookups(_entry))
