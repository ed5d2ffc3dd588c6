"""Untrusted bundles on the value protocol (issue 17, "the boundary itself").

An untrusted bundle gets no ``ffi`` and no address in any form: its contracts come with an
``api.toml``; luaplug's value glue decodes arguments into Lua values, calls the bundle's methods and
encodes the results; the bundle calls peer and host contracts through value-only callers.
``valuecalc`` is such a bundle; its ``probe()`` walks everything it can reach.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import luaplug
from luaplug import typed
from luaplug.abi import core_ffi as ffi
from luaplug.ids import bundle_id
from luaplug.testing.test_host_contracts import MATH, Math

BUNDLE = "valuecalc"


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    runtime.provide(MATH, Math(), api=bundles / "hostuser" / "api.toml")
    runtime.load(bundles / "typed_calc")
    runtime.load(bundles / BUNDLE, untrusted=True)
    return runtime


@pytest.fixture
def calc(rt: luaplug.Runtime, bundles: Path) -> Iterator[typed.TypedProxy]:
    with rt.bind(bundles / BUNDLE / "api.toml", "value.Calc@1") as proxy:
        yield proxy


def test_the_host_object_logs(runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="luaplug.guest")
    runtime.load(bundles / BUNDLE, untrusted=True)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "luaplug.guest"]
    assert lines == [(logging.INFO, "[valuecalc] ready")]


def test_scalars_round_trip(calc: typed.TypedProxy) -> None:
    assert calc.add(2, 3) == 5
    assert calc.add(-(2**31), 0) == -(2**31)
    calc.noop()
    assert calc.negate(-(2**53)) == 2**53
    assert calc.widen(255, 65535, 2**53) == 2**53 + 255 + 65535
    assert calc.scale(1.5, 0.5) == 0.75
    assert math.isinf(calc.scale(math.inf, 2.0))
    assert calc.both(True, True) is True
    assert calc.both(True, False) is False
    assert calc.next_color(1) == 2
    assert calc.next_color(4) == 1


@pytest.mark.parametrize("text", ["", "world", "ünïcödé ✓", "x" * 5000])
def test_strings_round_trip(calc: typed.TypedProxy, text: str) -> None:
    assert calc.greet(text) == "hello, " + text


def test_non_utf8_bytes_reach_the_bundle_unchanged(rt: luaplug.Runtime) -> None:
    """A raw call: the StringView holds bytes that are not UTF-8, NULs included."""
    data = b"\xff\x00\xfe\x80abc"
    buf = ffi.new("uint8_t[]", data)
    args = ffi.new("uint64_t[3]")  # struct { StringView data; uint32_t times; }
    view = ffi.cast("StringView*", args)
    view.ptr, view.len = buf, len(data)
    ffi.cast("uint32_t*", view + 1)[0] = 3
    out = ffi.new("StringView*")
    with luaplug.CallArena(64, host=rt) as arena:
        rt.contract("value.Calc@1").default.call(7, args, out, arena)
        assert ffi.buffer(out.ptr, out.len)[:] == data[::-1] * 3


def test_raw_call_of_a_typed_function(rt: luaplug.Runtime) -> None:
    args = ffi.new("int32_t[2]", [40, 2])
    out = ffi.new("int32_t*")
    rt.contract("value.Calc@1").default.call(0, args, out)
    assert out[0] == 42


def test_null_arguments_fail_cleanly(rt: luaplug.Runtime) -> None:
    with pytest.raises(luaplug.DispatchError, match="null args"):
        rt.contract("value.Calc@1").default.call(0, 0, ffi.new("int32_t*"))


def test_a_result_of_the_wrong_type_is_refused(calc: typed.TypedProxy) -> None:
    with pytest.raises(luaplug.DispatchError, match=r"value.Calc@1 bad_result: result: expected an integer"):
        calc.bad_result()


def test_a_bundle_error_comes_back_as_text(calc: typed.TypedProxy) -> None:
    with pytest.raises(luaplug.DispatchError, match="kaput here"):
        calc.fail("kaput here")


def test_peer_calls_through_a_value_caller(calc: typed.TypedProxy) -> None:
    assert calc.peer_add(20, 22) == 42
    assert calc.peer_greet("peer") == "hello, peer"


def test_host_calls_through_a_value_caller(calc: typed.TypedProxy) -> None:
    assert calc.host_add(1, 2) == 3
    assert calc.host_greet("lua") == "hello lua ✓"
    # a failing host call is (nil, text) in the bundle, never an exception object
    assert calc.host_boom().startswith("nil|host.Math@1 call failed with code")


def test_no_way_from_untrusted_code_to_a_pointer(rt: luaplug.Runtime, calc: typed.TypedProxy) -> None:
    """probe() walks everything reachable from the bundle: no cdata, no userdata, no address."""
    calc.add(1, 2)
    calc.greet("x")
    calc.peer_add(1, 2)
    calc.host_greet("y")
    calc.widen(1, 2, 2**40)
    calc.negate(2**33)
    report = calc.probe()
    assert report.startswith("SAFE "), report
    numbers = {int(n) for n in report.split(" ")[2].split(",") if n}
    # the only large numbers are the ones the test passed in (and what the bundle made of them)
    assert numbers <= {2**40, 2**40 + 3, 2**33}, numbers
    assert rt.host_api.address not in numbers


def test_untrusted_without_an_api_registers_nothing(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    d = tmp_path / "noapi"
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "noapi"\nid = {bundle_id("noapi")}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n',
        "utf-8",
    )
    (d / "main.lua").write_text(
        'function polyplug_init(h) return { ["x.Y@1"] = function() return {} end }, { code = 0 } end', "utf-8"
    )
    with pytest.raises(luaplug.InitFailed, match=r"x.Y@1.* is not a guest contract of its api.toml"):
        runtime.load(d, untrusted=True)


def test_a_struct_in_the_api_is_refused_for_untrusted_loads(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    d = tmp_path / "structy"
    d.mkdir()
    (d / "api.toml").write_text(
        '[[types]]\nname = "P"\nfields = [{ name = "x", type = "i32" }]\n'
        '[[guest_contract]]\nname = "s.S"\nversion = "1.0.0"\n'
        '[[guest_contract.functions]]\nname = "f"\nparams = [{ name = "p", type = "P" }]\n',
        "utf-8",
    )
    (d / "manifest.toml").write_text(
        f'name = "structy"\nid = {bundle_id("structy")}\nloader = "lua"\nfile = "main.lua"\n'
        'version = "1.0.0"\napi = "api.toml"\n',
        "utf-8",
    )
    (d / "main.lua").write_text("function polyplug_init() return {}, { code = 0 } end", "utf-8")
    with pytest.raises(luaplug.InitFailed, match="untrusted bundles take integers"):
        runtime.load(d, untrusted=True)


def test_a_peer_caller_follows_reloads_and_unloads(backend: str, bundles: Path, copy_bundle: object) -> None:
    peer = copy_bundle("typed_calc")  # type: ignore[operator]
    with luaplug.Runtime(backend, hot_reload=True) as rt:
        rt.provide(MATH, Math(), api=bundles / "hostuser" / "api.toml")
        rt.load(peer)
        rt.load(bundles / BUNDLE, untrusted=True)
        with rt.bind(bundles / BUNDLE / "api.toml", "value.Calc@1") as calc:
            assert calc.peer_add(1, 2) == 3
            rt.reload("typed_calc")
            assert calc.peer_add(3, 4) == 7
            rt.unload("typed_calc")
            with pytest.raises(luaplug.DispatchError, match=r"typed\.Calc@1 is not available"):
                calc.peer_add(1, 1)


FENV_PROBE = r"""
function polyplug_init(host)
  local out = {}
  local function note(what, ok, v)
    -- a leak: a call that worked and handed out (or changed) an environment other than _G
    if ok and v ~= _G and v ~= nil then out[#out + 1] = what end
  end
  local targets = { tostring = tostring, format = string.format, log = host.log, contract = host.contract,
    require = require, load = load }
  for name, f in pairs(targets) do
    note("getfenv(" .. name .. ")", pcall(getfenv, f))
    local ok = pcall(setfenv, f, {})
    if ok then out[#out + 1] = "setfenv(" .. name .. ")" end
  end
  for _, level in ipairs({ "2", "3", 2.0, 3 }) do
    note("getfenv(" .. tostring(level) .. ")", pcall(getfenv, level))
    if pcall(setfenv, level, {}) then out[#out + 1] = "setfenv(" .. tostring(level) .. ")" end
  end
  if newproxy ~= nil then out[#out + 1] = "newproxy" end
  return {}, { code = 1, message = "LEAKS " .. table.concat(out, ",") }
end
"""


@pytest.mark.parametrize("limit", [None, 1_000_000], ids=["no-budget", "budget"])
def test_untrusted_code_gets_no_environment_of_luaplug(
    runtime: luaplug.Runtime, tmp_path: Path, limit: int | None
) -> None:
    """getfenv/setfenv of an untrusted bundle take a function or level 0/1 (numbers or numeric
    strings alike) and never hand out or change the environment of luaplug's own functions (the
    table that exempts its frames from the instruction budget); newproxy is gone."""
    d = tmp_path / "fenv"
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "fenv"\nid = {bundle_id("fenv")}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n',
        "utf-8",
    )
    (d / "main.lua").write_text(FENV_PROBE, "utf-8")
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load(d, untrusted=True, instruction_limit=limit)
    assert info.value.error == "LEAKS "
