"""Resource limits and untrusted mode (issue 8): a memory cap per bundle, an instruction budget
per call, and bundles run without os/io/debug/bytecode/C modules/raw ffi."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.backend import LuaError, StateOptions

MiB = 1024 * 1024

# A contract whose fn 0 allocates `n` KiB of strings it keeps only for the call,
# fn 1 does nothing, fn 2 spins forever, fn 3 spins inside pcall in a loop (trying to
# swallow the budget's error), fn 4 counts to `n` (a call under the budget).
HUNGRY = """
local ffi = require("ffi")
local function grab(_, args)
  local n = ffi.cast("const int32_t*", args)[0]
  local keep = {}
  for i = 1, n do keep[i] = string.rep("x", 1024) .. i end
  return #keep
end
local function spin() while true do end end
local function stubborn()
  while true do pcall(function() while true do end end) end
end
local function count(_, args, out)
  local n, s = ffi.cast("const int32_t*", args)[0], 0
  for i = 1, n do s = s + i end
  ffi.cast("int64_t*", out)[0] = s
end
function polyplug_init()
  return { ["iso.Hungry"] = { factory = function() return {} end,
    functions = { [0] = grab, [1] = function() end, [2] = spin, [3] = stubborn, [4] = count } } }, { code = 0 }
end
"""


def int_arg(n: int) -> object:
    return ffi.new("int32_t*", n)


# -- memory ---------------------------------------------------------------------------------------


JIT_PROBE = """
local ffi = require("ffi")
local function status(_, _, out)
  jit.on()  -- a bundle may ask; a capped state stays interpreted
  ffi.cast("int32_t*", out)[0] = jit.status() and 1 or 0
end
function polyplug_init()
  return { ["iso.Jit"] = { factory = function() return {} end, functions = { [0] = status } } }, { code = 0 }
