"""Host contract packing and version matching, the event hub, dependency helpers."""

from __future__ import annotations

import logging

import pytest

from luaplug import typed
from luaplug.abi import AbiErrorCode
from luaplug.abi import core_ffi as ffi
from luaplug.events import Event, EventHub, Phase, deferring, emit
from luaplug.hostcontract import HostContract, version_matches
from luaplug.ids import bundle_id, guest_contract_id, host_contract_id
from luaplug.manifest import declared_contract_ids, depends_on, parse


@pytest.mark.parametrize(
    ("version", "wanted", "ok"),
    [
        ((1, 2), 0, True),
        ((1, 2), 1 << 16, True),
        ((1, 2), (1 << 16) | 2, True),
        ((1, 2), (1 << 16) | 3, False),
        ((1, 2), 2 << 16, False),
        ((2, 0), 1 << 16, False),
    ],
)
def test_version_matches(version: tuple[int, int], wanted: int, ok: bool) -> None:
    assert version_matches(version, wanted) is ok


SPEC = typed.contract(
    "t.Host@1",
    typed.function("mix", [("a", "u8"), ("b", "f64"), ("c", "StringView"), ("d", "bool")], returns="StringView"),
    typed.function("neg", [("x", "i64")], returns="i64"),
    typed.function("fail", returns="u32"),
    version="1.4.2",
    kind="host",
)


class Impl:
    def mix(self, a: int, b: float, c: str, d: bool) -> str:
        return f"{a}|{b}|{c}|{d}"

    def neg(self, x: int) -> int:
        return -x

    def fail(self) -> int:
        raise ValueError("nope")


def call(hc: HostContract, fn_id: int, inst: int, args: object, out: object) -> int:
    err = ffi.new("AbiError*")
    table = ffi.cast("void(**)(void*, const void*, void*, AbiError*)", hc.interface.dispatch.native.functions)
    table[fn_id](ffi.cast("void*", inst), ffi.cast("const void*", args), ffi.cast("void*", out), err)
    return int(err.code)


def test_a_host_contract_unpacks_and_packs(caplog: pytest.LogCaptureFixture) -> None:
    hc = HostContract(SPEC, Impl())
    iface = hc.interface
    assert iface.contract_id == host_contract_id("t.Host", 1)
    assert (iface.contract_version.major, iface.contract_version.minor, iface.contract_version.patch) == (1, 4, 2)
    assert iface.dispatch.native.function_count == 3
    out_inst = ffi.new("HostContractInstance*")
    iface.create_instance(iface, ffi.NULL, out_inst)
    inst = int(ffi.cast("uintptr_t", out_inst.data))
    assert inst and hc.live_instances == 1
    # struct { uint8_t a; double b; StringView c; bool d; }: offsets 0, 8, 16, 32
    pack = ffi.new("uint8_t[40]")
    ffi.cast("uint8_t*", pack)[0] = 7
    ffi.cast("double*", ffi.cast("uint8_t*", pack) + 8)[0] = 1.5
    text = ffi.new("char[]", b"hi")
    sv = ffi.cast("StringView*", ffi.cast("uint8_t*", pack) + 16)
    sv.ptr, sv.len = ffi.cast("const uint8_t*", text), 2
    ffi.cast("bool*", ffi.cast("uint8_t*", pack) + 32)[0] = True
    res = ffi.new("StringView*")
    assert call(hc, 0, inst, pack, res) == 0
    assert ffi.unpack(ffi.cast("char*", res.ptr), res.len) == b"7|1.5|hi|True"
    x = ffi.new("int64_t*", -(1 << 40))
    out = ffi.new("int64_t*")
    assert call(hc, 1, inst, x, out) == 0 and out[0] == 1 << 40
    with caplog.at_level(logging.ERROR, logger="luaplug.hostcontract"):
        assert call(hc, 2, inst, ffi.NULL, ffi.new("uint32_t*")) == AbiErrorCode.HostContractCallFailed
    assert "nope" in caplog.text
    assert call(hc, 1, 999, x, out) == AbiErrorCode.InvalidPointer
    iface.destroy_instance(iface, out_inst[0])
    assert hc.live_instances == 0


