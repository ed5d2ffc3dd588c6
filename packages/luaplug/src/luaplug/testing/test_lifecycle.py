"""Reload, unload and reclamation (spec §7, §10; runtime-semantics "Reload and unload")."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.ids import guest_contract_id
from luaplug.testing._cdata import wait_gate

COUNTER = "iso.Counter@1"

EXTRA_ONLY = """
local ffi = require("ffi")
function polyplug_init(_host, _ctx)
  return { ["iso.Extra"] = { factory = function() return {} end,
             functions = { [0] = function(_s, _a, out) ffi.cast("int32_t*", out)[0] = 99 end } } }, { code = 0 }
end
"""


def inc(inst: luaplug.Instance) -> int:
    out = ffi.new("int64_t*")
    inst.call(0, 0, out)
    return int(out[0])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.protocol
def test_reload_swaps_the_code_behind_the_handle(runtime: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("counter")
    runtime.load(d)
    c = runtime.contract(COUNTER)
    assert (inc(c.default), inc(c.default)) == (1, 2)
    rev = runtime.revision
    host = ffi.cast("HostApi*", runtime.host_api_address)
    handle = host.find_guest_contract(host, guest_contract_id("iso.Counter", 1), 1)
    assert host.resolve_guest_contract(host, handle) != ffi.NULL
    main = d / "main.lua"
    main.write_text(main.read_text("utf-8").replace("local STEP = 1\n", "local STEP = 10\n"), "utf-8")
    runtime.reload("counter")
    assert runtime.revision != rev
    assert inc(c.default) == 10  # the contract follows the reload; the new VM starts from scratch
    assert inc(c.create_instance()) == 10
    assert inc(runtime.contract(COUNTER).default) == 20
    new_iface = host.resolve_guest_contract(host, handle)  # the handle follows the reload
    assert new_iface != ffi.NULL
    assert new_iface.contract_id == guest_contract_id("iso.Counter", 1)


def test_reload_retires_the_old_version(runtime: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("counter")
    runtime.load(d)
    c = runtime.contract(COUNTER)
    old_inst = c.create_instance()
    assert inc(old_inst) == 1
    host = ffi.cast("HostApi*", runtime.host_api_address)
    handle = host.find_guest_contract(host, guest_contract_id("iso.Counter", 1), 1)
    runtime.reload("counter")
    assert runtime.contracts() == [COUNTER]
    assert runtime.loader.live_states == 1
    assert old_inst.dispatch(0) == AbiErrorCode.StaleHandle  # bound to the old VM

    main = d / "main.lua"
    main.write_text(EXTRA_ONLY, "utf-8")
    runtime.reload(runtime.bundles["counter"])
    assert runtime.contracts() == ["iso.Extra@1"]
    with pytest.raises(luaplug.ContractNotFoundError):
        c.create_instance()
    assert host.resolve_guest_contract(host, handle) == ffi.NULL  # retired with its contract
    out = ffi.new("int32_t*")
    runtime.contract("iso.Extra@1").default.call(0, 0, out)
    assert out[0] == 99
    runtime.collector.collect()
    assert runtime.collector.pending == 0


@pytest.mark.parametrize(
    ("broken", "prefix"),
    [
        ("function polyplug_init(\n", "Lua script load failed for main.lua: "),
        ("function polyplug_init() return {}, { code = 0 } end\n", "Lua plugin registered no contracts"),
        (
            'function polyplug_init() return { ["iso.Counter"] = { factory = function() return {} end,'
            ' functions = { [0] = function() end } }, ["iso.New"] = { factory = function() error("no") end,'
            " functions = {} } }, { code = 0 } end\n",
            "factory for contract 'iso.New' failed building the default instance: ",
        ),
    ],
    ids=["syntax_error", "no_contracts", "new_contract_factory_fails"],
)
def test_failed_reload_keeps_the_old_version(
    runtime: luaplug.Runtime, copy_bundle: Any, broken: str, prefix: str
) -> None:
    d: Path = copy_bundle("counter")
    runtime.load(d)
    c = runtime.contract(COUNTER)
    inst = c.create_instance()
    assert inc(inst) == 1
    good = (d / "main.lua").read_text("utf-8")
    (d / "main.lua").write_text(broken, "utf-8")
    before = (runtime.contracts(), runtime.revision, runtime.loader.live_states)
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.reload("counter")
    assert info.value.error.startswith(prefix)
    assert (runtime.contracts(), runtime.revision, runtime.loader.live_states) == before
    assert inc(inst) == 2  # still the old VM, state intact
    assert inc(c.default) == 1
    (d / "main.lua").write_text(good, "utf-8")
    runtime.reload("counter")
    assert inc(c.default) == 1


@pytest.mark.protocol
def test_unload_makes_handles_stale(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "counter")
    c = runtime.contract(COUNTER)
    inst, default = c.create_instance(), c.default
    assert inc(inst) == 1
    host = ffi.cast("HostApi*", runtime.host_api_address)
    handle = host.find_guest_contract(host, guest_contract_id("iso.Counter", 1), 1)
    rev = runtime.revision
    runtime.unload("counter")
    assert runtime.revision != rev
    assert host.resolve_guest_contract(host, handle) == ffi.NULL
    assert host.find_guest_contract(host, guest_contract_id("iso.Counter", 1), 1).index == 0xFFFFFFFF
    with pytest.raises(luaplug.ContractNotFoundError):
        runtime.contract(COUNTER)
    assert inst.dispatch(0) == AbiErrorCode.StaleHandle
    assert default.dispatch(0) == AbiErrorCode.StaleHandle
    runtime.load(bundles / "counter")  # the name is free again
    assert inc(runtime.contract(COUNTER).default) == 1


def test_unload_makes_contracts_and_instances_stale(runtime: luaplug.Runtime, bundles: Path) -> None:
    bundle = runtime.load(bundles / "counter")
    c = runtime.contract(COUNTER)
    inst = c.create_instance()
    runtime.unload(bundle)
    assert runtime.contracts() == []
    assert runtime.loader.live_states == 0
    for get in (c.create_instance, lambda: c.default, lambda: c.provider):
        with pytest.raises(luaplug.ContractNotFoundError):
            get()
    with pytest.raises(luaplug.DispatchError) as info:
        inst.call(0)
    assert info.value.code == AbiErrorCode.StaleHandle
    runtime.unload("counter")  # unknown now: a no-op
    runtime.unload("never-loaded")
    assert runtime.contracts() == []


@pytest.mark.parametrize("action", ["reload", "unload"])
def test_live_instances_are_warned_about(
    runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture, action: str
) -> None:
    runtime.load(bundles / "counter")
    runtime.contract(COUNTER).create_instance()
    caplog.set_level(logging.WARNING)
    getattr(runtime, action)("counter")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("luaplug")]
    assert any("live instance" in r.getMessage() and "counter" in r.getMessage() for r in warnings)


@pytest.mark.parametrize("action", ["reload", "unload"])
def test_destroyed_instances_are_not_counted_as_live(
    runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture, action: str
) -> None:
    runtime.load(bundles / "counter")
    c = runtime.contract(COUNTER)
    kept = [c.create_instance() for _ in range(3)]
    for inst in kept[:2]:
        inst.destroy()
    caplog.set_level(logging.WARNING)
    getattr(runtime, action)("counter")
    texts = [r.getMessage() for r in caplog.records if "live instance" in r.getMessage()]
    assert len(texts) == 1 and "with 1 live instance" in texts[0]
    caplog.clear()
    kept[2].destroy()
    if action == "reload":
        runtime.reload("counter")  # the new VM has no instances
        assert not [r for r in caplog.records if "live instance" in r.getMessage()]


@pytest.mark.protocol
def test_reload_needs_hot_reload(new_runtime: Callable[..., luaplug.Runtime], bundles: Path) -> None:
    rt = new_runtime()
    rt.load(bundles / "counter")
    c = rt.contract(COUNTER)
    assert inc(c.default) == 1
    with pytest.raises(luaplug.HotReloadDisabled) as info:
        rt.reload("counter")
    assert str(info.value) == "hot-reload is disabled in runtime config"
    assert inc(c.default) == 2


def test_in_memory_bundles_cannot_be_reloaded(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load_code((bundles / "counter" / "main.lua").read_text("utf-8"), "mem")
    with pytest.raises(luaplug.LoadError):
        runtime.reload("mem")
    assert inc(runtime.contract(COUNTER).default) == 1


@pytest.mark.parametrize("action", ["unload", "reload"])
def test_call_in_flight_survives_unload_and_reload(runtime: luaplug.Runtime, bundles: Path, action: str) -> None:
    runtime.collector.collect()
    baseline = runtime.collector.pending
    runtime.load(bundles / "gate")
    c = runtime.contract("iso.Gate@1")
    old_default = c.default
    gate, out = ffi.new("int32_t[2]"), ffi.new("int32_t*")
    results: dict[str, int] = {}
    holder = threading.Thread(target=lambda: results.__setitem__("hold", old_default.dispatch(0, gate, out)))
    holder.start()
    worker: threading.Thread | None = None
    try:
        wait_gate(gate, holder)
        worker = threading.Thread(target=getattr(runtime, action), args=("gate",))
        worker.start()
        worker.join(3)  # returns at once unless it waits for the call in flight
        assert not worker.is_alive(), f"{action} waited for the call in flight"
        assert runtime.collector.pending > baseline  # the old VM waits for the call
        if action == "reload":
            fresh = ffi.new("int32_t*")
            assert c.default.dispatch(1, 0, fresh) == 0  # served by the new VM meanwhile
            assert fresh[0] == 1
        else:
            assert runtime.loader.live_states == 0
    finally:
        gate[1] = 1
        holder.join(60)
        if worker is not None:
            worker.join(60)
    assert results["hold"] == 0
    assert out[0] == 1  # the call completed normally on the old VM
    runtime.collector.collect()
    assert runtime.collector.pending == 0
    assert old_default.dispatch(1) == AbiErrorCode.StaleHandle


def test_close(backend: str, bundles: Path) -> None:
    rt = luaplug.Runtime(backend, hot_reload=True)
    rt.load(bundles / "counter")
    rt.load(bundles / "greeter")
    inst = rt.contract(COUNTER).create_instance()
    rt.close()
    assert rt.loader.live_states == 0
    assert inst.dispatch(0) == AbiErrorCode.StaleHandle
    with pytest.raises(luaplug.RuntimeClosedError):
        rt.load(bundles / "adder")
    rt.close()  # idempotent


def test_load_unload_cycles_stay_bounded(runtime: luaplug.Runtime, bundles: Path) -> None:
    def cycle() -> None:
        runtime.load(bundles / "greeter")
        with luaplug.CallArena(64, host=runtime) as arena:
            buf = ffi.new("uint8_t[]", b"cycle")
            arg = ffi.new("StringView*", {"ptr": buf, "len": 5})
            out = ffi.new("StringView*")
            runtime.contract("iso.Greeter@1").create_instance().call(0, arg, out, arena)
        runtime.unload("greeter")

    for _ in range(50):
        cycle()
    gc.collect()
    runtime.collector.collect()
    start = rss_bytes()
    for _ in range(1000):
        cycle()
    gc.collect()
    runtime.collector.collect()
    grown = rss_bytes() - start
    assert runtime.loader.live_states == 0
    assert runtime.contracts() == []
    assert runtime.collector.pending == 0
    assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB over 1000 cycles"


def test_calls_racing_reloads_and_unloads(runtime: luaplug.Runtime, bundles: Path) -> None:
    """Callers on other threads see Ok, StaleHandle or a missing contract; nothing else, no crash."""
    runtime.load(bundles / "counter")
    c = runtime.contract(COUNTER)
    stop = threading.Event()
    seen: dict[object, int] = {}
    lock = threading.Lock()

    def hammer() -> None:
        out = ffi.new("int64_t*")
        while not stop.is_set():
            try:
                code: object = c.default.dispatch(0, 0, out)
            except luaplug.ContractNotFoundError:
                code = "not found"
            with lock:
                seen[code] = seen.get(code, 0) + 1

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(50):
            runtime.reload("counter")
        for _ in range(10):
            runtime.unload("counter")
            runtime.load(bundles / "counter")
            c = runtime.contract(COUNTER)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert set(seen) <= {0, AbiErrorCode.StaleHandle, "not found"}
    assert seen.get(0, 0) > 0
    runtime.collector.collect()
    assert runtime.collector.pending == 0
    assert runtime.loader.live_states == 1
