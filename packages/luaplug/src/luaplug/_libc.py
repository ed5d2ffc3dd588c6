"""The C allocator luaplug hands out memory from (``HostApi.alloc``/``free``)."""

from __future__ import annotations

from typing import Any, Final

from .abi import core_ffi as _ffi

# The functions are declared in the core's precompiled FFI (abi.LIBC_CDEF).
# SAFETY: dlopen(None) gives the C library already linked into the process.
_C: Final[Any] = _ffi.dlopen(None)

_slot: Final[Any] = _ffi.new("void**")


def malloc(size: int, align: int) -> int:
    """Allocate ``size`` bytes aligned to ``align`` (a power of two); 0 on failure."""
    if size <= 0 or align <= 0 or align & (align - 1):
        return 0
    if align <= 16:
        return int(_ffi.cast("uintptr_t", _C.malloc(size)))
    if _C.posix_memalign(_slot, max(align, _ffi.sizeof("void*")), size) != 0:
        return 0
    return int(_ffi.cast("uintptr_t", _slot[0]))


def free(address: int) -> None:
    """Free memory from :func:`malloc` (0 is a no-op)."""
    if address:
        _C.free(_ffi.cast("void*", address))


def thread_id_function_address() -> int:
    """Address of ``pthread_self``: Lua code calls it to learn which thread runs
    it, in the numbering :func:`threading.get_ident` uses."""
    return int(_ffi.cast("uintptr_t", _C.pthread_self))
