"""A C ``GuestContractInterface`` whose pointers call back into Python.

For engines whose dispatch lives in Python (lupa), every contract gets real ``vm.call`` /
``create_instance`` / ``destroy_instance`` pointers, so guests of any backend call it through
``HostApi`` (spec §13): C functions compiled by the backend (:func:`peer_interface`, the peer
section of ``luaplug_entry.h``), or else the cffi callbacks here (:func:`python_interface`).
``loader_data`` is what the provider keeps as ``_c_handle`` (a Peer, or a cffi handle to the
provider); it lives as long as the registration's keepalive list (released through the epoch).
"""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Callable
from typing import Any, Final

from ..abi import AbiErrorCode, DispatchType
from ..abi import core_ffi as ffi
from ..contract import ContractProvider

__all__ = ["PythonBackedContract", "log_callback_error", "peer_interface", "python_interface", "vm_interface"]

_callback_log: Final = logging.getLogger("luaplug.hostapi")


# Instance ids are Lua numbers (doubles): past 2**53 no id can name a live instance.
_MAX_INSTANCE_ID: Final = 2**53


class PythonBackedContract(ContractProvider):
    """A provider the C callbacks can drive: one extra method."""

    _c_handle: Any = None

    def dispatch_from_c(self, fn_id: int, instance_id: int, args: int, out: int, arena: int) -> int:
        """Dispatch for a foreign caller; returns the code (errors already logged)."""
        raise NotImplementedError

    def create_from_c(self) -> int:
        """Create an instance for a foreign caller (0 on failure)."""
        return self.create_instance()


def log_callback_error(what: str, exc: BaseException) -> None:
    """Log an exception a contract callback met (``what``: the message), as every callback does."""
    _callback_log.error(what, exc_info=exc)


def _on_error(exc_type: Any, exc: Any, tb: Any) -> None:
    log_callback_error("contract callback raised", exc)


