"""polyplug 0.1.3's guest SDK helpers as a bundle written in polyplug's style uses them.

``luaplug/testing/bundles/sdktext`` follows polyplugc 0.1.3's glue (an author factory given the
host pointer; methods called with StringView cdata; returned Lua strings copied into the call
arena) and calls ``polyplug_abi``'s string and id helpers on the StringViews it is given, as
0.1.3's helpers take them, plus ``polyplug_guest.log`` and ``alloc_string``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.ids import guest_contract_id
from luaplug.testing._cdata import text_of

STARTS, ENDS, STRIP, SPLIT, SPLIT_DEFAULT, GUARD, COPY, LOG, GUEST_ID = range(9)


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    runtime.load(bundles / "sdktext")
    return runtime


def call(rt: luaplug.Runtime, fn_id: int, text: bytes, arg: bytes = b"") -> bytes:
    """``fn_id`` on the arguments ``(StringView text, StringView arg)``; the bytes it returns."""
    keep: list[Any] = []
    args = ffi.new("StringView[2]")
    for i, data in enumerate((text, arg)):
        buf = ffi.new("uint8_t[]", data or b"\0")
        keep.append(buf)
        args[i].ptr, args[i].len = buf, len(data)
    out = ffi.new("StringView*")
    with luaplug.CallArena(512, host=rt) as arena:
        code = rt.contract("iso.SdkText@1").default.dispatch(fn_id, args, out, arena)
        assert code == AbiErrorCode.Ok
        return text_of(out) if out.len else b""


def pieces(reply: bytes) -> list[bytes]:
    count, *parts = reply.split(b"\0")
    assert int(count) == len(parts)
    return parts


@pytest.mark.parametrize(
    ("text", "prefix", "starts", "stripped"),
    [(b"DECODED:a|b|1", b"DECODED:", True, b"a|b|1"), (b"a|b|1", b"DECODED:", False, b"a|b|1"),
     (b"abc", b"", True, b"abc"), (b"", b"x", False, b""), (b"a%b", b"a%", True, b"b"),
     (b"\xff\xfe", b"\xff", True, b"\xfe")],
)  # fmt: skip
def test_starts_with_and_strip_prefix_take_string_views(
    rt: luaplug.Runtime, text: bytes, prefix: bytes, starts: bool, stripped: bytes
) -> None:
    assert call(rt, STARTS, text, prefix) == str(starts).lower().encode()
    # 0.1.3 gives the whole text back when the prefix is absent
    assert call(rt, STRIP, text, prefix) == stripped


@pytest.mark.parametrize(
    ("text", "suffix", "ends"),
    [(b"report.lua", b".lua", True), (b"lua", b".lua", False), (b"abc", b"", True), (b"", b"", True)],
)
def test_ends_with_takes_string_views(rt: luaplug.Runtime, text: bytes, suffix: bytes, ends: bool) -> None:
    assert call(rt, ENDS, text, suffix) == str(ends).lower().encode()


@pytest.mark.parametrize(
    ("text", "delim", "parts"),
    [(b"name,value,42", b",", [b"name", b"value", b"42"]), (b"a,,b,", b",", [b"a", b"", b"b", b""]),
     (b"a.b%c", b".", [b"a", b"b%c"]), (b"a::b", b"::", [b"a", b"b"]), (b"", b",", []),
     (b"abc", b"", [b"abc"]), (b"\xff,\x01", b",", [b"\xff", b"\x01"])],
)  # fmt: skip
def test_split_takes_string_views(rt: luaplug.Runtime, text: bytes, delim: bytes, parts: list[bytes]) -> None:
    assert pieces(call(rt, SPLIT, text, delim)) == parts


def test_split_without_a_delimiter_gives_the_whole_text(rt: luaplug.Runtime) -> None:
    assert pieces(call(rt, SPLIT_DEFAULT, b"a b  c")) == [b"a b  c"]
    assert pieces(call(rt, SPLIT_DEFAULT, b"")) == []


def test_to_str_refuses_a_lua_string_the_other_helpers_take_one(rt: luaplug.Runtime) -> None:
    assert call(rt, GUARD, b"abc,d") == b"RAISED,true,bc,d,2"


@pytest.mark.parametrize("data", [b"through the host", b"", b"\xff\x00x"])
def test_alloc_string_with_the_factory_host(rt: luaplug.Runtime, data: bytes) -> None:
    assert call(rt, COPY, data) == data


def test_log_with_the_factory_host(rt: luaplug.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(1)
    assert call(rt, LOG, b"decoder online", b"guest.sdktext") == b""
    records = [r for r in caplog.records if r.name == "luaplug.guest"]
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.WARNING, "[guest.sdktext] decoder online")]


@pytest.mark.parametrize(("name", "major"), [(b"pipeline.Decoder", b"1"), (b"iso.Counter", b"3")])
def test_guest_contract_id(rt: luaplug.Runtime, name: bytes, major: bytes) -> None:
    expected = guest_contract_id(name.decode(), int(major))
    assert call(rt, GUEST_ID, name, major) == f"{expected:016x}".encode()
