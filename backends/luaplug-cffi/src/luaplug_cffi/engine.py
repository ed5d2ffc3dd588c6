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
    DEFAULT_OPTIONS,
    ContractProvider,
    DispatchType,
    Engine,
    EngineState,
    FastCall,
    LuaError,
    LuaMemoryError,
    LuaplugError,
    LuaSyntaxError,
    StateOptions,
    abi_ffi,
    prelude_source,
    set_wait_graph,
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

# The per-instance C entry (lp_pyfast.c); None when it could not be installed,
# in which case instances use the generic Python path over lp_dispatch.
_bind: Callable[..., Any] | None = None
if lib is not None and lib.lp_install(b"luaplug_cffi._native") == 0:
    _bind = _native._bind
if lib is not None:
    # One lock-order graph for every engine: peer calls between our VMs and another engine's
    # (taken in C here, in Python there) are checked for cycles in the same place.
    set_wait_graph(lib.lp_foreign_wait_begin, lib.lp_foreign_wait_end)

__all__ = ["CffiEngine", "CffiState"]

_log: Final = logging.getLogger("luaplug.loader")
_OK, _ERR_RUN, _ERR_SYNTAX, _ERR_MEM, _ERR_CLOSED = 0, 1, 2, 3, 4

if lib is not None:

    @ffi.def_extern()  # type: ignore[untyped-decorator]
    def lp_log_failure(kind: int, text: Any, length: int) -> None:
        message = ffi.unpack(text, length).decode("utf-8", "replace")
        if kind == 0:
            _log.error("Lua function call failed: %s", message)
        else:
            _log.error("Lua create_instance: factory call failed: %s", message)


def _last_error() -> str:
    n = ffi.new("size_t*")
    p = lib.lp_last_error(n)
    return str(ffi.unpack(p, n[0]).decode("utf-8", "replace"))


def _raise(status: int) -> None:
    text = _last_error()
    if status == _ERR_SYNTAX:
        raise LuaSyntaxError(text)
    if status == _ERR_MEM:
        raise LuaMemoryError(text)
    raise LuaError(text)


@functools.lru_cache(maxsize=1)
def _prelude_code() -> bytes:
    """The host prelude as bytecode of the system LuaJIT (compiled once per
    process: loading it is several times faster than compiling the source).
    Falls back to the source if it cannot be dumped."""
    src = prelude_source().encode("utf-8")
    out = ffi.new("char**")
    n = ffi.new("size_t*")
    if lib.lp_dump(src, len(src), b"=luaplug_host", out, n) != _OK:
        return src
    try:
        return bytes(ffi.buffer(out[0], n[0]))
    finally:
        lib.lp_free_buf(out[0])


@functools.lru_cache(maxsize=1)
def _c_entries() -> tuple[Any, Any, Any]:
    """The C entries of every interface (create_instance, destroy_instance, vm.call),
    as ABI function pointers: looked up once, they never move."""

    def entry(ctype: str, fn_name: str) -> Any:
        return abi_ffi.cast(ctype, int(ffi.cast("uintptr_t", ffi.addressof(lib, fn_name))))

    return (
        entry("CreateInstanceFn", "lp_create_instance"),
        entry("DestroyInstanceFn", "lp_destroy_instance"),
        entry("VmCallFn", "lp_vm_call"),
    )


class CffiState(EngineState):
    """One bundle VM: an ``lp_vm`` owned by this object (``ffi.gc``)."""

    def __init__(self, host_address: int, options: StateOptions = DEFAULT_OPTIONS) -> None:
        super().__init__()
        vm = lib.lp_new(options.memory_limit or 0)
        if vm == ffi.NULL:
            raise LuaMemoryError("cannot create a LuaJIT state")
        # SAFETY: the lp_vm outlives every pointer to it: contracts hold this
        # object, and lp_free runs only when the last reference is gone.
        self._vm: Any = ffi.gc(vm, lib.lp_free)
        self._contracts: dict[int, Any] = {}
        src = _prelude_code()
        status = lib.lp_setup(
            self._vm, src, len(src), float(host_address), float(self.cell_address), float(self.thread_fn_address)
        )
        if status != _OK:
            _raise(status)

    def prepend_package_field(self, field: str, entries: str) -> None:
        raw = entries.encode("utf-8")
        status = lib.lp_prepend_field(self._vm, field.encode("ascii"), raw, len(raw))
        if status != _OK:
            _raise(status)

    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        values = ffi.new("lp_value[]", max(len(args), 1))
        keep = []
        for i, a in enumerate(args):
            if isinstance(a, str):
                data = a.encode("utf-8")
                raw = ffi.new("char[]", data)
                keep.append(raw)
                values[i].type = 2
                values[i].str = raw
                values[i].len = len(data)  # not strlen: source text may hold NUL bytes
            else:
                values[i].type = 1
                values[i].num = float(a)
        resp = ffi.new("lp_value**")
        nres = ffi.new("int*")
        status = lib.lp_call(self._vm, entry.encode("ascii"), len(args), values, resp, nres)
        res = resp[0]
        out: list[Any] = []
        try:
            if status == _ERR_CLOSED:
                raise LuaplugError("the bundle VM is closed")
            if status != _OK:
                _raise(status)
            for i in range(nres[0]):
                v = res[i]
                if v.type == 1:
                    num = v.num
                    out.append(int(num) if num.is_integer() else num)
                elif v.type == 2:
                    out.append(ffi.unpack(v.str, v.len).decode("utf-8", "replace"))
                elif v.type == 3:
                    out.append(bool(v.num))
                else:
                    out.append(None)
        finally:
            lib.lp_free_results(res, nres[0])
        return tuple(out)

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
        iface = abi_ffi.new("GuestContractInterface*")
        iface.contract_id = provider.contract_id
        iface.contract_version.major = provider.major
        iface.dispatch_type = DispatchType.VirtualMachine
        iface.create_instance, iface.destroy_instance, iface.dispatch.vm.call = _c_entries()
        iface.dispatch.vm.loader_data.data = abi_ffi.cast("void*", int(ffi.cast("uintptr_t", c)))
        return iface

    def native_entry(self, cidx: int, instance_id: int, instance: Any, mode: int) -> Any:
        c = self._contracts.get(cidx)
        if _bind is None or c is None:
            return None
        # The bound function keeps this state (and so the lp_contract) alive.
        return _bind(self, int(ffi.cast("uintptr_t", c)), instance_id, instance, mode)

    def close(self) -> None:
        if lib.lp_close(self._vm) != _OK:
            # A call of this thread is still on the state's stack (the epoch's
            # in-flight check makes this rare); ffi.gc closes it once the last
            # reference, and so the last call, is gone.
            _log.debug("bundle VM busy at close; it is freed with its last reference")


class CffiEngine(Engine):
    """Engine on the system LuaJIT through ``luaplug_cffi._native``."""

    name: ClassVar[str] = "cffi"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {CAP_MEMORY_LIMIT, CAP_NESTED_SAME_BUNDLE, CAP_PARALLEL_STATES, CAP_REFUSES_BYTECODE}
    )

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this engine cannot run here, or ``None``."""
        return _IMPORT_ERROR

    def new_state(self, *, host_address: int, bundle: str, options: StateOptions = DEFAULT_OPTIONS) -> EngineState:
        if lib is None:
            raise LuaplugError(_IMPORT_ERROR or "luaplug_cffi._native is unavailable")
        return CffiState(host_address, options)

    def lua_version(self) -> str:
        if lib is None:
            return ""
        return str(ffi.string(lib.lp_luajit_version()).decode())