end
"""


@pytest.mark.requires("memory_limit")
def test_a_capped_state_runs_interpreted_even_when_its_bundle_asks_for_the_jit(backend: str) -> None:
    # Compiled code meeting a full heap call after call can crash LuaJIT 2.1 (docs/how-to/limits.md),
    # so a memory cap keeps the JIT off for good; an uncapped state keeps it.
    out = ffi.new("int32_t*")
    with luaplug.Runtime(backend) as rt:
        rt.load_code(JIT_PROBE, "capped", memory_limit=8 * MiB)
        rt.contract("iso.Jit@1").default.call(0, None, out)
        assert out[0] == 0
        rt.unload("capped")
        rt.load_code(JIT_PROBE, "free")
        rt.contract("iso.Jit@1").default.call(0, None, out)
        assert out[0] == 1


@pytest.mark.requires("memory_limit")
def test_a_call_over_the_memory_limit_fails_and_the_bundle_stays_usable(backend: str, bundles: Path) -> None:
    with luaplug.Runtime(backend, memory_limit=8 * MiB) as rt:
        rt.load_code(HUNGRY, "hungry")
        rt.load(bundles / "counter")  # same cap, well within it
        inst = rt.contract("iso.Hungry@1").default
        inst.call(0, int_arg(256))  # 256 KiB: fine
        with pytest.raises(luaplug.DispatchMemoryError) as info:
            inst.call(0, int_arg(64 * 1024))  # 64 MiB: over the cap
        assert isinstance(info.value, luaplug.LuaMemoryError)
        assert isinstance(info.value, luaplug.DispatchError)
        assert info.value.code == luaplug.AbiErrorCode.Generic
        assert "not enough memory" in (info.value.lua_error or "")
        assert inst.dispatch(0, int_arg(64 * 1024)) == luaplug.AbiErrorCode.Generic
        for _ in range(3):  # what failed was freed: the bundle keeps working
            inst.call(0, int_arg(256))
        out = ffi.new("int64_t*")
        rt.contract("iso.Counter@1").default.call(0, 0, out)
        assert out[0] == 1


@pytest.mark.requires("memory_limit")
def test_a_load_over_the_memory_limit_fails_cleanly(backend: str, bundles: Path) -> None:
    greedy = "local t = {} for i = 1, 1e7 do t[i] = string.rep('y', 64) .. i end\n" + HUNGRY
    with luaplug.Runtime(backend) as rt:
        rt.load(bundles / "counter")
        with pytest.raises(luaplug.InitMemoryError) as info:
            rt.load_code(greedy, "greedy", memory_limit=4 * MiB)
        assert isinstance(info.value, luaplug.LuaMemoryError) and isinstance(info.value, luaplug.LoadError)
        assert "not enough memory" in info.value.error
        assert rt.contracts() == ["iso.Counter@1"]
        rt.load_code(HUNGRY, "hungry", memory_limit=4 * MiB)  # the same runtime loads within a cap
        rt.contract("iso.Hungry@1").default.call(0, int_arg(64))


@pytest.mark.requires("memory_limit")
def test_a_load_may_lift_the_runtime_default(backend: str) -> None:
    with luaplug.Runtime(backend, memory_limit=4 * MiB) as rt:
        capped = rt.load_code(HUNGRY, "capped")
        assert capped.options.memory_limit == 4 * MiB
        with pytest.raises(luaplug.DispatchMemoryError):
            rt.contract("iso.Hungry@1").default.call(0, int_arg(16 * 1024))
        rt.unload("capped")
        free = rt.load_code(HUNGRY, "free", memory_limit=0)
        assert free.options.memory_limit is None
        rt.contract("iso.Hungry@1").default.call(0, int_arg(16 * 1024))


def test_a_memory_cap_on_a_backend_without_the_capability_is_refused(backend: str, bundles: Path) -> None:
    with luaplug.Runtime(backend) as rt:
        rt.load(bundles / "counter")
        if "memory_limit" in rt.capabilities:
            assert rt.load_code(HUNGRY, "hungry", memory_limit=4 * MiB).options.memory_limit == 4 * MiB
            return
        with pytest.raises(luaplug.CapabilityError) as info:
            rt.load_code(HUNGRY, "hungry", memory_limit=4 * MiB)
        assert (info.value.backend, info.value.capability) == (backend, "memory_limit")
        assert rt.contracts() == ["iso.Counter@1"]  # nothing of it ran or stayed
        rt.load_code(HUNGRY, "hungry")  # uncapped, it loads
        rt.contract("iso.Hungry@1").default.call(0, int_arg(64))


@pytest.mark.parametrize("bad", [-1, 1.5, "8M"])
def test_limits_must_be_non_negative_ints(backend: str, bad: object) -> None:
    with pytest.raises(ValueError):
        luaplug.Runtime(backend, memory_limit=bad)  # type: ignore[arg-type]


# -- instruction budget -----------------------------------------------------------------------------


@pytest.fixture
def budgeted(backend: str) -> Iterator[luaplug.Runtime]:
    rt = luaplug.Runtime(backend, instruction_limit=200_000)
    rt.load_code(HUNGRY, "hungry")
    yield rt
    rt.close()


@pytest.mark.parametrize("fn", [2, 3], ids=["spin", "pcall-loop"])
def test_a_runaway_call_is_stopped(budgeted: luaplug.Runtime, fn: int) -> None:
    inst = budgeted.contract("iso.Hungry@1").default
    with pytest.raises(luaplug.DispatchLimitError) as info:
        inst.call(fn)
    assert isinstance(info.value, luaplug.InstructionLimitError)
    assert (info.value.lua_error or "").startswith("instruction limit exceeded")
    out = ffi.new("int64_t*")
    for _ in range(5):  # each call gets a fresh budget; the VM is fine
        inst.call(4, int_arg(1000), out)
        assert out[0] == 500500


def test_the_budget_is_per_call_and_the_jit_stays_off(budgeted: luaplug.Runtime) -> None:
    inst = budgeted.contract("iso.Hungry@1").default
    out = ffi.new("int64_t*")
    inst.call(4, int_arg(20_000), out)  # well under 200k instructions
    assert out[0] == 20_000 * 20_001 // 2
    with pytest.raises(luaplug.DispatchLimitError):
        inst.call(4, int_arg(10_000_000), out)
    probe = """
    local jit = require("jit")
    function polyplug_init()
      jit.on()  -- a no-op under a budget
      local ok = pcall(debug.sethook)
      return { ["iso.JitProbe"] = { factory = function() return {} end, functions = { [0] = function(_, _, out)
        require("ffi").cast("int32_t*", out)[0] = (jit.status() and 1 or 0) + (ok and 2 or 0)
      end } } }, { code = 0 }
    end
    """
    budgeted.load_code(probe, "probe")
    flags = ffi.new("int32_t*", -1)
    budgeted.contract("iso.JitProbe@1").default.call(0, 0, flags)
    assert flags[0] == 0  # JIT off, and debug.sethook refused


def test_a_runaway_load_is_stopped(backend: str, bundles: Path) -> None:
    with luaplug.Runtime(backend) as rt:
        with pytest.raises(luaplug.InitLimitError) as info:
            rt.load_code("while true do end", "forever", instruction_limit=100_000)
        assert isinstance(info.value, luaplug.InstructionLimitError)
        assert "instruction limit exceeded" in info.value.error
        with pytest.raises(luaplug.InitLimitError):
            rt.load_code("function polyplug_init() while true do end end", "init_forever", instruction_limit=100_000)
        assert rt.contracts() == []
        rt.load(bundles / "counter", instruction_limit=100_000)
        out = ffi.new("int64_t*")
        rt.contract("iso.Counter@1").default.call(0, 0, out)
        assert out[0] == 1


@pytest.mark.requires("memory_limit")
def test_a_reload_keeps_the_limits(backend: str, copy_bundle: object) -> None:
    src = copy_bundle("valuecalc")  # type: ignore[operator]
    with luaplug.Runtime(backend, hot_reload=True) as rt:
        rt.load(src, instruction_limit=50_000, memory_limit=8 * MiB, untrusted=True)
        new = rt.reload("valuecalc")
        assert new.options == StateOptions(8 * MiB, 50_000, True)


def test_a_reload_keeps_the_budget_and_untrusted_mode(backend: str, copy_bundle: object) -> None:
    src = copy_bundle("valuecalc")  # type: ignore[operator]
    with luaplug.Runtime(backend, hot_reload=True) as rt:
        rt.load(src, instruction_limit=50_000, untrusted=True)
        new = rt.reload("valuecalc")
        assert new.options == StateOptions(None, 50_000, True)


# -- the limits part of the prelude ----------------------------------------------------------------


def test_a_state_gets_the_limits_part_only_when_its_load_asks_for_it(runtime: luaplug.Runtime) -> None:
    """A fresh state has the host prelude only; ``harden`` (and ``values``) arrive with ``load_part``."""
    state = runtime.engine.new_state(host_address=0, bundle="parts")
    try:
        with pytest.raises(LuaError, match=r"harden|nil"):
            state.call_prelude("harden", 0, 0)
        code = state.prelude_part("harden")
        part = ffi.from_buffer(code)
        state.call_prelude("load_part", int(ffi.cast("uintptr_t", part)), len(code))
        assert state.call_prelude("harden", 0, 0) == ()  # neither a budget nor untrusted: nothing to do
        with pytest.raises(LuaError, match=r"load_part|nil"):  # once per state
            state.call_prelude("load_part", int(ffi.cast("uintptr_t", part)), len(code))
    finally:
        state.retire()
        state.close()


#: A fresh process whose first load is capped, budgeted and untrusted (the limits part is
#: made for the process there, under the cap), then a trusted one; prints what both answer.
FIRST_LOAD = """
import sys
from pathlib import Path
import luaplug
from luaplug.abi import ffi
backend, bundles = sys.argv[1], Path(sys.argv[2])
with luaplug.Runtime(backend) as rt:
    rt.load(bundles / "valuecalc", untrusted=True, memory_limit=8 << 20, instruction_limit=50_000)
    with rt.bind(bundles / "valuecalc" / "api.toml", "value.Calc@1") as calc:
        print(calc.add(2, 3), calc.greet("world"))
    rt.load(bundles / "counter")
    out = ffi.new("int64_t*")
    rt.contract("iso.Counter@1").default.call(0, 0, out)
    print(out[0])
