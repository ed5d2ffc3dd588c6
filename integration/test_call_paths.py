"""Both call paths of an Instance give the same answers: the backend's compiled per-instance entry
and the pure-Python path a wheel built without a C compiler serves, forced here with
``LUAPLUG_NO_NATIVE_ENTRY=1`` (read when an instance is bound)."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.backend import NO_NATIVE_ENTRY


def address(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


@pytest.fixture(params=["native", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setenv(NO_NATIVE_ENTRY, "1")
    else:
        monkeypatch.delenv(NO_NATIVE_ENTRY, raising=False)
    return str(request.param)


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path, path: str) -> luaplug.Runtime:
    for name in ("adder", "faulty", "chatty", "counter", "echo", "consumer"):
        runtime.load(bundles / name)
    return runtime


def test_the_forced_path_serves_instances(rt: luaplug.Runtime, path: str) -> None:
    inst = rt.contract("iso.Adder@1").create_instance()
    python = [isinstance(fn, types.FunctionType) for fn in (inst.dispatch, inst.call)]
    if path == "python":
        assert python == [True, True]
    elif python != [False, False]:
        pytest.skip("this backend was built without its native entry")


def test_dispatch_with_addresses_pointers_and_keywords(rt: luaplug.Runtime) -> None:
    args = ffi.new("struct { int32_t a; int32_t b; } *", {"a": 40, "b": 2})
    out = ffi.new("int32_t*")
    for inst in (rt.contract("iso.Adder@1").default, rt.contract("iso.Adder@1").create_instance()):
        assert inst.dispatch(1) == 0
        assert inst.dispatch(0, address(args), address(out)) == 0 and out[0] == 42
        out[0] = 0
        assert inst.dispatch(0, args, out) == 0 and out[0] == 42
        out[0] = 0
        assert inst.call(fn_id=0, args=address(args), out=address(out)) is None and out[0] == 42
        with luaplug.CallArena(256, host=rt) as arena:
            out[0] = 0
            assert inst.dispatch(0, address(args), address(out), arena) == 0 and out[0] == 42
        with pytest.raises(ValueError):
            inst.dispatch(0, address(args), address(out), arena)  # closed


def test_errors(rt: luaplug.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    faulty = rt.contract("iso.Faulty@1").default
    with caplog.at_level(logging.ERROR, logger="luaplug.loader"):
        assert faulty.dispatch(0) == AbiErrorCode.Generic
    assert "Lua function call failed" in caplog.text and "boom from faulty" in caplog.text
    with pytest.raises(luaplug.DispatchError) as info:
        faulty.call(0)
    assert info.value.code == AbiErrorCode.Generic and "boom from faulty" in (info.value.lua_error or "")
    adder = rt.contract("iso.Adder@1").default
    assert adder.dispatch(1000) == AbiErrorCode.FunctionNotAvailable
    with pytest.raises(luaplug.DispatchError) as missing:
        adder.call(1000)
    assert missing.value.code == AbiErrorCode.FunctionNotAvailable
    for bad in (-1, 1 << 32):
        with pytest.raises(OverflowError):
            adder.dispatch(bad)
    with pytest.raises(TypeError):
        adder.dispatch("0")  # type: ignore[arg-type]
    inst = rt.contract("iso.Adder@1").create_instance()
    inst.destroy()
    assert inst.dispatch(1) == AbiErrorCode.StaleHandle


@contextmanager
def calling_back(fn: Callable[[], None]) -> Iterator[None]:
    """``fn`` runs from a log handler each time iso.Chatty logs, inside its call."""
    handler = logging.Handler(level=logging.INFO)
    handler.emit = lambda record: fn() if getattr(record, "scope", None) == "iso.chatty" else None  # type: ignore[method-assign]
    guest = logging.getLogger("luaplug.guest")
    level = guest.level
    guest.addHandler(handler)
    guest.setLevel(logging.INFO)
    try:
        yield
    finally:
        guest.removeHandler(handler)
        guest.setLevel(level)


def test_reentry_from_host_code_inside_a_call(rt: luaplug.Runtime) -> None:
    """Host code running inside a call of iso.Chatty calls it again through an instance bound
    before the call: ReentrantCall, on every path; another bundle is served."""
    chatty = rt.contract("iso.Chatty@1").default
    counter = rt.contract("iso.Counter@1").default
    slot = ffi.new("int64_t*")
    codes: list[int] = []

    def call_back() -> None:
        codes.append(chatty.dispatch(0))
        with pytest.raises(luaplug.DispatchError) as info:
            chatty.call(0)
        codes.append(info.value.code)
        codes.append(counter.dispatch(0, 0, address(slot)))

    with calling_back(call_back):
        assert chatty.dispatch(0) == 0
    assert codes == [AbiErrorCode.ReentrantCall, AbiErrorCode.ReentrantCall, 0]
    assert chatty.dispatch(0) == 0


def test_peer_call(rt: luaplug.Runtime) -> None:
    """iso.Consumer calls iso.Echo through the HostApi from inside a call."""
    data = "peer ✓".encode()
    buf = ffi.new("uint8_t[]", data)
    arg = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
    out = ffi.new("StringView*")
    with luaplug.CallArena(256, host=rt) as arena:
        rt.contract("iso.Consumer@1").create_instance().call(0, address(arg), address(out), arena)
        assert bytes(ffi.buffer(out.ptr, out.len)).decode() == "echo: peer ✓"
