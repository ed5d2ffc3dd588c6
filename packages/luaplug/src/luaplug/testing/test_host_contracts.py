"""Host contracts served from Python (Runtime.provide) and from guests (register_host_contract)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode, typed
from luaplug.abi import core_ffi as ffi
from luaplug.ids import host_contract_id

MATH = "host.Math@1"
MATH_ID = host_contract_id("host.Math", 1)


class Math:
    def __init__(self) -> None:
        self.calls = 0

    def add(self, a: int, b: int) -> int:
        self.calls += 1
        return a + b

    def greet(self, who: str) -> str:
        return f"hello {who} ✓"

    def boom(self) -> int:
        raise RuntimeError("kaput")

    def tally(self) -> int:
        return self.calls


def u32(value: int) -> Any:
    return ffi.new("uint32_t*", value)


def call_u32(rt: luaplug.Runtime, fn_id: int, arg: int = 0) -> int:
    out = ffi.new("uint32_t*")
    rt.contract("svc.HostUser@1").default.call(fn_id, u32(arg), out)
    return int(out[0])


def add(rt: luaplug.Runtime, a: int, b: int) -> int:
    args = ffi.new("int32_t[2]", [a, b])
    out = ffi.new("int32_t*")
    rt.contract("svc.HostUser@1").default.call(1, args, out)
    return int(out[0])


def greet(rt: luaplug.Runtime, who: str) -> str:
    data = who.encode()
    buf = ffi.new("uint8_t[]", data or b"\0")
    sv = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
    out = ffi.new("StringView*")
    with luaplug.CallArena(256, host=rt) as arena:
        rt.contract("svc.HostUser@1").default.call(2, sv, out, arena)
        return bytes(ffi.buffer(out.ptr, out.len)).decode()


def why(rt: luaplug.Runtime, min_version: int = 0) -> str:
    """``get_last_error`` as the guest reads it right after its ``get_host_contract`` call."""
    out = ffi.new("StringView*")
    with luaplug.CallArena(256, host=rt) as arena:
        rt.contract("svc.HostUser@1").default.call(6, u32(min_version), out, arena)
        return bytes(ffi.buffer(out.ptr, out.len)).decode() if out.len else ""


@pytest.fixture
def api(bundles: Path) -> Path:
    return bundles / "hostuser" / "api.toml"


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    runtime.load(bundles / "hostuser")
    return runtime


def test_a_guest_calls_a_python_host_contract(rt: luaplug.Runtime, api: Path) -> None:
    impl = Math()
    hc = rt.provide(MATH, impl, api=api)
    assert isinstance(hc, luaplug.HostContract)
    assert hc.contract_id == MATH_ID and rt.host_contracts() == [MATH_ID]
    assert add(rt, 2, 40) == 42
    assert add(rt, -5, 3) == -2
    assert impl.calls == 2
    assert greet(rt, "wörld") == "guest got: hello wörld ✓"
    assert greet(rt, "") == "guest got: hello  ✓"


def test_the_interface_layout(rt: luaplug.Runtime, api: Path) -> None:
    hc = rt.provide(MATH, Math(), api=api)
    iface = hc.interface
    assert ffi.sizeof(iface[0]) == 80
    assert (iface.contract_id, iface.singleton, iface.dispatch_type) == (MATH_ID, True, 0)
    assert (iface.contract_version.major, iface.contract_version.minor) == (1, 2)
    assert int(ffi.cast("uintptr_t", iface.runtime)) == rt.host_api_address
    words = ffi.cast("uint32_t*", iface)
    assert words[64 // 4] == 4  # NativeDispatch.function_count
    assert call_u32(rt, 5) == 4  # the guest reads the same table


def test_a_raising_host_function_is_host_contract_call_failed(
    rt: luaplug.Runtime, api: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt.provide(MATH, Math(), api=api)
    with caplog.at_level(logging.ERROR, logger="luaplug.hostcontract"):
        assert call_u32(rt, 3) == AbiErrorCode.HostContractCallFailed
    records = [r for r in caplog.records if r.name == "luaplug.hostcontract"]
    assert records and records[0].exc_info is not None
    assert "kaput" in caplog.text and "boom" in caplog.text
    assert add(rt, 1, 1) == 2  # the VM is fine


def test_a_wrong_result_type_is_host_contract_call_failed(rt: luaplug.Runtime, api: Path) -> None:
    class Bad(Math):
        def add(self, a: int, b: int) -> int:
            return "nope"  # type: ignore[return-value]

    rt.provide(MATH, Bad(), api=api)
    with pytest.raises(luaplug.DispatchError) as info:
        add(rt, 1, 2)
    assert "host add failed with code 102" in (info.value.lua_error or "")


@pytest.mark.parametrize(
    ("min_version", "found"),
    [
        (0, True),
        ((1 << 16) | 0, True),
        ((1 << 16) | 2, True),
        ((1 << 16) | 3, False),
        ((2 << 16) | 0, False),
        (1, False),  # major 0: only 0 means "any"
    ],
)
def test_version_negotiation(rt: luaplug.Runtime, api: Path, min_version: int, found: bool) -> None:
    """polyplug 0.1.3: a mismatch is a null instance with the not-found text in get_last_error."""
    rt.provide(MATH, Math(), api=api)
    assert call_u32(rt, 0, min_version) == int(found)
    assert call_u32(rt, 5, min_version) == (4 if found else 0)
    expected = "" if found else f"host contract not found: id={MATH_ID}, min_version={min_version}"
    assert why(rt, min_version) == expected


def test_not_found(rt: luaplug.Runtime) -> None:
    assert call_u32(rt, 0) == 0
    assert call_u32(rt, 5) == 0
    assert why(rt) == f"host contract not found: id={MATH_ID}, min_version=0"


def test_get_host_contract_from_c(runtime: luaplug.Runtime, api: Path) -> None:
    """The C signature: three parameters, the instance returned by value."""
    host = ffi.cast("HostApi*", runtime.host_api_address)
    signature = ffi.typeof("HostContractInstance(*)(const HostApi*, uint64_t, uint32_t)")
    assert ffi.typeof(host.get_host_contract) == signature
    assert host.get_host_contract(host, MATH_ID, 0).data == ffi.NULL
    text = f"host contract not found: id={MATH_ID}, min_version=0".encode()
    assert host.get_error_len(host) == len(text)
    hc = runtime.provide(MATH, Math(), api=api)
    inst = host.get_host_contract(host, MATH_ID, (1 << 16) | 1)
    assert inst.data != ffi.NULL and host.get_error_len(host) == 0  # a success clears it
    assert host.get_host_contract(host, MATH_ID, 0).data == inst.data  # the singleton's instance
    assert host.resolve_host_contract_interface(host, MATH_ID, 0) == hc.interface
    assert host.resolve_host_contract_interface(host, MATH_ID, (1 << 16) | 3) == ffi.NULL
    buf = ffi.new("uint8_t[128]")
    n = host.get_last_error(host, buf, 128)
    assert bytes(buf[0:n]) == f"host contract interface not found: id={MATH_ID}, min_version=65539".encode()
    assert host.resolve_host_contract_interface(host, MATH_ID, 0) == hc.interface
    assert host.get_error_len(host) == n  # a successful resolve leaves the last error as it was


def test_a_failing_factory_gives_no_instance(runtime: luaplug.Runtime, bundles: Path, api: Path) -> None:
    runtime.load(bundles / "hostuser")

    def factory() -> Math:
        raise RuntimeError("no math today")

    runtime.provide(MATH, factory, api=api, singleton=False)
    assert call_u32(runtime, 0) == 0
    assert why(runtime) == f"host contract instance creation failed: id={MATH_ID}, min_version=0"


def test_singleton_and_per_instance(runtime: luaplug.Runtime, bundles: Path, api: Path) -> None:
    runtime.load(bundles / "hostuser")
    runtime.provide(MATH, Math(), api=api)
    assert call_u32(runtime, 4) == 1
    with luaplug.Runtime(runtime.backend_name) as rt2:
        rt2.load(bundles / "hostuser")
        made: list[Math] = []

        def factory() -> Math:
            made.append(Math())
            return made[-1]

        hc = rt2.provide(MATH, factory, api=api, singleton=False)
        assert hc.interface.singleton is False
        assert call_u32(rt2, 4) == 0
        assert len(made) == 2
        assert add(rt2, 1, 2) == 3
        assert len(made) == 3


def test_duplicates_are_refused(runtime: luaplug.Runtime, api: Path) -> None:
    runtime.provide(MATH, Math(), api=api)
    with pytest.raises(luaplug.DuplicateProvider):
        runtime.provide(MATH, Math(), api=api)


def test_the_decorator_and_python_declarations(runtime: luaplug.Runtime, bundles: Path) -> None:
    spec = typed.contract(
        "host.Math@1",
        typed.function("add", [("a", "i32"), ("b", "i32")], returns="i32"),
        typed.function("greet", [("who", "StringView")], returns="StringView"),
        version="1.2.0",
        kind="host",
    )

    @runtime.provide(spec)
    class Impl:
        def add(self, a: int, b: int) -> int:
            return a * b

        def greet(self, who: str) -> str:
            return who[::-1]

    assert isinstance(Impl, type)
    runtime.load(bundles / "hostuser")
    assert add(runtime, 6, 7) == 42
    assert greet(runtime, "abc") == "guest got: cba"


def test_declaration_errors(runtime: luaplug.Runtime, api: Path) -> None:
    with pytest.raises(luaplug.ApiSpecError, match="not declared"):
        runtime.provide("host.Nope@1", Math(), api=api)
    with pytest.raises(luaplug.ApiSpecError):
        runtime.provide(MATH, Math())
    with pytest.raises(TypeError, match="tally"):
        runtime.provide(MATH, object(), api=api)
    assert runtime.host_contracts() == []


def test_host_calls_from_init_and_from_a_peer(runtime: luaplug.Runtime, bundles: Path, api: Path) -> None:
    """A host function that calls back into the runtime (a lookup) from inside a Lua call."""
    seen: list[list[luaplug.Provider]] = []

    class Looking(Math):
        def add(self, a: int, b: int) -> int:
            seen.append(runtime.contracts())
            return a + b

    runtime.provide(MATH, Looking(), api=api)
    runtime.load(bundles / "hostuser")
    assert add(runtime, 1, 2) == 3
    assert seen == [["svc.HostUser@1"]]


# -- registered by a guest ------------------------------------------------------------------


def read_clock(rt: luaplug.Runtime) -> int:
    out = ffi.new("uint32_t*")
    rt.contract("svc.HostReg@1").default.call(0, 0, out)
    return int(out[0])


CLOCK_ID = host_contract_id("guest.Clock", 1)


def test_a_guest_registers_a_host_contract(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "hostreg")
    assert runtime.host_contracts() == [CLOCK_ID]
    assert read_clock(runtime) == 42
    host = ffi.cast("HostApi*", runtime.host_api_address)
    iface = host.resolve_host_contract_interface(host, CLOCK_ID, (1 << 16) | 3)
    assert iface != ffi.NULL and iface.contract_id == CLOCK_ID
    assert host.resolve_host_contract_interface(host, CLOCK_ID, (1 << 16) | 4) == ffi.NULL
    runtime.unload("hostreg")
    assert runtime.host_contracts() == []
    assert host.resolve_host_contract_interface(host, CLOCK_ID, 0) == ffi.NULL


def test_a_guest_registration_follows_reloads(runtime: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("hostreg")
    runtime.load(d)
    main = d / "main.lua"
    main.write_text(main.read_text("utf-8").replace("local TICK = 42", "local TICK = 43"), "utf-8")
    runtime.reload("hostreg")
    assert runtime.host_contracts() == [CLOCK_ID]
    assert read_clock(runtime) == 43
    main.write_text(main.read_text("utf-8").replace("FAIL_AFTER_REGISTER = false", "FAIL_AFTER_REGISTER = true"))
    with pytest.raises(luaplug.InitFailed):
        runtime.reload("hostreg")
    assert runtime.host_contracts() == [CLOCK_ID]
    assert read_clock(runtime) == 43  # the old version keeps serving


def test_a_failed_load_leaves_no_host_contract(runtime: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("hostreg")
    main = d / "main.lua"
    main.write_text(main.read_text("utf-8").replace("FAIL_AFTER_REGISTER = false", "FAIL_AFTER_REGISTER = true"))
    with pytest.raises(luaplug.InitFailed, match="failing after register_host_contract"):
        runtime.load(d)
    assert runtime.host_contracts() == [] and runtime.contracts() == []
    main.write_text(main.read_text("utf-8").replace("FAIL_AFTER_REGISTER = true", "FAIL_AFTER_REGISTER = false"))
    runtime.load(d)  # nothing of the failed load is in the way
    assert read_clock(runtime) == 42


def test_a_guest_cannot_take_a_python_host_contracts_id(runtime: luaplug.Runtime, bundles: Path) -> None:
    clock = typed.contract("guest.Clock@1", typed.function("now", returns="u32"), kind="host")
    runtime.provide(clock, type("Clock", (), {"now": lambda self: 7})())
    with pytest.raises(luaplug.InitFailed, match="register_host_contract failed with code 7"):
        runtime.load(bundles / "hostreg")
    assert runtime.host_contracts() == [CLOCK_ID]
