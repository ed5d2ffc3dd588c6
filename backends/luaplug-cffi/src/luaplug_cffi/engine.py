"""The cffi engine: the system LuaJIT driven through ``luaplug_cffi._native``.

Every Lua call from Python is one C call (see ``lp_core.c`` for the
invariants: per-state recursive lock, no longjmp across Python, errors in a
thread-local buffer). The contracts' C interface pointers are C functions of
that module, so peer calls into a cffi-backed contract never enter Python.
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
    LuaSyntaxError,
    StateOptions,
    abi_ffi,
    log_call_failure,
    log_create_failure,
    map_errors,
    native_entries,
    prelude_code,
    set_wait_graph,
    vm_interface,
)

try:
    from . import _native
    from ._native import ffi, lib
except ImportError as _exc:  # reported through unavailable_reason()
    ffi = lib = None
    _IMPORT_ERROR: str | None = (
        f"the compiled module luaplug_cffi._native cannot be loaded ({_exc}); "
        "install libluajit-5.1-dev and reinstall luaplug-cffi"
    )
else:
    _IMPORT_ERROR = None

# The per-instance native entry (luaplug_entry.h, through lp_pyfast.c); None when it could not
# be installed, in which case instances use the generic Python path over lp_dispatch.
_bind: Callable[..., Any] | None = None
if lib is not None and lib.lp_install(b"luaplug_cffi._native") == 0:
    _bind = _native.bind
if lib is not None:
    # One lock-order graph for every engine: peer calls between our VMs and another engine's
    # (taken in C here, in Python there) are checked for cycles in the same place.
    set_wait_graph(lib.lp_foreign_wait_begin, lib.lp_foreign_wait_end)

__all__ = ["CffiEngine", "CffiState"]

_log: Final = logging.getLogger("luaplug.loader")
_OK, _ERR_RUN, _ERR_SYNTAX, _ERR_MEM, _ERR_CLOSED = 0, 1, 2, 3, 4
#: lp_core.c's status codes as luaplug's errors
_errors = map_errors({_ERR_SYNTAX: LuaSyntaxError, _ERR_MEM: LuaMemoryError})

if lib is not None:

    @ffi.def_extern()  # type: ignore[untyped-decorator]
    def lp_log_failure(kind: int, text: Any, length: int) -> None:
        message = ffi.unpack(text, length).decode("utf-8", "replace")
        (log_create_failure if kind else log_call_failure)(message)


def _last_error() -> str:
    n = ffi.new("size_t*")
    p = lib.lp_last_error(n)
    return str(ffi.unpack(p, n[0]).decode("utf-8", "replace"))


def _check(status: int) -> None:
    if status == _ERR_CLOSED:
        raise LuaplugError("the bundle VM is closed")
    if status != _OK:
        raise _errors(status, _last_error())


#: lp_value types of prelude results (1 number, 2 string, 3 boolean; other: nil) as Python values
_RESULT: Final[dict[int, Callable[[Any], Any]]] = {
    1: lambda v: int(v.num) if v.num.is_integer() else v.num,
    2: lambda v: ffi.unpack(v.str, v.len).decode("utf-8", "replace"),
    3: lambda v: bool(v.num),
}


def _dump(src: bytes) -> bytes | None:
    """``src`` as bytecode of the system LuaJIT, or ``None``."""
    out = ffi.new("char**")
    n = ffi.new("size_t*")
    if lib.lp_dump(src, len(src), b"=luaplug_host", out, n) != _OK:
        return None
    try:
        return bytes(ffi.buffer(out[0], n[0]))
    finally:
        lib.lp_free_buf(out[0])


_prelude_code = prelude_code(_dump)


@functools.lru_cache(maxsize=1)
def _c_entries() -> tuple[Any, Any, Any, int]:
    """The C entries of every interface (create_instance, destroy_instance, vm.call) as ABI
    function pointers, and lp_arena_alloc's address: looked up once, they never move."""

    def address(fn_name: str) -> int:
        return int(ffi.cast("uintptr_t", ffi.addressof(lib, fn_name)))

    create, destroy, call = (
        abi_ffi.cast(ctype, address(name))
        for ctype, name in (
            ("CreateInstanceFn", "lp_create_instance"),
            ("DestroyInstanceFn", "lp_destroy_instance"),
            ("VmCallFn", "lp_vm_call"),
        )
    )
    return create, destroy, call, address("lp_arena_alloc")


