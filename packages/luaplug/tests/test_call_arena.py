"""Spec §8: the call arena."""

from __future__ import annotations

from typing import Any

import pytest

from luaplug import CallArena
from luaplug.abi import core_ffi as ffi
from luaplug.hostapi import HostApi


def _struct(a: CallArena) -> Any:
    return ffi.cast("CallArena*", a.address)


def _u(p: Any) -> int:
    return int(ffi.cast("uintptr_t", p))


def test_refuses_zero_size_and_bad_alignment() -> None:
    with CallArena(64) as a:
        assert a.alloc(0) == 0
        assert a.alloc(8, 3) == 0
        assert a.alloc(8, 0) == 0


def test_bumps_aligned_inside_the_buffer() -> None:
    with CallArena(64) as a:
        s = _struct(a)
        base = _u(s.base)
        p1 = a.alloc(3)
        p2 = a.alloc(8, 8)
        assert p1 == base
        assert p2 % 8 == 0 and p2 >= base + 3 and p2 + 8 <= _u(s.end)
        assert _u(s.cur) == p2 + 8


def test_overflow_blocks_chain_and_reuse_after_reset() -> None:
    with CallArena(16) as a:
        s = _struct(a)
        big = a.alloc(5000)
        assert big != 0 and a.overflow_blocks == 1
        blk = s.first_overflow
        assert blk.capacity == max(24 + 1 + 5000, 4096)
        assert big == _u(blk) + 24
        small = a.alloc(100)  # primary is too small: served... by a new block (first block is full)
        assert small != 0
        n = a.overflow_blocks
        a.reset()
        assert _u(s.cur) == _u(s.base)
        b = s.first_overflow
        while b != ffi.NULL:
            assert b.used == 24
            b = b.next
        again = a.alloc(5000)
        assert a.overflow_blocks == n  # reused, nothing new allocated
        assert again != 0


def test_serves_from_first_block_with_room() -> None:
    with CallArena(0) as a:
        p = a.alloc(10)
        q = a.alloc(10)
        assert a.overflow_blocks == 1
        assert q == p + 10


class _CountingHost:
    def __init__(self) -> None:
        self.api = HostApi(None)
        self.allocs: list[int] = []
        self.frees: list[tuple[int, int, int]] = []
        keep = self

        @ffi.callback("uint8_t*(*)(const HostApi*, size_t, size_t)")
        def alloc(host: Any, size: int, align: int) -> Any:
            buf = ffi.new("uint8_t[]", size)
            keep.allocs.append(size)
            keep._bufs.append(buf)
            return ffi.cast("uint8_t*", buf)

        @ffi.callback("void(*)(const HostApi*, uint8_t*, size_t, size_t)")
        def free(host: Any, ptr: Any, size: int, align: int) -> None:
            keep.frees.append((_u(ptr), size, align))

        self._bufs: list[Any] = []
        self._cbs = (alloc, free)
        self.api.struct.alloc = alloc
        self.api.struct.free = free


def test_uses_host_alloc_and_frees_every_block_on_close() -> None:
    host = _CountingHost()
    a = CallArena(8, host=host.api.address)
    p1 = a.alloc(5000)
    p2 = a.alloc(6000)
    assert p1 and p2
    assert host.allocs == [24 + 1 + 5000, 24 + 1 + 6000]
    blocks = []
    b = _struct(a).first_overflow
    while b != ffi.NULL:
        blocks.append((_u(b), int(b.capacity), 8))
        b = b.next
    a.close()
    assert sorted(host.frees) == sorted(blocks)
    with pytest.raises(ValueError):
        a.alloc(1)


def test_no_host_means_null_on_overflow() -> None:
    a = CallArena(8, host=0)
    assert a.alloc(4) != 0
    assert a.alloc(100) == 0
    a.close()