def _u(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


# Where the C calling convention passes a struct of one or two integer words exactly as that
# many separate integer arguments (System V x86-64, AArch64), the callbacks below are declared
# with the structs flattened, which spares cffi building a struct object per argument; elsewhere
# a wrapper taking the structs unpacks them. The VmCallFn uses word types (INTERNAL_CDEF): the
# pointers arrive as ints and the AbiError {u32 code; StringView message} is three words.
_FLAT: Final = sys.platform != "win32" and platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")


def _vm_call_flat(data: Any, iid: int, _cid: int, fn_id: int, args: int, out: int, arena: int, err: Any) -> None:
    code: int = AbiErrorCode.InvalidPointer
    if data != ffi.NULL:
        provider: PythonBackedContract = ffi.from_handle(data)
        if iid > _MAX_INSTANCE_ID:
            code = AbiErrorCode.FunctionNotAvailable  # never a live instance
        else:
            try:
                code = provider.dispatch_from_c(fn_id, iid, args, out, arena)
            except Exception as exc:  # the caller's AbiError is written whatever happens
                log_callback_error("contract call from C failed", exc)
                code = AbiErrorCode.Generic
    if err != ffi.NULL:
        err[0] = code  # code and its padding
        err[1] = 0  # message.ptr
        err[2] = 0  # message.len


def _create_flat(data: Any, host: Any, args: Any, out: Any) -> None:
    if out == ffi.NULL:
        return
    out.data = ffi.NULL
    out.contract_id = 0
    if data == ffi.NULL:
        return
    provider: PythonBackedContract = ffi.from_handle(data)
    iid = provider.create_from_c()
    if iid:
        out.data = ffi.cast("void*", iid)
        out.contract_id = provider.contract_id


def _destroy_flat(data: Any, host: Any, iid: int, _cid: int) -> None:
    if data == ffi.NULL:
        return
    provider: PythonBackedContract = ffi.from_handle(data)
    if iid <= _MAX_INSTANCE_ID:
        provider.destroy_instance(iid)


if _FLAT:
    _vm_call_cb = ffi.callback(
        "void(*)(void*, uintptr_t, uint64_t, uint32_t, uintptr_t, uintptr_t, uintptr_t, uint64_t*)",
        _vm_call_flat,
        onerror=_on_error,
    )
    _create = ffi.callback("void(*)(void*, void*, void*, GuestContractInstance*)", _create_flat, onerror=_on_error)
    _destroy = ffi.callback("void(*)(void*, void*, uintptr_t, uint64_t)", _destroy_flat, onerror=_on_error)
else:

    def _vm_call_words(ld: Any, inst: Any, fn_id: int, args: int, out: int, arena: int, err: Any) -> None:
        _vm_call_flat(ld.data, inst.data, 0, fn_id, args, out, arena, err)

    def _create_words(ld: Any, host: Any, args: Any, out: Any) -> None:
        _create_flat(ld.data, host, args, out)

    def _destroy_words(ld: Any, host: Any, inst: Any) -> None:
        _destroy_flat(ld.data, host, _u(inst.data), 0)

    _vm_call_cb = ffi.callback(
        "void(*)(VmLoaderData, InstanceWords, uint32_t, uintptr_t, uintptr_t, uintptr_t, uint64_t*)",
        _vm_call_words,
        onerror=_on_error,
    )
    _create = ffi.callback(
        "void(*)(VmLoaderData, const HostApi*, const void*, GuestContractInstance*)", _create_words, onerror=_on_error
    )
    _destroy = ffi.callback(
        "void(*)(VmLoaderData, const HostApi*, GuestContractInstance)", _destroy_words, onerror=_on_error
    )

_vm_call: Final = ffi.cast("VmCallFn", _vm_call_cb)


def vm_interface(provider: ContractProvider, create: Any, destroy: Any, call: Any, loader_data: Any) -> Any:
    """A ``GuestContractInterface*`` of ``provider``'s contract, ``VirtualMachine`` dispatch, with
    these ``create_instance``/``destroy_instance``/``dispatch.vm.call`` pointers and ``loader_data``
    (a ``void*``; it must stay valid as long as the interface). Each is a pointer or its address."""
    iface = ffi.new("GuestContractInterface*")
    iface.contract_id = provider.contract_id
    iface.contract_version.major = provider.major
    iface.dispatch_type = DispatchType.VirtualMachine
    iface.create_instance = ffi.cast("CreateInstanceFn", create)
    iface.destroy_instance = ffi.cast("DestroyInstanceFn", destroy)
    iface.dispatch.vm.call = ffi.cast("VmCallFn", call)
    iface.dispatch.vm.loader_data.data = ffi.cast("void*", loader_data)
    return iface


def peer_interface(
    peer: Callable[..., Any],
    functions: tuple[int, int, int],
    provider: PythonBackedContract,
    state: Any,
    cidx: int,
    *,
    guard: bool,
    entries: dict[str, Any] | None,
) -> Any:
    """A ``GuestContractInterface*`` calling ``provider`` through C functions (the peer interface
    of ``luaplug_entry.h``: ``peer`` and ``peer_functions()`` of a backend's module that compiles
    it), over the state's contract ``cidx``; ``guard``: refuse a same-thread re-entry;
    ``entries``: the engine's ``create``/``destroy`` callables (``None``: Python serves both).

    The provider keeps the Peer (``loader_data``) alive as ``_c_handle``, as :func:`python_interface`
    does its handle.
    """
    handle = peer(provider, state, cidx, provider.contract_id, guard, entries)
    provider._c_handle = handle
    create, destroy, call = functions
    return vm_interface(provider, create, destroy, call, handle.address)


def python_interface(provider: PythonBackedContract) -> Any:
    """A ``GuestContractInterface*`` calling ``provider``.

    The provider keeps the handle (``loader_data``) alive as ``_c_handle``.
    """
    handle = ffi.new_handle(provider)
    provider._c_handle = handle
    return vm_interface(provider, _create, _destroy, _vm_call, handle)