"""


def _child(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh Python with ``args``; its outcome (``timeout`` bounds a hang only)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.requires("memory_limit")
def test_the_first_load_of_a_process_may_be_capped_and_untrusted(backend: str, bundles: Path) -> None:
    proc = _child(FIRST_LOAD, backend, str(bundles))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n") == ["5 hello, world", "1", ""]


#: Loads an untrusted bundle under growing caps in one runtime, from one too small for the VM to
#: one it fits in; prints each failure's text, then what the bundle answers.
CAP_STEPS = """
import sys
from pathlib import Path
import luaplug
backend, bundles = sys.argv[1], Path(sys.argv[2])
with luaplug.Runtime(backend) as rt:
    for kib in range(64, 1024, 16):
        try:
            rt.load(bundles / "valuecalc", untrusted=True, memory_limit=kib << 10)
        except luaplug.InitFailed as exc:
            print(exc)
            continue
        with rt.bind(bundles / "valuecalc" / "api.toml", "value.Calc@1") as calc:
            print("loaded", calc.add(40, 2))
        break
"""


@pytest.mark.requires("memory_limit")
def test_caps_too_small_for_an_untrusted_load_fail_it_cleanly(backend: str, bundles: Path) -> None:
    """Every step of an untrusted load (the VM, the package paths, the limits part, the value
    glue, the chunk, init) runs under the state's cap: one too small fails the load with
    ``InitFailed`` naming the memory, never the process, and the runtime goes on."""
    proc = _child(CAP_STEPS, backend, str(bundles))
    assert proc.returncode == 0, proc.stderr
    *failures, last = proc.stdout.splitlines()
    assert last == "loaded 42"
    assert failures, "the smallest cap should be too small"
    for text in failures:
        # lupa reports a traceback handler that failed for want of memory as "error in error handling"
        assert "not enough memory" in text or "error in error handling" in text, text


CAP_SWEEP = """
import sys
from pathlib import Path

import luaplug

