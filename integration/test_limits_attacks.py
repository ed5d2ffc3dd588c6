"""Attacks on the instruction budget, the memory cap and the host process (issue 17).

Every attack runs in a child process: a crash or a hang of the host is a failed test (exit code,
stderr and a generous timeout are checked), never a dead or stuck pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

#: Only bounds a hang; nothing here measures time.
HANG_TIMEOUT = int(os.environ.get("LUAPLUG_ATTACK_TIMEOUT", "120"))

#: Prepended to every attack script: the backend, and a contract built from `FNS`.
HEADER = """
import sys, luaplug
from luaplug.abi import ffi
BACKEND = sys.argv[1]

def bundle(fns, pre=""):
    return pre + "\\nlocal F = {" + fns + "}\\n" + '''
function polyplug_init()
  return { ["atk.A"] = { factory = function() return {} end, functions = F } }, { code = 0 }
end
'''
"""


def run_attack(backend: str, script: str) -> str:
    """Run `script` (after HEADER) in a child Python on `backend`; its stdout.

    The child must exit 0 with nothing on stderr but log lines: a signal, a Lua panic or an
    unhandled exception fails the test."""
    code = HEADER + textwrap.dedent(script)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, backend], capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the host process hung (killed after {HANG_TIMEOUT} s); stdout: {exc.stdout!r}")
    assert "PANIC" not in proc.stderr and "Fatal Python error" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, f"exit code {proc.returncode}; stderr:\n{proc.stderr}"
    return proc.stdout


LIMITED_CALL = """
def limited_call(src, **opts):
    opts.setdefault("instruction_limit", 100_000)
    with luaplug.Runtime(BACKEND) as rt:
        rt.load_code(src, "atk", **opts)
        inst = rt.contract("atk.A@1").default
        try:
            inst.call(0)
        except luaplug.DispatchLimitError:
            print("stopped")
        except luaplug.LuaplugError as exc:
            print("failed", type(exc).__name__, exc)
        else:
            print("returned")
        inst.call(1)  # the bundle stays usable
        print("usable")
"""


# -- the instruction limit cannot be switched off ------------------------------------------------------


@pytest.mark.parametrize("untrusted", [False, True], ids=["trusted", "untrusted"])
@pytest.mark.parametrize(
    "attack",
    [
        "error = function() end",
        "error = nil; setmetatable(_G, { __index = function(_, k)"
        " if k == 'error' then return function() end end end })",
    ],
    ids=["error-replaced", "error-nil-index"],
)
def test_replacing_error_does_not_switch_the_budget_off(backend: str, untrusted: bool, attack: str) -> None:
    out = run_attack(
        backend,
        LIMITED_CALL
        + f"""
limited_call(bundle("[0] = function() {attack}; while true do end end, [1] = function() end"),
             untrusted={untrusted})
""",
    )
    assert out.split() == ["stopped", "usable"]


@pytest.mark.parametrize("untrusted", [False, True], ids=["trusted", "untrusted"])
def test_code_named_like_luaplug_is_metered(backend: str, untrusted: bool) -> None:
    out = run_attack(
        backend,
        LIMITED_CALL
        + f"""
limited_call(bundle('''[0] = function() load("while true do end", "=luaplug_host")() end,
                       [1] = function() end'''), untrusted={untrusted})
""",
    )
    assert out.split() == ["stopped", "usable"]


@pytest.mark.parametrize("untrusted", [False, True], ids=["trusted", "untrusted"])
def test_an_xpcall_handler_runs_no_instruction_past_the_budget(backend: str, untrusted: bool) -> None:
    out = run_attack(
        backend,
        LIMITED_CALL
        + f"""
limited_call(bundle('''[0] = function()
    return xpcall(function() while true do end end, function(e) while true do end end)
  end, [1] = function() end'''), untrusted={untrusted})
""",
    )
    assert out.split() == ["stopped", "usable"]


def test_a_trusted_bundle_cannot_reach_the_hook_or_its_upvalues(backend: str) -> None:
    # Every function reachable from the hook or from luaplug's frames on the stack is tried
    # without arguments: the real debug.sethook called so clears the hook.
    out = run_attack(
        backend,
        LIMITED_CALL
        + """
limited_call(bundle('''[0] = function()
    local debug, pcall, setfenv, ipairs, type = debug, pcall, setfenv, ipairs, type
    local found = {}
    local h = debug.gethook()
    if h then found[#found + 1] = h end
    for level = 2, 12 do
      local ok, info = pcall(debug.getinfo, level, "f")
      if ok and info and info.func then found[#found + 1] = info.func end
    end
    local off = false
    for _, f in ipairs(found) do
      for i = 1, 60 do
        local ok, name, v = pcall(debug.getupvalue, f, i)
        if ok and type(v) == "function" then
          pcall(v)
          if debug.gethook() == nil then off = true; break end
        end
      end
      if off then break end
    end
    while true do end
  end, [1] = function() end'''))
""",
    )
    assert out.split() == ["stopped", "usable"]


def test_getfenv_hands_out_no_exemption(backend: str) -> None:
    # The environment of luaplug's own functions marks its frames for the hook: a bundle that
    # could take it would run unmetered.
    out = run_attack(
        backend,
        LIMITED_CALL
        + """
limited_call(bundle('''[0] = function(_, _, _, _, alloc)
    local pcall, getfenv, setfenv, ipairs, G = pcall, getfenv, setfenv, ipairs, _G
    for _, target in ipairs({ alloc, 3, 4, 5, 6 }) do
      local ok, env = pcall(getfenv, target)
      if ok and env ~= G then
        local spin = function() while true do end end
        setfenv(spin, env)
        spin()
      end
      pcall(setfenv, target, {})
    end
    while true do end
  end, [1] = function() end'''), untrusted=True)
