"""lupa-specific behaviour: the VM it builds, bytecode, unavailability."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

import luaplug
from luaplug import backends
from luaplug.engine import CAP_NESTED_SAME_BUNDLE, prelude_source
from luaplug.epoch import Collector
from luaplug.ids import bundle_id
from luaplug_lupa import engine as lupa_engine

PROBE = """
local ffi = require("ffi")
local probe = {}
function polyplug_init(host, ctx)
  probe.python = tostring(python)
  probe.loaded_python = tostring(package.loaded.python)
  probe.jit = tostring(jit ~= nil and jit.version)
  probe.bit = tostring(bit ~= nil and bit.band ~= nil)
  probe.ffi = tostring(ffi ~= nil and ffi.sizeof("void*"))
  probe.path = package.path
  return { ["t.Probe"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
function probe_get(k) return probe[k] end
"""


@pytest.fixture
def rt() -> luaplug.Runtime:
    r = luaplug.Runtime("lupa")
    yield r  # type: ignore[misc]
    r.close()


def _probe(rt: luaplug.Runtime, key: str) -> str:
    state = rt.loader._live[luaplug.ids.bundle_id("probe")]
    return str(state._rt.globals().probe_get(key.encode()).decode())  # type: ignore[attr-defined]


def test_vm_has_ffi_bit_jit_and_no_python(rt: luaplug.Runtime) -> None:
    rt.load_code(PROBE, "probe")
    assert _probe(rt, "python") == "nil"
    assert _probe(rt, "loaded_python") == "nil"
    assert _probe(rt, "jit").startswith("LuaJIT 2.1")
    assert _probe(rt, "bit") == "true"
    assert _probe(rt, "ffi") == "8"
    sdk = str(luaplug.sdk_path())
    assert _probe(rt, "path").startswith(f"{sdk}/?.lua;{sdk}/?.lua;")


def test_each_load_gets_a_fresh_state(rt: luaplug.Runtime) -> None:
    code = PROBE.replace("local probe = {}", "counter_global = (counter_global or 0) + 1\nlocal probe = {}")
    rt.load_code(code, "probe")
    rt.load_code(code.replace("t.Probe", "t.Probe2"), "probe2")
    states = list(rt.loader._live.values())
    assert len({id(s) for s in states}) == 2
    for s in states:
        assert s._rt.globals().counter_global == 1  # type: ignore[attr-defined]


def test_bytecode_is_refused(rt: luaplug.Runtime) -> None:
    import lupa.luajit21 as lupa

    dumped = lupa.LuaRuntime(encoding=None).eval(b"string.dump(function() polyplug_init = nil end)")
    assert dumped[:1] == b"\x1b"
    with pytest.raises(luaplug.InitFailed) as info:
        rt.load_code(dumped.decode("latin-1"), "bc")
    assert info.value.error == "Lua script load failed for bc: precompiled bytecode is refused"
    assert rt.contracts() == []


def test_capabilities_say_no_nested_same_bundle_calls() -> None:
    assert CAP_NESTED_SAME_BUNDLE not in lupa_engine.LupaEngine.capabilities


def test_prelude_runs_as_text() -> None:
    assert "return P" in prelude_source()


def test_unavailable_when_luajit21_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setitem(sys.modules, "lupa.luajit21", None)
    fresh = importlib.reload(lupa_engine)
    try:
        reason = fresh.LupaEngine.unavailable_reason()
        assert reason is not None and "lupa.luajit21" in reason
        info = backends.BackendInfo(name="lupa-test", engine="luaplug_lupa.engine:LupaEngine")
        assert info.probe() is not None
        with pytest.raises(luaplug.BackendUnavailableError):
            info.engine_class()
    finally:
        monkeypatch.undo()
        importlib.reload(lupa_engine)


def test_lupa_errors_are_translated(rt: luaplug.Runtime) -> None:
    with pytest.raises(luaplug.InitFailed) as info:
        rt.load_code("x = = 1", "broken")
    assert isinstance(info.value.__cause__, luaplug.LuaSyntaxError)
    assert info.value.error.startswith("Lua script load failed for broken:")


def test_instances_are_served_by_the_c_entry(rt: luaplug.Runtime) -> None:
    """The built extension serves dispatch/call; its fast path and every delegation
    (cffi pointers, keywords, a non-zero code) give the Python path's answers."""
    from luaplug.abi import ffi

    rt.load_code(PROBE, "probe")
    inst = rt.contract("t.Probe@1").default
    assert type(inst.dispatch).__name__ == "Entry"
    assert type(inst.call).__name__ == "Entry"
    slot = ffi.new("int64_t*")
    assert inst.dispatch(0) == 0
    assert inst.dispatch(0, 0, slot) == 0
    assert inst.dispatch(fn_id=0) == 0
    assert inst.call(0, 0, int(ffi.cast("uintptr_t", slot))) is None
    assert inst.dispatch(7) == luaplug.AbiErrorCode.FunctionNotAvailable
    with pytest.raises(luaplug.DispatchError) as info:
        inst.call(7)
    assert info.value.code == luaplug.AbiErrorCode.FunctionNotAvailable
    with pytest.raises(OverflowError):
        inst.dispatch(1 << 40)


def _lua_runtimes() -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "LuaRuntime")


@pytest.mark.parametrize("how", ["close", "reload"])
def test_reclaimed_vms_are_freed_without_the_cyclic_gc(how: str, tmp_path: Path) -> None:
    """A closed VM's LuaRuntime goes at once: no contract keeps it until a cyclic collection."""
    src = (
        "function polyplug_init() return "
        '{{ ["t.R{i}"] = {{ factory = function() return {{}} end, functions = {{}} }} }}, {{ code = 0 }} end'
    )
    gc.collect()
    gc.disable()
    try:
        base = _lua_runtimes()
        rt = luaplug.Runtime("lupa", hot_reload=True, collector=Collector())
        for i in range(5):
            d = tmp_path / f"r{i}"
            d.mkdir()
            manifest = (
                f'name = "r{i}"\nid = {bundle_id(f"r{i}")}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n'
            )
            (d / "manifest.toml").write_text(manifest)
            (d / "main.lua").write_text(src.format(i=i))
            rt.load(d)
        assert _lua_runtimes() == base + 5
        if how == "reload":
            for i in range(5):
                rt.reload(f"r{i}")
            rt.collector.collect()  # the batch of superseded VMs
            assert _lua_runtimes() == base + 5
        rt.close()
        assert _lua_runtimes() == base
    finally:
        gc.enable()
