"""The cffi engine: the system LuaJIT driven through ``luaplug_cffi._native``.

Every Lua call from Python is one C call (see ``lp_core.c`` for the invariants: per-state recursive
lock, no longjmp across Python, errors in a thread-local buffer). The contracts' C interface
pointers are C functions of that module, so peer calls into a cffi-backed contract never enter Python.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Final

from luaplug.backend import (
    CAP_MEMORY_LIMIT,
    CAP_NESTED_SAME_BUNDLE,
    CAP_PARALLEL_STATES,
    CAP_REFUSES_BYTECODE,
    ContractProvider,
    EngineState,
    FastCall,
    GuardedEngine,
    LuaMemoryError,
    LuaplugError,
    NativeLookups,
    StateOptions,
    import_native,
    log_call_failure,
    log_create_failure,
    lua_errors,
    prelude_code,
    set_native_peers,
    set_wait_graph,
    vm_interface,
)

_native, _IMPORT_ERROR = import_native("luaplug_cffi._native", "install libluajit-5.1-dev and reinstall luaplug-cffi")
ffi: Any = getattr(_native, "ffi", None)
lib: Any = getattr(_native, "lib", None)
if lib is not None:
    # One lock-order graph for every engine: peer calls between our VMs and another engine's
    # (taken in C here, in Python there) are checked for cycles in the same place.
    # (their C addresses too: another engine's C peer interface calls them without Python)
    _begin, _end = (int(ffi.cast("uintptr_t", ffi.addressof(lib, f"lp_foreign_wait_{e}"))) for e in ("begin", "end"))
    set_wait_graph(lib.lp_foreign_wait_begin, lib.lp_foreign_wait_end, addresses=(_begin, _end))


__all__ = ["CffiEngine", "CffiState"]

#: lp_core.c's status codes: 0 ok, 1 a run-time error, 2 a syntax error, 3 out of memory, 4 closed
_OK, _ERR_CLOSED = 0, 4
_errors = lua_errors(2, 3)
#: lp_value types of prelude results (1 number, 2 string, 3 boolean; other: nil) as Python values
_RESULT: Final[dict[int, Callable[[Any], Any]]] = {
    1: lambda v: int(v.num) if v.num.is_integer() else v.num,
    2: lambda v: ffi.unpack(v.str, v.len).decode("utf-8", "replace"),
    3: lambda v: bool(v.num),
}

if lib is not None:

    @ffi.def_extern()  # type: ignore[untyped-decorator]
    def lp_log_failure(kind: int, text: Any, length: int) -> None:
        message = ffi.unpack(text, length).decode("utf-8", "replace")
        (log_create_failure if kind else log_call_failure)(message)


if lib is not None:
    _VALUES, _RESULTS, _COUNT = ffi.typeof("lp_value[]"), ffi.typeof("lp_value**"), ffi.typeof("int*")
    _new, _from_buffer = ffi.new, ffi.from_buffer


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


@functools.cache
def _lib_addresses() -> tuple[int, int, int, int]:
    """The addresses of ``lp_arena_alloc`` and of a contract interface's ``create_instance``,
    ``destroy_instance`` and ``dispatch.vm.call`` (the module's functions: fixed for the process)."""
    names = ("arena_alloc", "create_instance", "destroy_instance", "vm_call")
    alloc, create, destroy, call = (_address(ffi.addressof(lib, f"lp_{n}")) for n in names)
    return alloc, create, destroy, call


@prelude_code
def _prelude_code(src: bytes) -> bytes | None:
    """``src`` as bytecode of the system LuaJIT, or ``None``."""
    out, n = ffi.new("char**"), ffi.new("size_t*")
    if lib.lp_dump(src, len(src), b"=luaplug_host", out, n) != _OK:
        return None
    try:
        return bytes(ffi.buffer(out[0], n[0]))
    finally:
        lib.lp_free_buf(out[0])


class CffiState(EngineState):
    """One bundle VM: an ``lp_vm`` owned by this object (``ffi.gc``)."""

    # The per-instance native entry (luaplug_entry.h, through lp_pyfast.c); without it (not
    # installed), instances use the generic Python path over lp_dispatch.
    native_bind = _native.bind if lib is not None and lib.lp_install(b"luaplug_cffi._native") == 0 else None

    def __init__(self, options: StateOptions) -> None:
        super().__init__()
        vm = lib.lp_new(options.memory_limit or 0)
        if vm == ffi.NULL:
            raise LuaMemoryError("cannot create a LuaJIT state")
        # SAFETY: the lp_vm outlives every pointer to it: contracts hold this
        # object, and lp_free runs only when the last reference is gone.
        self._vm: Any = ffi.gc(vm, lib.lp_free)
        self._contracts: dict[int, Any] = {}  # cidx -> its lp_contract, kept as long as the state
        self.arena_alloc_address = _lib_addresses()[0]
        src = _prelude_code()
        self._check(lib.lp_load(self._vm, src, len(src)))

    def prelude_part(self, part: str) -> bytes:
        return _prelude_code(part)

    def _check(self, status: int) -> None:
        if status == _ERR_CLOSED:
            raise LuaplugError("the bundle VM is closed")
        if status != _OK:
            raise _errors(status, self.last_error_text())

    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        values = _new(_VALUES, len(args) or 1)
        keep = []  # the bytes the string arguments point into, alive until lp_call returns
        for i, a in enumerate(args):
            v = values[i]
            if isinstance(a, str):
                # With its length, not strlen: source text may hold NUL bytes.
                data = a.encode("utf-8")
                keep.append(data)
                v.type, v.str, v.len = 2, _from_buffer(data), len(data)
            else:
                v.type, v.num = 1, a
        resp, nres = _new(_RESULTS), _new(_COUNT)
        status = lib.lp_call(self._vm, entry.encode("ascii"), len(args), values, resp, nres)
        n, res = nres[0], resp[0]
        try:
            self._check(status)
            return tuple([_RESULT[v.type](v) if v.type in _RESULT else None for v in res[0:n]]) if n else ()
        finally:
            lib.lp_free_results(res, n)

    def dispatcher(self, cidx: int) -> FastCall:
        return functools.partial(lib.lp_dispatch, self._vm, cidx)

    def last_error_text(self) -> str:
        n = ffi.new("size_t*")
        return str(ffi.unpack(lib.lp_last_error(n), n[0]).decode("utf-8", "replace"))

    def interface(self, provider: ContractProvider, cidx: int) -> Any:
        c = self._contracts[cidx] = ffi.new("lp_contract*", (self._vm, cidx, provider.contract_id))
        _, create, destroy, call = _lib_addresses()
        return vm_interface(provider, create, destroy, call, _address(c))

    def native_target(self, cidx: int, instance_id: int) -> tuple[None, int, int] | None:
        # The entry keeps this state (and so the lp_contract) alive.
        c = self._contracts.get(cidx)
        return None if c is None else (None, _address(c), instance_id)

    def close(self) -> None:
        if lib.lp_close(self._vm) != _OK:
            # A call of this thread is still on the state's stack (the epoch's in-flight check makes
            # this rare); ffi.gc closes it once the last reference, and so the last call, is gone.
            logging.getLogger("luaplug.loader").debug("bundle VM busy at close; it is freed with its last reference")


class CffiEngine(GuardedEngine):
    """Engine on the system LuaJIT through ``luaplug_cffi._native``."""

    name: ClassVar[str] = "cffi"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_MEMORY_LIMIT, CAP_NESTED_SAME_BUNDLE, CAP_PARALLEL_STATES, CAP_REFUSES_BYTECODE}
    )
    import_error = _IMPORT_ERROR
    state_class = CffiState

    def lua_version(self) -> str:
        return "" if lib is None else str(ffi.string(lib.lp_luajit_version()).decode())


if CffiState.native_bind is not None:
    # lp_install published the HostApi's peer lookups (luaplug_entry.h) on the module too.
    set_native_peers(NativeLookups(_native))
