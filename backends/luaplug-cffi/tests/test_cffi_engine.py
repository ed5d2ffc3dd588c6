"""cffi-backend specifics: the build, unavailability, bytecode, longjmp safety, parallel states."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.backend import CAP_NESTED_SAME_BUNDLE, CAP_PARALLEL_STATES, StateOptions
from luaplug.backend import discovery as backends
from luaplug_cffi import _build
from luaplug_cffi import engine as cffi_engine

NOOP = """
function polyplug_init(h, c)
  return { ["%s"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
"""


def luajit_runtime() -> Any:
    """A LuaJIT 2.1 runtime of lupa (a bytecode tool here): ``lupa.luajit21``, else lupa 1.x's
    one Lua when that is LuaJIT (Debian's python3-lupa)."""
    try:
        import lupa.luajit21 as lupa
    except ImportError:
        lupa = pytest.importorskip("lupa")
    lua = lupa.LuaRuntime(encoding=None)
    if not bytes(lua.eval(b"jit and jit.version or _VERSION")).startswith(b"LuaJIT 2.1"):
        pytest.skip("lupa has no LuaJIT 2.1 here")
    return lua


@pytest.fixture
def rt() -> luaplug.Runtime:
    r = luaplug.Runtime("cffi")
    yield r  # type: ignore[misc]
    r.close()


def test_links_the_system_luajit_shared_library() -> None:
    native = next(Path(cffi_engine.__file__).parent.glob("_native*.so"))
    out = subprocess.run(["ldd", str(native)], capture_output=True, text=True, check=True).stdout
    assert "libluajit-5.1.so" in out, out


def test_build_finds_luajit_with_pkg_config() -> None:
    flags = _build.luajit_flags()
    assert "luajit-5.1" in flags["libraries"]
    assert any(Path(d, "lua.h").exists() for d in flags["include_dirs"])


def test_build_override_and_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUAPLUG_LUAJIT_INCLUDE_DIR", "/opt/lj/include")
    monkeypatch.setenv("LUAPLUG_LUAJIT_LIB_DIR", "/opt/lj/lib")
    assert _build.luajit_flags() == {
        "include_dirs": ["/opt/lj/include"],
        "library_dirs": ["/opt/lj/lib"],
        "libraries": ["luajit-5.1"],
    }
    monkeypatch.delenv("LUAPLUG_LUAJIT_INCLUDE_DIR")
    monkeypatch.delenv("LUAPLUG_LUAJIT_LIB_DIR")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match=r"libluajit-5\.1-dev"):
        _build.luajit_flags()


def test_version_is_the_system_luajit() -> None:
    version = cffi_engine.CffiEngine().lua_version()
    assert version.startswith("LuaJIT 2.1")


def test_unavailable_without_the_compiled_module_and_others_still_found() -> None:
    code = (
        "import sys; sys.modules['luaplug_cffi._native'] = None\n"
        "import luaplug\n"
        "from luaplug.backend import discovery as backends\n"
        "info = backends.installed_backends()['cffi']\n"
        "print('REASON', info.probe())\n"
        "print('AVAILABLE', backends.available_backends())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "REASON" in out and "libluajit-5.1-dev" in out
    assert "'cffi'" not in out.split("AVAILABLE", 1)[1]


def test_capabilities() -> None:
    caps = cffi_engine.CffiEngine.capabilities
    assert CAP_NESTED_SAME_BUNDLE in caps and CAP_PARALLEL_STATES in caps


def test_bytecode_is_refused(rt: luaplug.Runtime) -> None:
    dumped = luajit_runtime().eval(b"string.dump(function() end)")
    with pytest.raises(luaplug.InitFailed, match="bytecode"):
        rt.load_code(dumped.decode("latin-1"), "bc")
    # The engine itself loads text only, whatever the core checks first.
    state = cffi_engine.CffiState(StateOptions())
    with pytest.raises(luaplug.LuaError, match="wrong mode"):
        state.run_chunk(dumped.decode("latin-1"), "bc")


def test_python_exception_in_a_host_callback_never_unwinds_lua(rt: luaplug.Runtime) -> None:
    # A logging handler that raises runs inside HostApi.log (Lua -> C -> Python):
    # cffi returns normally to Lua, the call succeeds, the VM stays usable.
    rt.load_code(
        """
local ffi = require("ffi")
local SV = ffi.typeof("struct { const uint8_t* p; size_t n; }")
local host_t = ffi.typeof("struct { void* f[18]; void (*log)(void*, uint32_t, $, $); } *", SV, SV)
function polyplug_init(h, c)
  local function f(self, a, out)
    local host = ffi.cast(host_t, h)
    local s = ffi.new(SV, ffi.cast("const uint8_t*", "scope"), 5)
    local m = ffi.new(SV, ffi.cast("const uint8_t*", "msg"), 3)
    host.log(ffi.cast("void*", h), 1, s, m)
    ffi.cast("int32_t*", out)[0] = 7
  end
  return { ["t.Log"] = { factory = function() return {} end, functions = { [0] = f } } }, { code = 0 }
end
""",
        "log",
    )

    class Boom(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("handler failure")

    log = logging.getLogger("luaplug.guest")
    handler = Boom()
    log.addHandler(handler)
    log.propagate, old = False, log.propagate
    try:
        out = ffi.new("int32_t*")
        inst = rt.contract("t.Log").default
        for _ in range(3):
            assert inst.dispatch(0, out=out) == 0
            assert out[0] == 7
    finally:
        log.removeHandler(handler)
        log.propagate = old


def test_lua_error_inside_a_nested_call_stays_inside(rt: luaplug.Runtime) -> None:
    rt.load_code(
        """
local ffi = require("ffi")
function polyplug_init(h, c)
  local function bad() error("inner") end
  local function outer(self, a, out)
    local ok = pcall(bad)
    ffi.cast("int32_t*", out)[0] = ok and 1 or 2
  end
  return { ["t.N"] = { factory = function() return {} end, functions = { [0] = outer } } }, { code = 0 }
end
""",
        "nested",
    )
    out = ffi.new("int32_t*")
    assert rt.contract("t.N").default.dispatch(0, out=out) == 0 and out[0] == 2


SPIN = """
local ffi = require("ffi")
function polyplug_init(h, c)
  local function meet(self, args, out)
    -- args: int32_t[2] shared by both threads; announce, then wait for the other.
    local flags = ffi.cast("volatile int32_t*", args)
    flags[%d] = 1
    local other = %d
    for i = 1, 3e8 do
      if flags[other] == 1 then ffi.cast("int32_t*", out)[0] = 1; return end
    end
    ffi.cast("int32_t*", out)[0] = 0
  end
  jit.off(meet)
  return { ["t.Meet%d"] = { factory = function() return {} end, functions = { [0] = meet } } }, { code = 0 }
end
"""


def test_two_bundles_on_two_threads_run_in_parallel(rt: luaplug.Runtime) -> None:
    rt.load_code(SPIN % (0, 1, 0), "meet0")
    rt.load_code(SPIN % (1, 0, 1), "meet1")
    flags = ffi.new("int32_t[2]")
    outs = [ffi.new("int32_t*"), ffi.new("int32_t*")]
    codes: list[int] = [-1, -1]

    def run(k: int) -> None:
        codes[k] = rt.contract(f"t.Meet{k}").default.dispatch(0, args=flags, out=outs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each handler saw the other one inside Lua at the same time.
    assert codes == [0, 0]
    assert [o[0] for o in outs] == [1, 1]


def test_discovered_through_the_entry_point() -> None:
    backends.reset()
    info = backends.installed_backends()["cffi"]
    assert info.engine == "luaplug_cffi.engine:CffiEngine" and info.available


def test_all_noop_bundles_load(rt: luaplug.Runtime) -> None:
    for i in range(20):
        rt.load_code(NOOP % f"t.N{i}", f"b{i}")
    assert len(rt.contracts()) == 20


ADDER = """
function polyplug_init(h, c)
  return { ["t.Add"] = { factory = function() return {} end, functions = {
    [0] = function(_, args, out)
      local a = ffi.cast("const int32_t*", args)
      ffi.cast("int32_t*", out)[0] = a[0] + a[1]
    end,
    [1] = function() error("nope") end,
  } } }, { code = 0 }
end
ffi = require("ffi")
"""


def test_instances_are_served_by_the_c_entry(rt: luaplug.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    rt.load_code(ADDER, "adder")
    inst = rt.contract("t.Add@1").create_instance()
    assert type(inst.dispatch.__self__) is type(inst.call.__self__) is cffi_engine._native.Entry
    args = ffi.new("int32_t[2]", [20, 22])
    out = ffi.new("int32_t*")
    address = int(ffi.cast("uintptr_t", args)), int(ffi.cast("uintptr_t", out))
    assert inst.dispatch(0, *address) == 0 and out[0] == 42  # the C fast case
    out[0] = 0
    assert inst.dispatch(0, args, out) == 0 and out[0] == 42  # cffi pointers: the Python path
    out[0] = 0
    assert inst.dispatch(0, args=address[0], out=address[1]) == 0 and out[0] == 42  # keywords
    assert inst.dispatch(1) == 1  # a Lua error: code, logged by the Python side
    assert "Lua function call failed" in caplog.text and "nope" in caplog.text
    with pytest.raises(luaplug.DispatchError) as info:
        inst.call(1)
    assert "nope" in (info.value.lua_error or "")
    with pytest.raises(OverflowError):
        inst.dispatch(-1)
    inst.destroy()
    assert inst.dispatch(0, *address) == luaplug.AbiErrorCode.StaleHandle


def test_a_temporary_instance_survives_its_own_call_and_is_collected(rt: luaplug.Runtime) -> None:
    import gc
    import weakref

    rt.load_code(ADDER, "adder")
    args = ffi.new("int32_t[2]", [1, 2])
    out = ffi.new("int32_t*")
    rt.contract("t.Add@1").create_instance().call(0, args, out)  # the Instance is only held by its entry
    assert out[0] == 3
    inst = rt.contract("t.Add@1").create_instance()
    ref = weakref.ref(inst)
    del inst
    gc.collect()
    assert ref() is None  # the Instance <-> C entry cycle is collectable


def test_an_entry_bound_without_its_contract_raises_instead_of_crashing(rt: luaplug.Runtime) -> None:
    rt.load_code(ADDER, "adder")
    inst = rt.contract("t.Add@1").create_instance()
    state = next(iter(rt.loader._live.values()))
    entry = cffi_engine._native.bind(state, inst, 0, None, 0, inst.id)
    with pytest.raises(TypeError, match="without its contract"):
        entry(0)


def test_the_lock_order_graph_is_handed_to_c_peer_interfaces() -> None:
    """Another engine's C peer interface records its waits in this engine's graph by calling
    lp_foreign_wait_begin/end directly: the core holds their addresses for it."""
    from luaplug.backend.loader import wait_graph_address

    slots = ffi.cast("uintptr_t*", wait_graph_address())
    lib, native_ffi = cffi_engine.lib, cffi_engine.ffi
    assert [int(slots[0]), int(slots[1])] == [
        int(native_ffi.cast("uintptr_t", native_ffi.addressof(lib, f"lp_foreign_wait_{e}"))) for e in ("begin", "end")
    ]
    begin = ffi.cast("int (*)(uintptr_t)", slots[0])
    end = ffi.cast("void (*)(void)", slots[1])
    cell = ffi.new("double[4]")
    cell[0], cell[1] = threading.get_ident(), 1.0  # a VM running on this thread
    assert begin(int(ffi.cast("uintptr_t", cell))) == -1  # waiting on it would close a cycle
    cell[1] = 0.0
    assert begin(int(ffi.cast("uintptr_t", cell))) == 0  # an idle VM: the wait is recorded
    end()


def test_prelude_calls_pass_strings_byte_for_byte_and_numbers_exactly() -> None:
    state = cffi_engine.CffiState(StateOptions())
    try:
        state.call_prelude("setup", 0, state.cell_address, state.thread_fn_address, state.arena_alloc_address, 0)
        state.call_prelude("prepend_package", "cpath", "")
        state.call_prelude("prepend_package", "path", "a\x00b;\u00e9;?")
        state.run_chunk(r'assert(package.path:sub(1, 8) == "a\0b;\195\169;?", package.path)', "t")
        # A text with a NUL byte runs whole (its length crosses, not strlen).
        with pytest.raises(luaplug.LuaError, match="after the NUL"):
            state.run_chunk('local s = "\x00" error("after the NUL")', "t")
        assert state.call_prelude("dispatcher", 2**40) == (None,)
    finally:
        state.close()