class CffiState(EngineState):
    """One bundle VM: an ``lp_vm`` owned by this object (``ffi.gc``)."""

    def __init__(self, options: StateOptions) -> None:
        super().__init__()
        vm = lib.lp_new(options.memory_limit or 0)
        if vm == ffi.NULL:
            raise LuaMemoryError("cannot create a LuaJIT state")
        # SAFETY: the lp_vm outlives every pointer to it: contracts hold this
        # object, and lp_free runs only when the last reference is gone.
        self._vm: Any = ffi.gc(vm, lib.lp_free)
        self._contracts: dict[int, Any] = {}
        self.arena_alloc_address = _c_entries()[3]
        src = _prelude_code()
        _check(lib.lp_load(self._vm, src, len(src)))

    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        data = [a.encode("utf-8") if isinstance(a, str) else a for a in args]
        keep = [ffi.new("char[]", a) if isinstance(a, bytes) else ffi.NULL for a in data]
        # Strings with their length, not strlen: source text may hold NUL bytes.
        values = ffi.new(
            "lp_value[]",
            [
                (2, 0, k, len(a)) if isinstance(a, bytes) else (1, float(a), k, 0)
                for a, k in zip(data, keep, strict=True)
            ]
            or 1,
        )
        resp = ffi.new("lp_value**")
        nres = ffi.new("int*")
        status = lib.lp_call(self._vm, entry.encode("ascii"), len(args), values, resp, nres)
        try:
            _check(status)
            return tuple(_RESULT[v.type](v) if v.type in _RESULT else None for v in resp[0][0 : nres[0]])
        finally:
            lib.lp_free_results(resp[0], nres[0])

    def dispatcher(self, cidx: int) -> FastCall:
        return functools.partial(lib.lp_dispatch, self._vm, cidx)

    def last_error_text(self) -> str:
        return _last_error()

    def interface(self, provider: ContractProvider, cidx: int) -> Any:
        # SAFETY: the lp_contract lives in self._contracts as long as the state.
        c = ffi.new("lp_contract*")
        c.vm = self._vm
        c.cidx = cidx
        c.contract_id = provider.contract_id
        self._contracts[cidx] = c
        data = abi_ffi.cast("void*", int(ffi.cast("uintptr_t", c)))
        return vm_interface(provider, *_c_entries()[:3], data)

    def native_entry(self, cidx: int, instance_id: int, instance: Any, mode: int) -> Any:
        c = self._contracts.get(cidx)
        if _bind is None or c is None or not native_entries():
            return None
        # The entry keeps this state (and so the lp_contract) alive.
        return _bind(self, instance, mode, None, int(ffi.cast("uintptr_t", c)), instance_id)

    def close(self) -> None:
        if lib.lp_close(self._vm) != _OK:
            # A call of this thread is still on the state's stack (the epoch's
            # in-flight check makes this rare); ffi.gc closes it once the last
            # reference, and so the last call, is gone.
            _log.debug("bundle VM busy at close; it is freed with its last reference")


class CffiEngine(GuardedEngine):
    """Engine on the system LuaJIT through ``luaplug_cffi._native``."""

    name: ClassVar[str] = "cffi"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_MEMORY_LIMIT, CAP_NESTED_SAME_BUNDLE, CAP_PARALLEL_STATES, CAP_REFUSES_BYTECODE}
    )
    import_error = _IMPORT_ERROR
    state_class = CffiState

    def lua_version(self) -> str:
        if lib is None:
            return ""
        return str(ffi.string(lib.lp_luajit_version()).decode())
