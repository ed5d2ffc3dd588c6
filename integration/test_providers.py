"""Several providers of one contract; handle generations (runtime-semantics "Registry and handles")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import luaplug
from luaplug.abi import core_ffi as ffi
from luaplug.ids import guest_contract_id

ECHO_ID = guest_contract_id("iso.Echo", 1)
NULL_INDEX = 0xFFFFFFFF


def echo(rt: luaplug.Runtime, text: str) -> str:
    data = text.encode()
    buf = ffi.new("uint8_t[]", data or b"\0")
    sv = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
    out = ffi.new("StringView*")
    with luaplug.CallArena(128, host=rt) as arena:
        rt.contract("iso.Echo@1").default.call(0, sv, out, arena)
        return bytes(ffi.buffer(out.ptr, out.len)).decode()


def relay(rt: luaplug.Runtime, text: str) -> str:
    data = text.encode()
    buf = ffi.new("uint8_t[]", data or b"\0")
    sv = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
    out = ffi.new("StringView*")
    with luaplug.CallArena(128, host=rt) as arena:
        rt.contract("iso.Consumer@1").default.call(0, sv, out, arena)
        return bytes(ffi.buffer(out.ptr, out.len)).decode()


def host(rt: luaplug.Runtime) -> Any:
    return ffi.cast("HostApi*", rt.host_api_address)


def test_first_registered_wins_and_the_next_takes_over(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "echo_alt")
    runtime.load(bundles / "consumer")
    assert runtime.contracts().count("iso.Echo@1") == 2
    assert echo(runtime, "a") == "a"
    assert relay(runtime, "b") == "echo: b"
    runtime.unload("echo")
    assert echo(runtime, "a") == "alt:a"
    assert relay(runtime, "b") == "echo: alt:b"
    runtime.load(bundles / "echo")  # registered after echo_alt now: echo_alt stays first
    assert relay(runtime, "c") == "echo: alt:c"


def test_min_major(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    h = host(runtime)
    assert h.find_guest_contract(h, ECHO_ID, 0).index != NULL_INDEX
    assert h.find_guest_contract(h, ECHO_ID, 1).index != NULL_INDEX
    assert h.find_guest_contract(h, ECHO_ID, 2).index == NULL_INDEX


def test_handles_go_stale_on_unload_and_follow_reloads(runtime: luaplug.Runtime, bundles: Path) -> None:
    h = host(runtime)
    runtime.load(bundles / "echo")
    first = h.find_guest_contract(h, ECHO_ID, 1)
    runtime.reload("echo")
    assert h.resolve_guest_contract(h, first) != ffi.NULL  # same generation, new interface
    assert h.find_guest_contract(h, ECHO_ID, 1).generation == first.generation
    runtime.unload("echo")
    assert h.resolve_guest_contract(h, first) == ffi.NULL
    runtime.load(bundles / "echo")
    second = h.find_guest_contract(h, ECHO_ID, 1)
    assert (second.index, second.generation) != (first.index, first.generation)
    assert h.resolve_guest_contract(h, first) == ffi.NULL  # a reused slot does not revive old handles
    assert h.resolve_guest_contract(h, second) != ffi.NULL


def test_each_providers_handle_is_its_own(runtime: luaplug.Runtime, bundles: Path) -> None:
    h = host(runtime)
    runtime.load(bundles / "echo")
    runtime.load(bundles / "echo_alt")
    first = h.find_guest_contract(h, ECHO_ID, 1)
    runtime.unload("echo")
    assert h.resolve_guest_contract(h, first) == ffi.NULL
    alt = h.find_guest_contract(h, ECHO_ID, 1)
    assert alt.index != NULL_INDEX and h.resolve_guest_contract(h, alt) != ffi.NULL
