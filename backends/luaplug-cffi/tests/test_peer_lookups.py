"""The HostApi's peer lookups answered in C (luaplug_entry.h's lookups section) for every runtime
once this backend is imported: the same answers as the registry, however it changed since the last
lookup."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import hostapi
from luaplug.abi import NULL_HANDLE_INDEX
from luaplug.abi import core_ffi as ffi
from luaplug.backend import NativeLookups, import_native
from luaplug.ids import guest_contract_id
from luaplug.testing import BUNDLES_DIR
from luaplug_cffi import engine as cffi_engine

ADDER = guest_contract_id("iso.Adder", 1)
ECHO = guest_contract_id("iso.Echo", 1)

pytestmark = pytest.mark.skipif(cffi_engine.lib is None, reason="luaplug-cffi is not built")


@pytest.fixture(params=["cffi", "lupa"])
def rt(request: pytest.FixtureRequest) -> Iterator[luaplug.Runtime]:
    runtime = luaplug.Runtime(request.param, hot_reload=True)
    try:
        yield runtime
    finally:
        runtime.close()


def _find(rt: luaplug.Runtime, cid: int, min_major: int = 0) -> tuple[int, int]:
    s = rt.host_api.struct
    h = s.find_guest_contract(s, cid, min_major)
    return int(h.index), int(h.generation)


def _resolve(rt: luaplug.Runtime, handle: tuple[int, int]) -> int:
    s = rt.host_api.struct
    return int(ffi.cast("uintptr_t", s.resolve_guest_contract(s, handle)))


def _registered(rt: luaplug.Runtime, cid: int) -> int:
    """The address of the registry's interface of ``cid``'s first provider."""
    regs = rt.registry.registrations(cid)
    return int(ffi.cast("uintptr_t", regs[0][2].iface)) if regs else 0


def test_the_lookups_are_c_functions(rt: luaplug.Runtime) -> None:
    # The process's provider: this backend's module, or another backend's imported first.
    modules = [cffi_engine._native]
    lupa_entry, _ = import_native("luaplug_lupa._entry")
    if lupa_entry is not None:
        modules.append(lupa_entry)
    provider = hostapi._native_peers
    assert isinstance(provider, NativeLookups)
    functions = (provider.find, provider.resolve, provider.create, provider.destroy)
    assert functions in [tuple(m.lookups_functions()) for m in modules]
    s = rt.host_api.struct
    fields = ("find_guest_contract", "resolve_guest_contract", "create_guest_instance", "destroy_guest_instance")
    assert tuple(int(ffi.cast("uintptr_t", getattr(s, f))) for f in fields) == functions


def test_lookups_follow_load_unload_and_reload(rt: luaplug.Runtime, tmp_path: Path) -> None:
    adder = shutil.copytree(BUNDLES_DIR / "adder", tmp_path / "adder")
    assert _find(rt, ADDER)[0] == NULL_HANDLE_INDEX
    rt.load(adder)
    first = _find(rt, ADDER)
    assert first[0] != NULL_HANDLE_INDEX
    for _ in range(2):  # the first lookup after a change refreshes the table, the next reads it
        assert _find(rt, ADDER) == first
        assert _resolve(rt, first) == _registered(rt, ADDER) != 0
    assert _find(rt, ADDER, 2)[0] == NULL_HANDLE_INDEX  # no major 2
    assert _resolve(rt, (first[0] + 7, first[1])) == 0

    rt.reload("adder")  # the same handle reaches the new version's interface
    for _ in range(2):
        assert _find(rt, ADDER) == first
        assert _resolve(rt, first) == _registered(rt, ADDER) != 0

    rt.unload("adder")  # the handle goes stale, the contract is gone
    for _ in range(2):
        assert _find(rt, ADDER)[0] == NULL_HANDLE_INDEX
        assert _resolve(rt, first) == 0

    rt.load(adder)  # a fresh handle; the old one stays stale
    again = _find(rt, ADDER)
    assert again[0] != NULL_HANDLE_INDEX and again != first
    assert _resolve(rt, first) == 0
    assert _resolve(rt, again) == _registered(rt, ADDER) != 0


def test_lookups_pick_the_first_registered_provider(rt: luaplug.Runtime) -> None:
    rt.load(BUNDLES_DIR / "echo")
    echo = _find(rt, ECHO)
    rt.load(BUNDLES_DIR / "echo_alt")
    for _ in range(2):
        assert _find(rt, ECHO) == echo
    rt.unload("echo")
    alt = _find(rt, ECHO)
    assert alt[0] != NULL_HANDLE_INDEX and alt != echo
    assert _resolve(rt, alt) == _registered(rt, ECHO) != 0


def test_create_and_destroy_through_the_host(rt: luaplug.Runtime) -> None:
    rt.load(BUNDLES_DIR / "adder")
    s = rt.host_api.struct
    iface = s.resolve_guest_contract(s, _find(rt, ADDER))
    inst: Any = ffi.new("GuestContractInstance*")
    s.create_guest_instance(s, iface, ffi.NULL, inst)
    assert inst.data != ffi.NULL and inst.contract_id == ADDER
    s.destroy_guest_instance(s, iface, inst[0])
    s.create_guest_instance(s, ffi.NULL, ffi.NULL, inst)  # no interface: a null instance, no crash
    assert inst.data == ffi.NULL and inst.contract_id == 0
    s.destroy_guest_instance(s, ffi.NULL, inst[0])


def test_a_closed_runtime_finds_nothing(tmp_path: Path) -> None:
    rt = luaplug.Runtime("cffi")
    rt.load(BUNDLES_DIR / "adder")
    handle = _find(rt, ADDER)
    assert _find(rt, ADDER) == handle  # from the table
    rt.close()
    assert _find(rt, ADDER)[0] == NULL_HANDLE_INDEX
    assert _resolve(rt, handle) == 0


def test_an_init_finds_only_what_it_declared_even_with_a_fresh_table(rt: luaplug.Runtime) -> None:
    rt.load(BUNDLES_DIR / "echo")
    rt.load(BUNDLES_DIR / "counter")
    counter = guest_contract_id("iso.Counter", 1)
    for _ in range(2):  # the table now answers both
        assert _find(rt, counter)[0] != NULL_HANDLE_INDEX
    rt.load(BUNDLES_DIR / "depuser")  # its init looks both up; it declared only iso.Echo@1
    out = ffi.new("uint32_t*")
    rt.contract("svc.DepUser@1").default.call(0, 0, out)
    assert out[0] == 1  # iso.Echo@1 found, iso.Counter@1 not
    rt.contract("svc.DepUser@1").default.call(1, 0, out)
    assert out[0] == 3  # outside init nothing is restricted
