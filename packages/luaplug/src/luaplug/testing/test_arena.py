"""Strings through the call arena (spec §8): bump allocation, overflow blocks, reset, host fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.testing._cdata import address, rep_arg, string_arg, text_of

HEADER = 24


def in_primary_buffer(arena: luaplug.CallArena, ptr: Any, size: int) -> bool:
    a = ffi.cast("CallArena*", arena.address)
    return address(a.base) <= address(ptr) and address(ptr) + size <= address(a.end)


def blocks(arena: luaplug.CallArena) -> list[tuple[int, int]]:
    """``(start, capacity)`` of every overflow block, head first."""
    out = []
    blk = ffi.cast("CallArena*", arena.address).first_overflow
    while blk != ffi.NULL:
        out.append((address(blk), int(blk.capacity)))
        blk = blk.next
    return out


def block_of(arena: luaplug.CallArena, sv: Any) -> int:
    """Index (from the head) of the overflow block holding ``sv``'s bytes, or -1."""
    p = address(sv.ptr)
    for i, (start, cap) in enumerate(blocks(arena)):
        if start + HEADER <= p and p + sv.len <= start + cap:
            return i
    return -1


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    runtime.load(bundles / "greeter")
    return runtime


@pytest.mark.protocol
@pytest.mark.parametrize("name", ["world", "wörld ✓ 日本語", ""])
def test_greet_through_the_call_arena(rt: luaplug.Runtime, name: str) -> None:
    arg, _keep = string_arg(name.encode("utf-8"))
    out = ffi.new("StringView*")
    expected = f"hello, {name}".encode()
    with luaplug.CallArena(4096, host=rt) as arena:
        rt.contract("iso.Greeter@1").default.call(0, arg, out, arena)
        assert text_of(out) == expected
        assert in_primary_buffer(arena, out.ptr, out.len)
        assert arena.overflow_blocks == 0


@pytest.mark.protocol
def test_results_stay_valid_until_reset(rt: luaplug.Runtime) -> None:
    greeter = rt.contract("iso.Greeter@1").default
    with luaplug.CallArena(1024, host=rt) as arena:
        results = []
        for name in ("ann", "bob", "zoë"):
            arg, _keep = string_arg(name.encode())
            out = ffi.new("StringView*")
            greeter.call(0, arg, out, arena)
            results.append((name, out))
        for name, out in results:
            assert text_of(out) == f"hello, {name}".encode()
        arena.reset()
        a = ffi.cast("CallArena*", arena.address)
        assert a.cur == a.base
        arg, _keep = string_arg(b"again")
        out = ffi.new("StringView*")
        greeter.call(0, arg, out, arena)
        assert address(out.ptr) == address(a.base)  # the reset rewound the buffer


@pytest.mark.protocol
def test_result_larger_than_the_arena_goes_to_an_overflow_block(rt: luaplug.Runtime) -> None:
    piece = "é".encode()
    arg = ffi.new("struct { StringView s; uint32_t n; } *")
    buf = ffi.new("uint8_t[]", piece)
    arg.s.ptr = buf
    arg.s.len = len(piece)
    arg.n = 3000  # 6000 bytes: more than 4 KiB and more than the arena
    out = ffi.new("StringView*")
    rep = rt.contract("iso.Greeter@1").default
    with luaplug.CallArena(64, host=rt) as arena:
        rep.call(1, arg, out, arena)
        assert text_of(out) == piece * 3000
        assert text_of(out).decode("utf-8") == "é" * 3000
        assert arena.overflow_blocks == 1
        assert not in_primary_buffer(arena, out.ptr, out.len)
        block = ffi.cast("CallArena*", arena.address).first_overflow
        start = address(block)
        assert start + 24 <= address(out.ptr)
        assert address(out.ptr) + out.len <= start + block.capacity
        assert block.used >= 24 + out.len
        # a small result still fits the primary buffer
        small, _keep = string_arg(b"x")
        out2 = ffi.new("StringView*")
        rep.call(0, small, out2, arena)
        assert in_primary_buffer(arena, out2.ptr, out2.len)
        assert text_of(out) == piece * 3000  # the big one is untouched
        # after a reset the block is reused, not reallocated
        arena.reset()
        assert block.used == 24
        rep.call(1, arg, out, arena)
        assert arena.overflow_blocks == 1
        assert text_of(out) == piece * 3000


