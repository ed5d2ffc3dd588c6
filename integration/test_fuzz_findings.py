"""Minimal reproductions of what ``test_fuzz.py`` found (issue 8).

Each was a bug (fixed); the tests keep the behaviour the spec asks for.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_fuzz import Harness, c_interface, no_callback_errors
from test_fuzz import harness as harness
from test_fuzz import probe as probe

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi

# -- what the fuzzers found (minimal reproductions) --------------------------------------------


MANY_CONTRACTS = """
function polyplug_init()
  local regs = {}
  for i = 1, 70 do
    regs["many.C" .. i] = { factory = function() return {} end, functions = { [0] = function() end } }
  end
  return regs, { code = 0 }
end
"""


def test_a_bundle_may_register_many_contracts(harness: Harness) -> None:
    """Spec §4 sets no limit on the contracts of one bundle."""
    rt = harness.runtime
    rt.load_code(MANY_CONTRACTS, "many")
    assert len([c for c in rt.contracts() if c.startswith("many.C")]) == 70
    assert rt.contract("many.C70@1").default.dispatch(0) == 0
    rt.unload("many")


@pytest.mark.parametrize("iid", [2**63, 2**64 - 1])
def test_c_dispatch_with_an_instance_id_past_2_63(harness: Harness, probe: luaplug.Contract, iid: int) -> None:
    """Spec §6: a non-zero instance id that is not live is FunctionNotAvailable, for every u64."""
    host, iface = c_interface(harness.runtime, "fuzz.Probe")
    vm = iface.dispatch.vm
    inst = ffi.new("GuestContractInstance*", {"data": ffi.cast("void*", iid)})
    err = ffi.new("AbiError*", {"code": 0xDEAD})
    with no_callback_errors() as escaped:
        vm.call(vm.loader_data, inst[0], 0, ffi.NULL, ffi.NULL, ffi.NULL, err)
        iface.destroy_instance(vm.loader_data, host, inst[0])
    assert err.code == AbiErrorCode.FunctionNotAvailable
    assert escaped == []


BAD_TOSTRING = """
local bad = setmetatable({}, { __tostring = function() error("tostring exploded") end })
function polyplug_init()
  return { ["fuzz.T"] = { factory = function() return {} end,
                          functions = { [0] = function() error(bad) end } } }, { code = 0 }
end
"""


def test_error_value_whose_tostring_raises(harness: Harness) -> None:
    """Spec §6: whatever a handler raises, the call returns Generic (1), from Python and from C."""
    rt = harness.runtime
    rt.load_code(BAD_TOSTRING, "badtostring")
    code: object
    try:
        code = rt.contract("fuzz.T@1").default.dispatch(0)
    except luaplug.LuaplugError as exc:
        code = exc
    _host, iface = c_interface(rt, "fuzz.T")
    err = ffi.new("AbiError*", {"code": 0xDEAD})
    with no_callback_errors() as escaped:
        iface.dispatch.vm.call(
            iface.dispatch.vm.loader_data, ffi.new("GuestContractInstance*")[0], 0, ffi.NULL, ffi.NULL, ffi.NULL, err
        )
    rt.unload("badtostring")
    assert code == AbiErrorCode.Generic
    assert err.code == AbiErrorCode.Generic
    assert escaped == []


@pytest.mark.parametrize(("source", "name"), [("\ud800", "surrogate_source"), ("return 1", "name\udcff")])
def test_unencodable_source_text_is_a_luaplug_error(harness: Harness, source: str, name: str) -> None:
    before = harness.state()
    with pytest.raises(luaplug.LuaplugError):
        harness.runtime.load_code(source, name)
    assert harness.state() == before


@pytest.mark.parametrize("key", ['""', '"\\255x"'], ids=["empty", "not_utf8"])
def test_contract_names_must_be_non_empty_utf8(harness: Harness, key: str) -> None:
    source = (
        f"function polyplug_init() return {{ [{key}] = {{ factory = function() return {{}} end, "
        "functions = {} } }, { code = 0 } end"
    )
    assert harness.attempt(lambda: harness.runtime.load_code(source, "oddname")) is None


@pytest.mark.parametrize("fn_id", ["0", None, 1.5, b"\x00", [0]])
def test_non_integer_fn_id(probe: luaplug.Contract, fn_id: Any) -> None:
    """A fn_id that is no int: a TypeError (or a luaplug error), never a call of some handler."""
    try:
        code = probe.default.dispatch(fn_id)
    except (TypeError, luaplug.LuaplugError):
        return
    assert code in (AbiErrorCode.Generic, AbiErrorCode.FunctionNotAvailable)
