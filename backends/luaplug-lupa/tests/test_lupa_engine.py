"""lupa-specific behaviour: the VM it builds, bytecode, unavailability."""

from __future__ import annotations

import functools
import gc
import importlib
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import luaplug
import luaplug.runtime
from luaplug.backend import (
    CAP_MEMORY_LIMIT,
    CAP_PARALLEL_STATES,
    CAP_REFUSES_BYTECODE,
    StateOptions,
)
from luaplug.backend import discovery as backends
from luaplug.epoch import Collector
from luaplug.ids import bundle_id
from luaplug_lupa import engine as lupa_engine

PROBE = """
local ffi = require("ffi")
counter_global = (counter_global or 0) + 1
local seen = {
  python = tostring(python),
  loaded_python = tostring(package.loaded.python),
  jit = tostring(jit ~= nil and jit.version),
  bit = tostring(bit ~= nil and bit.band ~= nil),
  ffi = tostring(ffi ~= nil and ffi.sizeof("void*")),
  path = package.path,
}
local function report(_, args)
  seen.counter = tostring(counter_global)
  local key = ffi.string(ffi.cast("const char*", args))
  error(seen[key], 0)
end
function polyplug_init(host, ctx)
  return { ["t.Probe"] = { factory = function() return {} end, functions = { [0] = function() end, [1] = report } } },
    { code = 0 }
end
"""


@pytest.fixture
def rt() -> luaplug.Runtime:
    r = luaplug.Runtime("lupa")
    yield r  # type: ignore[misc]
    r.close()


def _probe(rt: luaplug.Runtime, key: str, contract: str = "t.Probe@1") -> str:
    """What the probe bundle's VM saw for ``key`` (its function 1 fails with that text)."""
    from luaplug.abi import ffi

    name = ffi.new("char[]", key.encode())
    with pytest.raises(luaplug.DispatchError) as info:
        rt.contract(contract).default.call(1, name)
    return str(info.value.lua_error).split("\nstack traceback:", 1)[0]


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
    rt.load_code(PROBE, "probe")
    rt.load_code(PROBE.replace("t.Probe", "t.Probe2"), "probe2")
    assert _probe(rt, "counter") == "1"
    assert _probe(rt, "counter", "t.Probe2@1") == "1"


def test_bytecode_is_refused(rt: luaplug.Runtime) -> None:
    dumped = lupa_engine._lupa.LuaRuntime(encoding=None).eval(b"string.dump(function() polyplug_init = nil end)")
    assert dumped[:1] == b"\x1b"
    with pytest.raises(luaplug.InitFailed) as info:
        rt.load_code(dumped.decode("latin-1"), "bc")
    assert info.value.error == "Lua script load failed for bc: precompiled bytecode is refused"
    assert rt.contracts() == []


@contextmanager
def engine_on(monkeypatch: pytest.MonkeyPatch, lupa: types.ModuleType | None) -> Iterator[types.ModuleType]:
    """luaplug_lupa.engine imported again where ``lupa`` is the lupa package (None: no lupa)
    and ``lupa.luajit21`` does not exist; the real one is back afterwards."""
    monkeypatch.setitem(sys.modules, "lupa.luajit21", None)
    monkeypatch.setitem(sys.modules, "lupa", lupa)
    try:
        yield importlib.reload(lupa_engine)
    finally:
        monkeypatch.undo()
        importlib.reload(lupa_engine)


class Lupa1Runtime:
    """What lupa 1.x's LuaRuntime offers the engine, over a LuaJIT runtime of the lupa here:
    no ``max_memory`` (a TypeError, as lupa 1.14 raises), and ``execute``/``eval`` take the code
    and its arguments only (no chunk name, no mode)."""

    def __init__(self, base: Any, **kwargs: Any) -> None:
        if "max_memory" in kwargs:
            raise TypeError("__cinit__() got an unexpected keyword argument 'max_memory'")
        self._rt = base.LuaRuntime(**kwargs)

    def execute(self, code: Any, *args: Any) -> Any:
        return self._rt.execute(code, *args)

    def eval(self, code: Any, *args: Any) -> Any:
        return self._rt.eval(code, *args)

    def globals(self) -> Any:
        return self._rt.globals()


def lupa_1x(runtime: Any) -> types.ModuleType:
    """A lupa 1.14.1 package whose one Lua is ``runtime`` (a LuaRuntime class); no LuaMemoryError."""
    base = lupa_engine._lupa
    module = types.ModuleType("lupa")
    module.__version__ = "1.14.1"  # type: ignore[attr-defined]
    module.LuaRuntime = runtime  # type: ignore[attr-defined]
    module.LuaError = base.LuaError  # type: ignore[attr-defined]
    module.LuaSyntaxError = base.LuaSyntaxError  # type: ignore[attr-defined]
    return module