def test_a_failed_host_call_reports_the_exception_text() -> None:
    from luaplug.hostapi import HostApi

    host = HostApi(None)
    hc = HostContract(SPEC, Impl(), host_api=host)
    inst = hc._create_instance()
    err = ffi.new("AbiError*")
    table = ffi.cast("void(**)(void*, const void*, void*, AbiError*)", hc.interface.dispatch.native.functions)
    table[2](ffi.cast("void*", inst), ffi.NULL, ffi.new("uint32_t*"), err)
    assert err.code == AbiErrorCode.HostContractCallFailed
    assert ffi.unpack(ffi.cast("char*", err.message.ptr), err.message.len) == b"t.Host@1.fail: ValueError: nope"
    assert host.last_error() == b"t.Host@1.fail: ValueError: nope"
    table[1](ffi.cast("void*", 999), ffi.new("int64_t*"), ffi.new("int64_t*"), err)
    assert err.code == AbiErrorCode.InvalidPointer
    assert ffi.unpack(ffi.cast("char*", err.message.ptr), err.message.len) == b"t.Host@1.neg: unknown instance 0x3e7"
    assert call(hc, 1, inst, ffi.new("int64_t*", 3), ffi.new("int64_t*")) == 0
    # a call that succeeds leaves the message null
    ok = ffi.new("AbiError*")
    table[1](ffi.cast("void*", inst), ffi.new("int64_t*", 3), ffi.new("int64_t*"), ok)
    assert ok.code == 0 and ok.message.ptr == ffi.NULL and ok.message.len == 0


def test_event_hub_defers_and_isolates_failures(caplog: pytest.LogCaptureFixture) -> None:
    hub = EventHub()
    got: list[Event] = []

    def bad(_e: Event) -> None:
        raise RuntimeError("x")

    hub.subscribe(bad)
    hub.subscribe(got.append)
    e1, e2 = Event(Phase.Preparing, 1, "a"), Event(Phase.Reloaded, 1, "a")
    with deferring():
        with deferring():
            hub.post(e1)
        hub.post(e2)
        assert got == []
    assert got == [e1, e2]
    assert "raised on Preparing" in caplog.text
    with pytest.raises(TypeError):
        hub.subscribe(3)  # type: ignore[arg-type]


def test_events_and_log_records_wait_in_one_queue_in_the_order_they_were_made() -> None:
    hub = EventHub()
    seen: list[str] = []
    hub.subscribe(lambda e: seen.append(f"event {e.phase.name}"))

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"log {record.getMessage()}")

    logger = logging.getLogger("luaplug.test_queue")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(Sink())
    with deferring():
        hub.post(Event(Phase.Preparing, 1, "a"))
        emit(logger, logging.INFO, "between")
        hub.post(Event(Phase.Reloaded, 1, "a"))
        with deferring():  # a nested section delivers nothing on its own
            emit(logger, logging.INFO, "last")
        assert seen == []
    assert seen == ["event Preparing", "log between", "event Reloaded", "log last"]
    # Outside any section both are delivered at once.
    hub.post(Event(Phase.Unloading, 1, "a"))
    emit(logger, logging.INFO, "now")
    assert seen[-2:] == ["event Unloading", "log now"]


def test_dependency_helpers() -> None:
    m = parse(
        'name = "d"\nid = ' + str(bundle_id("d")) + '\nloader = "lua"\nfile = "m.lua"\n'
        'bundle_dependencies = ["b@1.0.0"]\n'
        '[[dependency]]\nkind = "contract"\ncontract = "x.Y"\nmin_version = "2.1.0"\n',
        "manifest.toml",
    )
    assert declared_contract_ids(m) == {guest_contract_id("x.Y", 2)}
    assert depends_on(m, "b", 0, ())
    assert depends_on(m, "c", 0, [guest_contract_id("x.Y", 2)])
    assert not depends_on(m, "c", 0, [guest_contract_id("x.Y", 1)])