@pytest.mark.protocol
def test_long_result_with_the_default_arena_size(rt: luaplug.Runtime) -> None:
    arg = ffi.new("struct { StringView s; uint32_t n; } *")
    buf = ffi.new("uint8_t[]", b"ab")
    arg.s.ptr, arg.s.len, arg.n = buf, 2, 2500
    out = ffi.new("StringView*")
    with luaplug.CallArena(host=rt) as arena:
        rt.contract("iso.Greeter@1").default.call(1, arg, out, arena)
        assert text_of(out) == b"ab" * 2500
        assert arena.overflow_blocks == 1


@pytest.mark.protocol
def test_null_arena_falls_back_to_host_alloc(rt: luaplug.Runtime) -> None:
    arg, _keep = string_arg("nö arena".encode())
    out = ffi.new("StringView*")
    rt.contract("iso.Greeter@1").default.call(0, arg, out)
    assert text_of(out) == "hello, nö arena".encode()
    # host memory: the caller frees it through the HostApi
    host = ffi.cast("HostApi*", rt.host_api_address)
    host.free(host, ffi.cast("uint8_t*", out.ptr), out.len, 1)


@pytest.mark.protocol
def test_overflow_chain_is_walked(rt: luaplug.Runtime) -> None:
    rep = rt.contract("iso.Greeter@1").default
    results = []
    with luaplug.CallArena(64, host=rt) as arena:

        def call(n: int) -> Any:
            arg, _keep = rep_arg(b"a", n)
            out = ffi.new("StringView*")
            rep.call(1, arg, out, arena)
            assert text_of(out) == b"a" * n
            results.append((out, n))
            return out

        first = call(3000)  # block 1: 4096 bytes, 1072 left
        assert [cap for _, cap in blocks(arena)] == [4096]
        assert block_of(arena, first) == 0
        second = call(2000)  # does not fit block 1: block 2 (2072 left) goes to the head
        assert [cap for _, cap in blocks(arena)] == [4096, 4096]
        assert block_of(arena, second) == 0
        assert block_of(arena, call(2000)) == 0  # the head block has room (72 bytes left)
        assert block_of(arena, call(1000)) == 1  # only the older block has room
        assert len(blocks(arena)) == 2
        big = call(5000)  # nothing has room; a block sized for it
        assert [cap for _, cap in blocks(arena)] == [HEADER + 1 + 5000, 4096, 4096]
        assert block_of(arena, big) == 0
        for out, n in results:  # nothing was overwritten
            assert text_of(out) == b"a" * n


@pytest.mark.protocol
def test_arena_without_a_host_refuses_what_does_not_fit(rt: luaplug.Runtime) -> None:
    """An arena struct with no host serves its buffer only; beyond that arena_alloc gives 0."""
    buf = ffi.new("uint8_t[]", 16)
    arena = ffi.new("CallArena*")
    arena.cur = arena.base = buf
    arena.end = buf + 16
    arena.host = ffi.NULL
    arena.first_overflow = ffi.NULL
    vm = ffi.cast("GuestContractInterface*", rt.contract("iso.Greeter@1").interface_address).dispatch.vm
    inst = ffi.new("GuestContractInstance*")
    err = ffi.new("AbiError*")
    out = ffi.new("StringView*")
    arg, _keep = string_arg(b"somebody with a long name")
    vm.call(vm.loader_data, inst[0], 0, arg, out, arena, err)
    assert err.code == luaplug.AbiErrorCode.Generic  # the greeter raised on a 0 address
    assert arena.first_overflow == ffi.NULL
    arg, _keep = string_arg(b"x")
    vm.call(vm.loader_data, inst[0], 0, arg, out, arena, err)
    assert err.code == 0
    assert text_of(out) == b"hello, x"
    assert address(buf) <= address(out.ptr) < address(buf) + 16


def test_a_closed_arena_is_refused(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "greeter")
    inst = runtime.contract("iso.Greeter@1").default
    arena = luaplug.CallArena(64, host=runtime)
    arena.close()
    with pytest.raises(ValueError, match="closed"):
        inst.dispatch(0, 0, 0, arena)
    with pytest.raises(ValueError, match="closed"):
        inst.call(0, 0, 0, arena)
