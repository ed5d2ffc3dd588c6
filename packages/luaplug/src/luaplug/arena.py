"""The call arena (spec §8): per-call scratch memory a guest bumps by address.

A :class:`CallArena` owns a ``CallArena`` C struct and its primary buffer.
Guests (Lua code, C) allocate from it through the struct alone, so the Python
methods here and every engine's ``arena_alloc`` follow the same algorithm:
bump ``[cur, end)``; else the first overflow block with room; else a new
block of ``max(24 + align + size, 4096)`` bytes from ``host->alloc``.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

from .abi import core_ffi as ffi

if TYPE_CHECKING:
    from .hostapi import HostApi

__all__ = ["CallArena"]


class _HostOwner(Protocol):
    """A runtime, as an arena sees it: the owner of a ``HostApi``."""

    @property
    def host_api(self) -> HostApi: ...


_HEADER: Final = 24  # sizeof(ArenaOverflowBlock); usable bytes follow it
_MIN_BLOCK: Final = 4096


def _addr(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


class CallArena:
    """Bump-allocated C memory for call results.

    :param capacity: size of the primary buffer in bytes
    :param host: a :class:`~luaplug.Runtime` or the address of a ``HostApi``
        whose ``alloc``/``free`` serve overflow blocks; ``None`` uses luaplug's
        default allocator, so a standalone arena never refuses what memory allows

    Not thread-safe: one arena belongs to one caller at a time. Memory handed
    out stays valid until :meth:`reset` or :meth:`close`.
    """

    __slots__ = ("__weakref__", "_address", "_base", "_buf", "_host", "_keep", "_struct", "_words")

    def __init__(self, capacity: int = 4096, host: _HostOwner | int | None = None) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        from .hostapi import default_host

        # SAFETY: _keep holds the Python owner of the HostApi struct, so the
        # struct outlives every overflow block it allocated (freed in close()).
        self._keep: object = None
        if host is None:
            self._keep = default_host()
            host_addr = self._keep.address
        elif isinstance(host, int):
            host_addr = host
        else:
            self._keep = host.host_api
            host_addr = host.host_api.address
        self._host: Any = ffi.cast("const HostApi*", host_addr)
        # SAFETY: the buffer and the struct are owned by this object; the struct
        # points into the buffer, and both live until close() drops them.
        self._buf: Any = ffi.new("uint8_t[]", max(capacity, 1))
        self._struct: Any = ffi.new("CallArena*")
        base = ffi.cast("uint8_t*", self._buf)
        self._struct.cur = base
        self._struct.base = base
        self._struct.end = base + capacity
        self._struct.host = self._host
        self._struct.first_overflow = ffi.NULL
        self._address: int = _addr(self._struct)
        # SAFETY: the struct's five pointer words as integers (cur @0, base @16,
        # first_overflow @32), for a reset that costs two integer stores.
        self._words: Any = ffi.cast("uintptr_t*", self._struct)
        self._base: int = _addr(base)

    @property
    def address(self) -> int:
        """Address of the ``CallArena`` struct (what a dispatch passes)."""
        if not self._address:
            raise ValueError("the arena is closed")
        return self._address

    @property
    def capacity(self) -> int:
        """Size of the primary buffer."""
        return int(_addr(self._struct.end) - _addr(self._struct.base))

    @property
    def overflow_blocks(self) -> int:
        """How many overflow blocks are chained."""
        n = 0
        blk = self._struct.first_overflow
        while blk != ffi.NULL:
            n += 1
            blk = blk.next
        return n

    def alloc(self, size: int, align: int = 1) -> int:
        """Allocate ``size`` bytes aligned to ``align``.

        :returns: the address, or 0 when ``size`` is 0, ``align`` is not a power
            of two, or no memory could be had
        """
        if not self._address:
            raise ValueError("the arena is closed")
        if size <= 0 or align <= 0 or align & (align - 1):
            return 0
        a = self._struct
        mask = align - 1
        cur = _addr(a.cur)
        p = (cur + mask) & ~mask
        if p + size <= _addr(a.end):
            a.cur = ffi.cast("uint8_t*", p + size)
            return p
        blk = a.first_overflow
        while blk != ffi.NULL:
            start = _addr(blk)
            p = (start + int(blk.used) + mask) & ~mask
            if p + size <= start + blk.capacity:
                blk.used = p + size - start
                return p
            blk = blk.next
        host = self._host
        if host == ffi.NULL:
            return 0
        cap = max(_HEADER + align + size, _MIN_BLOCK)
        raw = host.alloc(host, cap, 8)
        if raw == ffi.NULL:
            return 0
        blk = ffi.cast("ArenaOverflowBlock*", raw)
        blk.next = a.first_overflow
        blk.capacity = cap
        start = _addr(blk)
        p = (start + _HEADER + mask) & ~mask
        blk.used = p + size - start
        a.first_overflow = blk
        return p

    def reset(self) -> None:
        """Rewind: the primary buffer and every block are empty again; nothing is freed."""
        w = self._words
        w[0] = self._base
        if w[4]:
            blk = self._struct.first_overflow
            while blk != ffi.NULL:
                blk.used = _HEADER
                blk = blk.next

    def close(self) -> None:
        """Free every overflow block through ``host->free`` and drop the buffer."""
        if not self._address:
            return
        a = self._struct
        host = self._host
        blk = a.first_overflow
        while blk != ffi.NULL:
            nxt = blk.next
            host.free(host, ffi.cast("uint8_t*", blk), blk.capacity, 8)
            blk = nxt
        a.first_overflow = ffi.NULL
        a.cur = a.base = a.end = ffi.NULL
        self._base = 0  # a reset after close keeps cur null
        self._address = 0

    def __enter__(self) -> CallArena:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to free into
            pass
