"""A C ``GuestContractInterface`` whose pointers call back into Python.

For engines whose dispatch lives in Python (lupa), every contract gets real ``vm.call`` /
``create_instance`` / ``destroy_instance`` pointers, so guests of any backend call it through
``HostApi`` (spec §13). ``loader_data`` holds a cffi handle to the provider; the handle lives as
long as the registration's keepalive list (released through the epoch).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from ..abi import AbiErrorCode, DispatchType
from ..abi import core_ffi as ffi
from ..contract import ContractProvider

__all__ = ["PythonBackedContract", "python_interface", "vm_interface"]

_callback_log: Final = logging.getLogger("luaplug.hostapi")


# Instance ids are Lua numbers (doubles): past 2**53 no id can name a live instance.
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


def _on_error(exc_type: Any, exc: Any, tb: Any) -> None:
    _callback_log.error("contract callback raised", exc_info=(exc_type, exc, tb))


def _u(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


# The VmCallFn, declared with word types (INTERNAL_CDEF): the pointers arrive as
# ints and the AbiError {u32 code; StringView message} is written as three words.
@ffi.callback(
    "void(*)(VmLoaderData, InstanceWords, uint32_t, uintptr_t, uintptr_t, uintptr_t, uint64_t*)",
    onerror=_on_error,
)
def _vm_call_words(loader_data: Any, inst: Any, fn_id: int, args: int, out: int, arena: int, err: Any) -> None:
    code: int = AbiErrorCode.InvalidPointer
    if loader_data.data != ffi.NULL:
        provider: PythonBackedContract = ffi.from_handle(loader_data.data)
        iid = inst.data
        if iid > _MAX_INSTANCE_ID:
            code = AbiErrorCode.FunctionNotAvailable  # never a live instance
        else:
            try:
                code = provider.dispatch_from_c(fn_id, iid, args, out, arena)
            except Exception:  # the caller's AbiError is written whatever happens
                _callback_log.exception("contract call from C failed")
                code = AbiErrorCode.Generic
    if err != ffi.NULL:
        err[0] = code  # code and its padding
        err[1] = 0  # message.ptr
        err[2] = 0  # message.len


_vm_call: Final = ffi.cast("VmCallFn", _vm_call_words)


@ffi.callback("void(*)(VmLoaderData, const HostApi*, const void*, GuestContractInstance*)", onerror=_on_error)
def _create(loader_data: Any, host: Any, args: Any, out: Any) -> None:
    if out == ffi.NULL:
        return
    out.data = ffi.NULL
    out.contract_id = 0
    if loader_data.data == ffi.NULL:
        return
    provider: PythonBackedContract = ffi.from_handle(loader_data.data)
    iid = provider.create_from_c()
    if iid:
        out.data = ffi.cast("void*", iid)
        out.contract_id = provider.contract_id


@ffi.callback("void(*)(VmLoaderData, const HostApi*, GuestContractInstance)", onerror=_on_error)
def _destroy(loader_data: Any, host: Any, inst: Any) -> None:
    if loader_data.data == ffi.NULL:
        return
    provider: PythonBackedContract = ffi.from_handle(loader_data.data)
    iid = _u(inst.data)
    if iid <= _MAX_INSTANCE_ID:
        provider.destroy_instance(iid)


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


def python_interface(provider: PythonBackedContract) -> Any:
    """A ``GuestContractInterface*`` calling ``provider``.

    The provider keeps the handle (``loader_data``) alive as ``_c_handle``.
    """
    handle = ffi.new_handle(provider)
    provider._c_handle = handle
    return vm_interface(provider, _create, _destroy, _vm_call, handle)