""",
    )
    assert out.split() == ["stopped", "usable"]


def test_an_untrusted_bundle_gets_no_finalizer(backend: str) -> None:
    # LuaJIT runs __gc with hooks off: an endless finalizer would hang the unload (or the
    # whole process, GIL held). Untrusted bundles get no way to set one.
    out = run_attack(
        backend,
        """
src = bundle("[0] = function() end", pre='''
local ffi = require("ffi")
local spin = function() while true do end end
local routes = {}
routes[#routes + 1] = pcall(function() local p = newproxy(true); getmetatable(p).__gc = spin; KEEP1 = p end)
routes[#routes + 1] = pcall(function() KEEP2 = ffi.gc(ffi.new("int[1]"), spin) end)
routes[#routes + 1] = pcall(function()
  local mt = {}
  local t = ffi.metatype("struct { int x; }", mt)
  mt.__gc = spin
  KEEP3 = t()
end)
routes[#routes + 1] = pcall(function() KEEP4 = ffi.metatype("struct { int y; }", { __gc = spin })() end)
local n = 0
for _, ok in ipairs(routes) do if ok then n = n + 1 end end
ROUTES = n
''')
with luaplug.Runtime(BACKEND) as rt:
    b = rt.load_code(src, "atk", untrusted=True, instruction_limit=100_000)
    rt.unload(b)
    print("unloaded")
print("closed")
""",
    )
    assert out.split() == ["unloaded", "closed"]


# -- the host process neither dies nor hangs ------------------------------------------------------------


def test_an_entry_file_larger_than_the_cap_fails_the_load(backend: str) -> None:
    out = run_attack(
        backend,
        """
src = "-- " + "x" * 3_000_000 + "\\n" + bundle("[0] = function() end")
with luaplug.Runtime(BACKEND) as rt:
    try:
        rt.load_code(src, "big", memory_limit=1_000_000)
    except luaplug.InitMemoryError as exc:
        print("InitMemoryError", "not enough memory" in str(exc))
    rt.load_code(bundle("[0] = function() end"), "small", memory_limit=8_000_000)
    print("still loads")
""",
    )
    assert out.split() == ["InitMemoryError", "True", "still", "loads"]


@pytest.mark.parametrize("cap", [1, 200, 5000])
def test_a_tiny_memory_cap_fails_the_load(backend: str, cap: int) -> None:
    out = run_attack(
        backend,
        f"""
with luaplug.Runtime(BACKEND) as rt:
    try:
        rt.load_code(bundle("[0] = function() end"), "tiny", memory_limit={cap})
    except luaplug.InitMemoryError as exc:
        print(type(exc).__name__)
    print(rt.contracts())
""",
    )
    assert out.split() == ["InitMemoryError", "[]"]


def test_running_out_of_memory_around_a_call_leaves_the_contract_usable(backend: str) -> None:
    # fn 0 fills the cap to the last few bytes (every failure caught), then spins past its budget
    # catching the limit error: luaplug's own bookkeeping around the handler meets a full heap
    # and a hook that fires on every instruction. The calls after it (given a cffi pointer, which
    # lupa would wrap in a userdata of the full VM) and a create_instance must run normally.
    out = run_attack(
        backend,
        """
src = bundle('''[0] = function()
    local size, rep, pcall, H = 65536, string.rep, pcall, nil
    local function grab() H = { H, rep("x", size) } end
    local function node() H = { H } end
    local function tiny() H = { next = H } end
    while size >= 16 do
      while pcall(grab) do end
      size = math.floor(size / 2)
    end
    while pcall(node) do end
    while true do pcall(tiny) end
  end,
  [1] = function() end,
  [2] = function(_, _, out) require("ffi").cast("int32_t*", out)[0] = 7 end''')
codes = []
with luaplug.Runtime(BACKEND) as rt:
    b = rt.load_code(src, "hoarder", memory_limit=4_000_000, instruction_limit=5_000_000)
    inst = rt.contract("atk.A@1").default
    out = ffi.new("int32_t*")
    for _ in range(2):
        for fn in (0, 1, 2):
            codes.append(int(inst.dispatch(fn, None, out)))  # an int code, never an exception
        rt.contract("atk.A@1").create_instance().destroy()  # lupa allocates for it, outside Lua
    rt.unload(b)
print(codes, out[0])
""",
    )
    assert out.split() == ["[1,", "0,", "0,", "1,", "0,", "0]", "7"]


def test_dropping_the_ffi_module_does_not_crash_the_close(backend: str) -> None:
    # LuaJIT keeps ffi.gc's finalizer table only through the ffi module; a bundle that drops
    # every reference to the module must not make closing its VM crash.
    out = run_attack(
        backend,
        """
src = bundle("[0] = function() end", pre='''
do local ffi = require("ffi"); KEEP = ffi.gc(ffi.new("int[1]"), function() end) end
package.loaded.ffi = nil
''')
for untrusted in (False, True):
    for _ in range(3):
        with luaplug.Runtime(BACKEND) as rt:
            try:
                b = rt.load_code(src, "dropper", untrusted=untrusted)
            except luaplug.LoadError:
                continue
            rt.contract("atk.A@1").default.call(0)
            rt.unload(b)
print("done")
""",
    )
    assert out.split() == ["done"]
