"""What a load registers: ids, display names, defaults, several contracts and providers (spec §4, §5)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.ids import guest_contract_id

NULL_INDEX = 0xFFFFFFFF


def regs_by_name(rt: luaplug.Runtime) -> dict[str, Any]:
    return {r.display_name: r for r in rt.registry.providers()}


def host_of(rt: luaplug.Runtime) -> Any:
    return ffi.cast("HostApi*", rt.host_api_address)


def inc(contract: luaplug.Contract) -> int:
    out = ffi.new("int64_t*")
    contract.default.call(0, 0, out)
    return int(out[0])


def test_spec_id_examples() -> None:
    assert guest_contract_id("iso.Counter", 1) == 0x1CFBA3E335CCE708
    assert guest_contract_id("test.peer", 1) == 0x8402886CF97A6E7D


def test_ids_display_names_and_interface(runtime: luaplug.Runtime, bundles: Path) -> None:
    for name in ("counter", "greeter", "multi"):
        runtime.load(bundles / name)
    expected = {"iso.Counter@1", "iso.Greeter@1", "iso.MultiA@1", "iso.MultiB@1"}
    assert sorted(runtime.contracts()) == sorted(expected)
    for display, reg in regs_by_name(runtime).items():
        name, _, major = display.partition("@")
        assert (reg.contract_name, reg.major) == (name, int(major))
        assert reg.contract_id == guest_contract_id(name, int(major))
        iface = reg.iface
        assert iface.contract_id == reg.contract_id
        assert (iface.contract_version.major, iface.contract_version.minor, iface.contract_version.patch) == (1, 0, 0)
        assert iface.dispatch_type == luaplug.DispatchType.VirtualMachine
        assert iface.create_instance != ffi.NULL
        assert iface.destroy_instance != ffi.NULL
        assert iface.dispatch.vm.call != ffi.NULL
        c = runtime.contract(display)
        assert c.name == display
        assert runtime.contract(name, int(major)).handle == c.handle


def test_several_contracts_in_one_bundle(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "multi")
    regs = regs_by_name(runtime)
    assert set(regs) == {"iso.MultiA@1", "iso.MultiB@1"}
    assert {r.bundle_name for r in regs.values()} == {"multi"}
    assert regs["iso.MultiA@1"].plugin_name == "multi-a"
    assert regs["iso.MultiB@1"].plugin_name == "multi-b"
    assert runtime.loader.live_states == 1  # one VM for both
    out = ffi.new("int32_t*")
    runtime.contract("iso.MultiB@1").default.call(0, 0, out)
    assert out[0] == 42


def test_two_bundles_in_one_runtime(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "counter")
    runtime.load(bundles / "adder")
    regs = regs_by_name(runtime)
    assert regs["iso.Counter@1"].bundle_name == "counter"
    assert regs["iso.Adder@1"].bundle_name == "adder"
    assert runtime.loader.live_states == 2
    assert inc(runtime.contract("iso.Counter@1")) == 1


def test_plugin_name_and_version_defaults_for_a_path_bundle(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "adder")  # its entry sets neither plugin_name nor contract_version
    c = runtime.contract("iso.Adder@1")
    assert c.plugin_name == "main.lua"
    assert regs_by_name(runtime)["iso.Adder@1"].plugin_name == "main.lua"
    assert c.function_count == 3


def test_plugin_name_defaults_to_the_bundle_name_in_memory(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load_code((bundles / "adder" / "main.lua").read_text("utf-8"), "adder_mem")
    assert runtime.contract("iso.Adder@1").plugin_name == "adder_mem"


def test_explicit_plugin_name_and_major(runtime: luaplug.Runtime) -> None:
    src = """
    function polyplug_init()
      return { ["x.V"] = { contract_version = 2, plugin_name = "vee",
                           factory = function() return {} end, functions = { [0] = function() end } } },
             { code = 0 }
    end
    """
    runtime.load_code(src, "v2")
    assert runtime.contracts() == ["x.V@2"]
    reg = regs_by_name(runtime)["x.V@2"]
    assert reg.contract_id == guest_contract_id("x.V", 2)
    assert reg.iface.contract_version.major == 2
    c = runtime.contract("x.V", 2)
    assert (c.name, c.plugin_name) == ("x.V@2", "vee")
    with pytest.raises(luaplug.ContractNotFoundError):
        runtime.contract("x.V@1")


def test_unknown_contract(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "counter")
    with pytest.raises(luaplug.ContractNotFoundError):
        runtime.contract("iso.Nope@1")
    with pytest.raises(luaplug.ContractNotFoundError):
        runtime.contract("iso.Counter", 2)


@pytest.mark.protocol
def test_host_api_lookup(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "counter")
    host = host_of(runtime)
    cid = guest_contract_id("iso.Counter", 1)
    for min_major in (0, 1):
        h = host.find_guest_contract(host, cid, min_major)
        assert h.index != NULL_INDEX
        iface = host.resolve_guest_contract(host, h)
        assert iface != ffi.NULL
        assert iface.contract_id == cid
    assert host.find_guest_contract(host, cid, 2).index == NULL_INDEX
    assert host.find_guest_contract(host, guest_contract_id("iso.Nope", 1), 0).index == NULL_INDEX


def test_two_bundles_may_provide_one_contract(runtime: luaplug.Runtime, bundles: Path) -> None:
    src = (bundles / "counter" / "main.lua").read_text("utf-8")
    assert "local STEP = 1\n" in src
    runtime.load(bundles / "counter")
    runtime.load_code(src.replace("local STEP = 1\n", "local STEP = 100\n"), "counter_b")
    assert runtime.contracts() == ["iso.Counter@1", "iso.Counter@1"]
    assert sorted(r.bundle_name for r in runtime.registry.providers()) == ["counter", "counter_b"]

    host = host_of(runtime)
    cid = guest_contract_id("iso.Counter", 1)
    first = host.find_guest_contract(host, cid, 1)
    old = runtime.contract("iso.Counter@1")
    assert inc(old) == 1  # the first registered wins

    runtime.unload("counter")
    with pytest.raises(luaplug.ContractNotFoundError):
        old.create_instance()
    assert host.resolve_guest_contract(host, first) == ffi.NULL  # its handle went stale
    second = host.find_guest_contract(host, cid, 1)
    assert second.index != NULL_INDEX
    assert host.resolve_guest_contract(host, second) != ffi.NULL
    assert inc(runtime.contract("iso.Counter@1")) == 100  # the other provider took over
    assert runtime.contracts() == ["iso.Counter@1"]


def test_revision_counts_registry_changes(runtime: luaplug.Runtime, bundles: Path) -> None:
    host = host_of(runtime)
    counter = host.revision_counter(host)
    assert counter != ffi.NULL
    r0 = runtime.revision
    assert counter[0] == r0
    runtime.load(bundles / "counter")
    r1 = runtime.revision
    assert r1 != r0
    assert counter[0] == r1
    with pytest.raises(luaplug.LoadError):
        runtime.load(bundles / "broken_noinit")
    assert runtime.revision == r1
    runtime.unload("counter")
    assert runtime.revision not in (r0, r1)
    r2 = runtime.revision
    runtime.unload("counter")  # unknown now: a no-op
    assert runtime.revision == r2


@pytest.mark.protocol
def test_two_runtimes_are_independent(new_runtime: Callable[..., luaplug.Runtime], bundles: Path) -> None:
    one, two = new_runtime(), new_runtime()
    one.load(bundles / "counter")
    two.load(bundles / "counter")
    assert one.host_api_address != two.host_api_address
    assert (inc(one.contract("iso.Counter@1")), inc(one.contract("iso.Counter@1"))) == (1, 2)
    assert inc(two.contract("iso.Counter@1")) == 1
    one.unload("counter")
    with pytest.raises(luaplug.ContractNotFoundError):
        one.contract("iso.Counter@1")
    assert inc(two.contract("iso.Counter@1")) == 2
    cid = guest_contract_id("iso.Counter", 1)
    assert host_of(one).find_guest_contract(host_of(one), cid, 1).index == NULL_INDEX
    assert host_of(two).find_guest_contract(host_of(two), cid, 1).index != NULL_INDEX
