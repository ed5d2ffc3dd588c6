"""Bundles written with the guest SDK (polyplug_abi, polyplug_guest), on every backend.

The SDK behaves as polyplug 0.1.3's: ``to_str`` copies a StringView's bytes whatever they
are (UTF-8 or not), ``to_str_utf8`` is the checking variant. Its helpers run on every call,
so they must not stop LuaJIT from compiling the handlers that use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode, DispatchError
from luaplug.abi import ffi
from luaplug.testing._cdata import string_arg

NOT_UTF8 = [b"\xff,x", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe2\x28\xa1", b"\x80", b"a\x00\xfe"]


def raw_of(sv: Any) -> bytes:
    return bytes(ffi.buffer(sv.ptr, sv.len)) if sv.len else b""


def call_text(rt: luaplug.Runtime, contract: str, fn_id: int, data: bytes) -> tuple[int, bytes]:
    """(code, result bytes) of ``fn_id`` on ``data`` through a call arena."""
    arg, _keep = string_arg(data)
    out = ffi.new("StringView*")
    with luaplug.CallArena(256, host=rt) as arena:
        code = rt.contract(contract).default.dispatch(fn_id, arg, out, arena)
        return code, raw_of(out)


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "sdkuser")
    return runtime


@pytest.mark.parametrize("data", NOT_UTF8)
def test_to_str_copies_bytes_that_are_not_utf8(rt: luaplug.Runtime, data: bytes) -> None:
    # polyplug's to_str copies the bytes: the echo answers 0 with them, not a Generic error.
    assert call_text(rt, "iso.Echo@1", 0, data) == (AbiErrorCode.Ok, data)
    assert call_text(rt, "iso.SdkUser@1", 0, data) == (AbiErrorCode.Ok, b"hello, " + data)


@pytest.mark.parametrize("data", ["wörld ✓ 日本語".encode(), b"", b"plain"])
def test_to_str_utf8_takes_utf8(rt: luaplug.Runtime, data: bytes) -> None:
    assert call_text(rt, "iso.SdkUser@1", 1, data) == (AbiErrorCode.Ok, data)


@pytest.mark.parametrize("data", NOT_UTF8[:-1])
def test_to_str_utf8_refuses_what_is_not_utf8(rt: luaplug.Runtime, data: bytes) -> None:
    arg, _keep = string_arg(data)
    out = ffi.new("StringView*")
    with luaplug.CallArena(256, host=rt) as arena, pytest.raises(DispatchError) as info:
        rt.contract("iso.SdkUser@1").default.call(1, arg, out, arena)
    assert info.value.code == AbiErrorCode.Generic
    assert "to_str_utf8: invalid utf-8 at byte" in str(info.value)


def test_sdk_helpers_do_not_stop_the_jit(rt: luaplug.Runtime) -> None:
    """No trace started in the SDK, or aborted in it or in the host prelude, over many SDK calls."""
    arg, _keep = string_arg(b"world")
    out = ffi.new("StringView*")
    greet = rt.contract("iso.SdkUser@1").default
    with luaplug.CallArena(256, host=rt) as arena:
        for _ in range(3000):
            arena.reset()
            assert greet.dispatch(0, arg, out, arena) == AbiErrorCode.Ok
        assert raw_of(out) == b"hello, world"
        arena.reset()
        assert greet.dispatch(2, 0, out, arena) == AbiErrorCode.Ok
        report = raw_of(out).decode()
    first, *aborts = report.splitlines()
    assert int(first.removeprefix("traces=")) >= 1, report  # the JIT is on and compiled the calls
    assert aborts == []