backend, bundles, untrusted = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
bundle = bundles / ("valuecalc" if untrusted else "counter")
limits = {"untrusted": True, "instruction_limit": 100_000} if untrusted else {}
loaded = 0
with luaplug.Runtime(backend) as rt:
    # A prime step from 1 byte up: the cap falls at every phase of a load, at many offsets
    # inside each (the VM's creation, the prelude's bytecode, the hardening, the chunk, init).
    for cap in range(1, 320 * 1024, 61):
        try:
            b = rt.load(bundle, memory_limit=cap, **limits)
        except luaplug.InitFailed:
            continue
        rt.unload(b)
        loaded += 1
print("loads", loaded)
"""


@pytest.mark.requires("memory_limit")
@pytest.mark.parametrize("untrusted", [False, True], ids=["trusted", "untrusted"])
def test_no_cap_ends_the_process_at_any_point_of_a_load(backend: str, bundles: Path, untrusted: bool) -> None:
    """A cap that runs out anywhere in a load (LuaJIT 2.1 cannot close a state whose bytecode
    read ran out of memory, nor survive a failure inside lua_newstate; lupa pushes some
    arguments unprotected) fails that load with ``InitFailed``; the process goes on."""
    proc = _child(CAP_SWEEP, backend, str(bundles), "1" if untrusted else "0", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loads = int(proc.stdout.split()[-1])
    assert loads > 0, proc.stdout  # the larger caps hold the bundle


# -- untrusted mode -----------------------------------------------------------------------------------

PROBE = r"""
local results = {}
local function check(name, ok) results[#results + 1] = name .. "=" .. (ok and "1" or "0") end
local has_ffi, ffi = pcall(require, "ffi")
check("os", os ~= nil)
check("io", io ~= nil)
check("debug", debug ~= nil)
check("dofile", dofile ~= nil)
check("loadfile", loadfile ~= nil)
check("loadlib", package.loadlib ~= nil)
check("bytecode", (loadstring(string.dump(function() return 1 end)) ~= nil))
check("load_bytecode", (load(string.dump(function() return 1 end), "x", "b") ~= nil))
check("source", loadstring("return 40 + 2")() == 42)
check("ffi", has_ffi)
check("ffi.C", has_ffi and ffi.C ~= nil)
check("ffi.load", has_ffi and ffi.load ~= nil)
check("ffi.cast", has_ffi and ffi.cast ~= nil)
check("sdk", (pcall(require, "polyplug_guest")))
check("jit.util", pcall(require, "jit.util"))
check("c_module", pcall(require, "some_c_module"))
local report = table.concat(results, ",")
function polyplug_init() return {}, { code = 1, message = "REPORT " .. report } end
"""


def probe(rt: luaplug.Runtime, **load: object) -> dict[str, str]:
    """What the PROBE bundle found (it reports through its init status)."""
    with pytest.raises(luaplug.InitFailed) as info:
        rt.load_code(PROBE, "probe", **load)  # type: ignore[arg-type]
    text = info.value.error.removeprefix("REPORT ")
    return dict(item.split("=") for item in text.split(","))


def test_untrusted_bundles_lose_the_dangerous_parts(runtime: luaplug.Runtime) -> None:
    seen = probe(runtime, untrusted=True)
    for gone in ("os", "io", "debug", "dofile", "loadfile", "loadlib", "bytecode", "load_bytecode"):
        assert seen[gone] == "0", gone
    # no ffi in any form, and so none of the SDK modules (they all need it)
    for gone in ("ffi", "ffi.C", "ffi.load", "ffi.cast", "sdk", "jit.util", "c_module"):
        assert seen[gone] == "0", gone
    assert seen["source"] == "1"


def test_trusted_bundles_keep_everything(runtime: luaplug.Runtime) -> None:
    seen = probe(runtime)
    for kept in (
        "os",
        "io",
        "debug",
        "dofile",
        "loadfile",
        "loadlib",
        "ffi",
        "ffi.C",
        "ffi.load",
        "source",
        "ffi.cast",
        "sdk",
    ):
        assert seen[kept] == "1", kept
    assert seen["bytecode"] == "1"  # a trusted bundle may load bytecode chunks itself


def test_untrusted_mode_refuses_a_raw_protocol_bundle(backend: str, bundles: Path) -> None:
    """Untrusted bundles speak the value protocol (test_untrusted_values.py); a bundle written for
    the raw one needs ffi and fails to load, with the reason named."""
    with luaplug.Runtime(backend) as rt:
        for name in ("counter", "greeter", "echo", "consumer"):
            with pytest.raises(luaplug.InitFailed, match=r"module '(ffi|polyplug_guest)' not found"):
                rt.load(bundles / name, untrusted=True)
            rt.load(bundles / name)
        out = ffi.new("int64_t*")
        rt.contract("iso.Counter@1").default.call(0, 0, out)
        assert out[0] == 1
