"""A guest calling another bundle's contract through the HostApi (spec §13)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi


def string_arg(text: str) -> tuple[Any, Any]:
    data = text.encode("utf-8")
    buf = ffi.new("uint8_t[]", data or b"\0")
    return ffi.new("StringView*", {"ptr": buf, "len": len(data)}), buf


def text_of(sv: Any) -> str:
    return bytes(ffi.buffer(sv.ptr, sv.len)).decode("utf-8")


def relay(rt: luaplug.Runtime, text: str, arena: luaplug.CallArena | None) -> str:
    arg, _keep = string_arg(text)
    out = ffi.new("StringView*")
    rt.contract("iso.Consumer@1").default.call(0, arg, out, arena)
    result = text_of(out)
    if arena is None:
        host = ffi.cast("HostApi*", rt.host_api_address)
        host.free(host, ffi.cast("uint8_t*", out.ptr), out.len, 1)
    return result


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "consumer")
    return runtime


@pytest.mark.protocol
@pytest.mark.parametrize("text", ["hi", "wörld ✓", "", "x" * 5000])
def test_consumer_calls_echo(rt: luaplug.Runtime, text: str) -> None:
    with luaplug.CallArena(256, host=rt) as arena:
        assert relay(rt, text, arena) == "echo: " + text


@pytest.mark.protocol
def test_consumer_without_an_arena(rt: luaplug.Runtime) -> None:
    for i in range(200):
        assert relay(rt, f"n{i}", None) == f"echo: n{i}"


@pytest.mark.protocol
def test_echo_called_directly_without_an_arena_returns_host_memory(rt: luaplug.Runtime) -> None:
    arg, _keep = string_arg("direct")
    out = ffi.new("StringView*")
    rt.contract("iso.Echo@1").default.call(0, arg, out)
    assert text_of(out) == "direct"
    host = ffi.cast("HostApi*", rt.host_api_address)
    host.free(host, ffi.cast("uint8_t*", out.ptr), out.len, 1)


def test_consumer_when_echo_is_missing(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "consumer")
    with pytest.raises(luaplug.DispatchError) as info:
        relay(runtime, "anyone?", None)
    assert info.value.code == AbiErrorCode.Generic
    assert info.value.lua_error is not None
    assert "echo not found" in info.value.lua_error
    runtime.load(bundles / "echo")
    assert relay(runtime, "now", None) == "echo: now"
    runtime.unload("echo")
    with pytest.raises(luaplug.DispatchError) as info:
        relay(runtime, "gone?", None)
    assert "echo not found" in (info.value.lua_error or "")


@pytest.mark.protocol
def test_consumer_follows_an_echo_reload(runtime: luaplug.Runtime, bundles: Path, copy_bundle: Any) -> None:
    echo_dir: Path = copy_bundle("echo")
    runtime.load(echo_dir)
    runtime.load(bundles / "consumer")
    assert relay(runtime, "abc", None) == "echo: abc"
    main = echo_dir / "main.lua"
    src = main.read_text("utf-8")
    assert "guest.alloc_string_arena(arena_alloc, arena, s)" in src
    main.write_text(src.replace("arena_alloc, arena, s)", "arena_alloc, arena, s:upper())"), "utf-8")
    runtime.reload("echo")
    assert relay(runtime, "abc", None) == "echo: ABC"


@pytest.mark.protocol
def test_peer_calls_from_two_threads(rt: luaplug.Runtime) -> None:
    errors: list[str] = []
    barrier = threading.Barrier(2)

    def through_consumer() -> None:
        with luaplug.CallArena(512, host=rt) as arena:
            barrier.wait()
            for i in range(500):
                arena.reset()
                got = relay(rt, f"c{i}", arena)
                if got != f"echo: c{i}":
                    errors.append(got)
                    return

    def echo_directly() -> None:
        echo = rt.contract("iso.Echo@1").create_instance()
        with luaplug.CallArena(512, host=rt) as arena:
            barrier.wait()
            for i in range(500):
                arena.reset()
                arg, _keep = string_arg(f"e{i}")
                out = ffi.new("StringView*")
                code = echo.dispatch(0, arg, out, arena)
                if code or text_of(out) != f"e{i}":
                    errors.append(f"echo #{i}: {code}")
                    return

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # reported by the main thread
                errors.append(repr(exc))

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (through_consumer, echo_directly)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.parametrize("backend_is", ["consumer", "echo"])
def test_peer_calls_across_backends(bundles: Path, backend: str, backend_is: str) -> None:
    """A bundle on ``backend`` calls a bundle on each other available backend through the C
    interface, and the other way round."""
    others = [name for name in luaplug.available_backends() if name != backend]
    if not others:
        pytest.skip("needs a second available backend")
    for other in others:
        consumer_on, echo_on = (backend, other) if backend_is == "consumer" else (other, backend)
        _peer_calls_across(bundles, consumer_on, echo_on)


def _peer_calls_across(bundles: Path, consumer_on: str, echo_on: str) -> None:
    with luaplug.Runtime(consumer_on, hot_reload=True) as rt:
        echo = rt.load(bundles / "echo", backend=echo_on)
        consumer = rt.load(bundles / "consumer")
        assert (echo.backend, consumer.backend) == (echo_on, consumer_on)
        with luaplug.CallArena(64, host=rt) as arena:
            for i in range(300):
                arena.reset()
                assert relay(rt, f"x{i} ✓" * (i % 40), arena) == "echo: " + f"x{i} ✓" * (i % 40)
        assert relay(rt, "no arena", None) == "echo: no arena"
        rt.reload("echo")  # the echo bundle stays on its own backend
        assert rt.bundles["echo"].backend == echo_on
        assert relay(rt, "after reload", None) == "echo: after reload"
        rt.unload("echo")
        arg, _keep = string_arg("gone")
        out = ffi.new("StringView*")
        assert rt.contract("iso.Consumer@1").default.dispatch(0, arg, out) != 0
