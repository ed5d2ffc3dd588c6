"""Calling contract functions: arguments, results and error codes (spec §6); strings: test_arena.py."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi


def address(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    for name in ("adder", "greeter", "faulty", "counter"):
        runtime.load(bundles / name)
    return runtime


@pytest.mark.protocol
def test_noop(rt: luaplug.Runtime) -> None:
    assert rt.contract("iso.Adder@1").default.dispatch(1) == 0
    rt.contract("iso.Counter@1").default.call(2)


@pytest.mark.protocol
@pytest.mark.parametrize(("a", "b"), [(2, 3), (-7, 4), (0, 0), (2**31 - 2, 1)])
def test_add_through_an_arg_pack(rt: luaplug.Runtime, a: int, b: int) -> None:
    args = ffi.new("struct { int32_t a; int32_t b; } *", {"a": a, "b": b})
    out = ffi.new("int32_t*", -1)
    inst = rt.contract("iso.Adder@1").default
    assert inst.dispatch(0, args, out) == 0  # cffi pointers
    assert out[0] == a + b
    out[0] = -1
    assert inst.dispatch(0, address(args), address(out)) == 0  # plain addresses
    assert out[0] == a + b


@pytest.mark.protocol
def test_handler_arguments_are_numbers(rt: luaplug.Runtime) -> None:
    out = ffi.new("int32_t*")
    inst = rt.contract("iso.Adder@1").default
    inst.call(2, 0, out)
    assert out[0] == 1 | 2 | 4 | 8 | 16 | 32  # numbers; null args and null arena arrive as 0
    with luaplug.CallArena(256, host=rt) as arena:
        inst.call(2, 0, out, arena)
    assert out[0] == 1 | 2 | 4 | 8 | 16


@pytest.mark.protocol
def test_function_id_out_of_range(rt: luaplug.Runtime) -> None:
    adder = rt.contract("iso.Adder@1")
    assert adder.function_count == 3
    for inst in (adder.default, adder.create_instance()):
        assert inst.dispatch(3) == AbiErrorCode.FunctionNotAvailable
        assert inst.dispatch(1000) == 6
        with pytest.raises(luaplug.DispatchError) as info:
            inst.call(3)
        assert info.value.code == AbiErrorCode.FunctionNotAvailable
        assert info.value.lua_error is None
        assert inst.dispatch(2**32 - 1) == AbiErrorCode.FunctionNotAvailable


@pytest.mark.protocol
@pytest.mark.parametrize("fn_id", [-1, 2**32, 2**70])
def test_function_id_outside_uint32_is_refused_before_the_call(rt: luaplug.Runtime, fn_id: int) -> None:
    inst = rt.contract("iso.Adder@1").default
    with pytest.raises(OverflowError):
        inst.dispatch(fn_id)
    with pytest.raises(OverflowError):
        inst.call(fn_id)
    assert inst.dispatch(1) == 0  # the VM is untouched


@pytest.mark.protocol
def test_unknown_instance_id(rt: luaplug.Runtime) -> None:
    """An instance id the VM does not know, through the C interface: FunctionNotAvailable."""
    adder = rt.contract("iso.Adder@1")
    vm = ffi.cast("GuestContractInterface*", adder.interface_address).dispatch.vm
    err = ffi.new("AbiError*")

    def call_with(instance_id: int) -> int:
        inst = ffi.new("GuestContractInstance*", {"data": ffi.cast("void*", instance_id)})
        vm.call(vm.loader_data, inst[0], 1, ffi.NULL, ffi.NULL, ffi.NULL, err)
        return int(err.code)

    assert call_with(99) == AbiErrorCode.FunctionNotAvailable
    inst = adder.create_instance()
    old_id = inst.id
    assert call_with(old_id) == 0
    inst.destroy()
    assert call_with(old_id) == AbiErrorCode.FunctionNotAvailable
    assert call_with(0) == 0  # the default impl


def test_lua_error_returns_generic_and_is_logged(rt: luaplug.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    faulty = rt.contract("iso.Faulty@1").default
    caplog.set_level(logging.DEBUG, logger="luaplug.loader")
    assert faulty.dispatch(0) == AbiErrorCode.Generic
    with pytest.raises(luaplug.DispatchError) as info:
        faulty.call(0)
    err = info.value
    assert err.code == AbiErrorCode.Generic
    assert err.lua_error is not None
    assert "boom from faulty" in err.lua_error
    assert "stack traceback" in err.lua_error
    assert "explode" in err.lua_error
    failures = [r for r in caplog.records if r.name == "luaplug.loader"]
    # dispatch() reports only a code: logged at ERROR; call() raises the text: logged at DEBUG only
    assert [r.levelno for r in failures] == [logging.ERROR, logging.DEBUG]
    for record in failures:
        text = record.getMessage()
        assert text.startswith("Lua function call failed: ")
        assert "boom from faulty" in text
        assert "stack traceback" in text
    # the VM keeps working
    out = ffi.new("int32_t*")
    faulty.call(1, 0, out)
    assert out[0] == 1


def test_lua_error_with_pointer_arguments(rt: luaplug.Runtime) -> None:
    slot = ffi.new("int32_t*")
    with pytest.raises(luaplug.DispatchError) as info:
        rt.contract("iso.Faulty@1").default.call(0, slot, slot)
    assert info.value.code == AbiErrorCode.Generic
    assert "boom from faulty" in (info.value.lua_error or "")
    assert rt.contract("iso.Faulty@1").default.dispatch(0, slot, slot) == 1


#: spec §6 (a Lua error raised by a handler): the error value as Lua's tostring shows it, then the
#: traceback from the `error` call; for a table without __tostring that is "table: 0x<address>".
NON_STRING_ERROR = re.compile(
    r"table: 0x[0-9a-f]+\nstack traceback:\n\t\[C\]: in function 'error'\n\t\[string \"main\.lua\"\]:20: "
)


def test_non_string_error_value(rt: luaplug.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(luaplug.DispatchError) as info:
        rt.contract("iso.Faulty@1").default.call(2)
    assert info.value.code == AbiErrorCode.Generic
    assert info.value.lua_error is not None and NON_STRING_ERROR.match(info.value.lua_error), info.value.lua_error
    # dispatch answers the code and logs the text at Error level (spec §6)
    with caplog.at_level(logging.ERROR, logger="luaplug.loader"):
        assert rt.contract("iso.Faulty@1").default.dispatch(2) == AbiErrorCode.Generic
    lines = [r.getMessage() for r in caplog.records if r.name == "luaplug.loader" and r.levelno == logging.ERROR]
    assert len(lines) == 1 and lines[0].startswith("Lua function call failed: "), lines
    assert NON_STRING_ERROR.match(lines[0][len("Lua function call failed: ") :]), lines[0]
    assert rt.contract("iso.Faulty@1").default.dispatch(1, 0, ffi.new("int32_t*")) == 0


def test_foreign_caller_through_the_c_interface(rt: luaplug.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    """A C caller (here cffi) uses dispatch.vm.call with an AbiError out parameter."""
    iface = ffi.cast("GuestContractInterface*", rt.contract("iso.Adder@1").interface_address)
    vm = iface.dispatch.vm
    inst = ffi.new("GuestContractInstance*")
    err = ffi.new("AbiError*")
    args = ffi.new("struct { int32_t a; int32_t b; } *", {"a": 40, "b": 2})
    out = ffi.new("int32_t*")
    vm.call(vm.loader_data, inst[0], 0, args, out, ffi.NULL, err)
    assert (err.code, out[0]) == (0, 42)
    vm.call(vm.loader_data, inst[0], 7, ffi.NULL, ffi.NULL, ffi.NULL, err)
    assert err.code == AbiErrorCode.FunctionNotAvailable
    inst.data = ffi.cast("void*", 12345)
    vm.call(vm.loader_data, inst[0], 1, ffi.NULL, ffi.NULL, ffi.NULL, err)
    assert err.code == AbiErrorCode.FunctionNotAvailable

    faulty = ffi.cast("GuestContractInterface*", rt.contract("iso.Faulty@1").interface_address).dispatch.vm
    caplog.set_level(logging.ERROR, logger="luaplug.loader")
    inst.data = ffi.NULL
    faulty.call(faulty.loader_data, inst[0], 0, ffi.NULL, ffi.NULL, ffi.NULL, err)
    assert err.code == AbiErrorCode.Generic
    lines = [r.getMessage() for r in caplog.records if r.name == "luaplug.loader"]
    assert len(lines) == 1
    assert lines[0].startswith("Lua function call failed: ")
    assert "boom from faulty" in lines[0]