def test_unavailable_without_lupa(monkeypatch: pytest.MonkeyPatch) -> None:
    with engine_on(monkeypatch, None) as fresh:
        reason = fresh.LupaEngine.unavailable_reason()
        assert reason is not None and "lupa.luajit21" in reason and "nor lupa" in reason
        info = backends.BackendInfo(name="lupa-test", engine="luaplug_lupa.engine:LupaEngine")
        assert info.probe() == reason
        with pytest.raises(luaplug.BackendUnavailableError, match="nor lupa"):
            info.engine_class()


@pytest.mark.parametrize("version", [b"Lua 5.4", b"LuaJIT 2.0.5"])
def test_unavailable_when_lupa_runs_another_lua(monkeypatch: pytest.MonkeyPatch, version: bytes) -> None:
    class OtherLua:
        def __init__(self, **kwargs: Any) -> None:
            pass

        def eval(self, code: bytes) -> bytes:
            return version

    with engine_on(monkeypatch, lupa_1x(OtherLua)) as fresh:
        reason = fresh.LupaEngine.unavailable_reason()
        assert reason is not None and reason.startswith("lupa.luajit21 cannot be imported")
        assert reason.endswith(f", and lupa 1.14.1 runs {version.decode()}, not LuaJIT 2.1")
        info = backends.BackendInfo(name="lupa-test", engine="luaplug_lupa.engine:LupaEngine")
        with pytest.raises(luaplug.BackendUnavailableError, match=r"not LuaJIT 2\.1"):
            info.engine_class()


def test_lupa_1x_on_luajit_runs_bundles_without_a_memory_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """lupa 1.x built against LuaJIT 2.1 (Debian's python3-lupa): the backend runs on its default
    runtime, lacks CAP_MEMORY_LIMIT, and a load asking for a cap is refused before anything runs."""
    base = lupa_engine._lupa
    with engine_on(monkeypatch, lupa_1x(functools.partial(Lupa1Runtime, base))) as fresh:
        assert fresh.LupaEngine.unavailable_reason() is None
        assert fresh.LupaEngine.capabilities == {CAP_PARALLEL_STATES, CAP_REFUSES_BYTECODE}
        assert re.fullmatch(r"LuaJIT 2\.1\S* \(lupa 1\.14\.1, lupa\.LuaRuntime\)", fresh.LupaEngine().lua_version())
        info = backends.BackendInfo(name="lupa1", engine="luaplug_lupa.engine:LupaEngine")
        monkeypatch.setattr(luaplug.runtime, "select_backend", lambda name=None, configured=None: info)
        with luaplug.Runtime("lupa1") as rt:
            rt.load_code(PROBE, "probe")
            assert _probe(rt, "python") == "nil"
            assert _probe(rt, "jit").startswith("LuaJIT 2.1")
            assert rt.contract("t.Probe@1").default.dispatch(0) == 0
            with pytest.raises(luaplug.CapabilityError) as info_:
                rt.load_code(PROBE.replace("t.Probe", "t.Capped"), "capped", memory_limit=1 << 20)
            assert (info_.value.backend, info_.value.capability) == ("lupa1", CAP_MEMORY_LIMIT)
            assert "memory_limit" in str(info_.value)
            assert rt.contracts() == ["t.Probe@1"]
            with pytest.raises(luaplug.InitFailed) as failed:
                rt.load_code("x = = 1", "broken")
            assert isinstance(failed.value.__cause__, luaplug.LuaSyntaxError)
            # The engine itself never makes an uncapped VM for a capped load.
            with pytest.raises(luaplug.LuaplugError, match="memory_limit"):
                fresh.LupaEngine().new_state(
                    host_address=0, bundle="capped", options=StateOptions(memory_limit=1 << 20)
                )


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
    from luaplug_lupa import _entry

    assert type(inst.dispatch.__self__) is type(inst.call.__self__) is _entry.Entry
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


def test_an_entry_bound_without_a_target_raises_instead_of_crashing(rt: luaplug.Runtime) -> None:
    from luaplug_lupa import _entry

    rt.load_code(PROBE, "probe")
    inst = rt.contract("t.Probe@1").default
    state = next(iter(rt.loader._live.values()))
    entry = _entry.bind(state, inst, 0, None, 0, 0)
    with pytest.raises(TypeError, match="without a target"):
        entry(0)
