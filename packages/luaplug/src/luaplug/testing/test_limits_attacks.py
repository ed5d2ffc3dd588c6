"""Attacks on the instruction budget, the memory cap and the host process (issue 17).

Every attack runs in a child process: a crash or a hang of the host is a failed test (exit code,
stderr and a generous timeout are checked), never a dead or stuck pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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

VALUE_API = '''
[[guest_contract]]
name = "atk.A"
version = "1.0.0"
[[guest_contract.functions]]
name = "f0"
[[guest_contract.functions]]
name = "f1"
'''

def value_bundle(fns, pre=""):
    # An untrusted bundle is on the value protocol: a directory with its api.toml. atk.A@1's
    # methods f0 and f1 are F[0] and F[1], called as method(impl) without arguments.
    import atexit, pathlib, shutil, tempfile
    from luaplug.ids import bundle_id
    d = pathlib.Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, d, True)
    (d / "manifest.toml").write_text(
        f'name = "atk"\\nid = {bundle_id("atk")}\\nloader = "lua"\\nfile = "main.lua"\\n'
        'version = "1.0.0"\\napi = "api.toml"\\n'
    )
    (d / "api.toml").write_text(VALUE_API)
    (d / "main.lua").write_text(pre + "\\nlocal F = {" + fns + "}\\n" + '''
function polyplug_init()
  return { ["atk.A@1"] = function() return { f0 = F[0], f1 = F[1] } end }, { code = 0 }
end
''')
    return d
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
        if isinstance(src, str):
            rt.load_code(src, "atk", **opts)
        else:  # a value_bundle directory
            rt.load(src, untrusted=True, **opts)
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
    make = "value_bundle" if untrusted else "bundle"
    out = run_attack(
        backend,
        LIMITED_CALL
        + f"""
limited_call({make}("[0] = function() {attack}; while true do end end, [1] = function() end"))
""",
    )
    assert out.split() == ["stopped", "usable"]


@pytest.mark.parametrize("untrusted", [False, True], ids=["trusted", "untrusted"])
def test_code_named_like_luaplug_is_metered(backend: str, untrusted: bool) -> None:
    make = "value_bundle" if untrusted else "bundle"
    out = run_attack(
        backend,
        LIMITED_CALL
        + f"""
limited_call({make}('''[0] = function() load("while true do end", "=luaplug_host")() end,
                       [1] = function() end'''))
""",
    )
    assert out.split() == ["stopped", "usable"]


@pytest.mark.parametrize("untrusted", [False, True], ids=["trusted", "untrusted"])
def test_an_xpcall_handler_runs_no_instruction_past_the_budget(backend: str, untrusted: bool) -> None:
    make = "value_bundle" if untrusted else "bundle"
    out = run_attack(
        backend,
        LIMITED_CALL
        + f"""
limited_call({make}('''[0] = function()
    return xpcall(function() while true do end end, function(e) while true do end end)
  end, [1] = function() end'''))
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


@pytest.mark.parametrize("untrusted", [False, True], ids=["trusted", "untrusted"])
def test_getfenv_hands_out_no_exemption(backend: str, untrusted: bool) -> None:
    # The environment of luaplug's own functions marks its frames for the hook: a bundle that
    # could take it would run unmetered. Targets: the arena allocator a raw handler gets, the
    # frames below the handler, and (untrusted) tostring and string.format, which are luaplug's
    # functions there.
    make = "value_bundle" if untrusted else "bundle"
    out = run_attack(
        backend,
        LIMITED_CALL
        + f"""
limited_call({make}('''[0] = function(_, _, _, _, alloc)
    local pcall, getfenv, setfenv, ipairs, G = pcall, getfenv, setfenv, ipairs, _G
    for _, target in ipairs({{ alloc or tostring, string.format, 2, 3, 4, 5, 6 }}) do
      local ok, env = pcall(getfenv, target)
      if ok and env ~= G then
        local spin = function() while true do end end
        setfenv(spin, env)
        spin()
      end
      pcall(setfenv, target, {{}})
    end
    while true do end
  end, [1] = function() end'''))
""",
    )
    assert out.split() == ["stopped", "usable"]


def test_an_untrusted_bundle_gets_no_finalizer(backend: str) -> None:
    # LuaJIT runs __gc with hooks off: an endless finalizer would hang the unload (or the
    # whole process, GIL held). Untrusted bundles get no way to set one: no newproxy, no ffi
    # (so neither ffi.gc nor ffi.metatype with __gc). ROUTES counts the ways that worked.
    out = run_attack(
        backend,
        """
d = value_bundle("[0] = function() return ROUTES end", pre='''
local spin = function() while true do end end
local routes = {}
routes[#routes + 1] = pcall(function() local p = newproxy(true); getmetatable(p).__gc = spin; KEEP1 = p end)
routes[#routes + 1] = pcall(function() local ffi = require("ffi"); KEEP2 = ffi.gc(ffi.new("int[1]"), spin) end)
routes[#routes + 1] = pcall(function()
  local ffi = require("ffi")
  local mt = {}
  local t = ffi.metatype("struct { int x; }", mt)
  mt.__gc = spin
  KEEP3 = t()
end)
local n = 0
for _, ok in ipairs(routes) do if ok then n = n + 1 end end
ROUTES = n
''')
with luaplug.Runtime(BACKEND) as rt:
    b = rt.load(d, untrusted=True, instruction_limit=100_000)
    rt.unload(b)
    print("unloaded")
print("closed")
""",
    )
    assert out.split() == ["unloaded", "closed"]


# -- the host process neither dies nor hangs ------------------------------------------------------------


@pytest.mark.requires("memory_limit")
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


@pytest.mark.requires("memory_limit")
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


@pytest.mark.requires("memory_limit")
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
for _ in range(3):  # trusted: an untrusted bundle has no ffi to drop
    with luaplug.Runtime(BACKEND) as rt:
        b = rt.load_code(src, "dropper")
        rt.contract("atk.A@1").default.call(0)
        rt.unload(b)
print("done")
""",
    )
    assert out.split() == ["done"]


# -- registrations go with their bundle -----------------------------------------------------------

HOSTREG = Path(__file__).resolve().parent / "bundles" / "hostreg" / "main.lua"


def _hostreg_variants() -> tuple[str, str]:
    """From the hostreg bundle (builds the host contract guest.Clock@1 with Lua callbacks): a
    bundle registering it during a call of atk.Reg@1 fn 0, and a reader, atk.Read@1 fn 0."""
    src = HOSTREG.read_text("utf-8")
    head = src[: src.index("function polyplug_init(")]
    reg = head + textwrap.dedent(
        """
        local function register(self)
          local host = guest.cast_host_interface(self.host)
          local err = ffi.new("AbiError[1]")
          host.register_host_contract(host, build_interface(), err)
        end
        function polyplug_init()
          return { ["atk.Reg"] = { factory = function(h) return { host = h } end,
            functions = { [0] = register } } }, { code = 0 }
        end
        """
    )
    reader = head + textwrap.dedent(
        """
        function polyplug_init()
          return { ["atk.Read"] = { factory = function(h) return { host = h } end,
            functions = { [0] = read } } }, { code = 0 }
        end
        """
    )
    return reg, reader


def test_a_host_contract_registered_during_a_call_goes_with_its_bundle(backend: str) -> None:
    reg, reader = _hostreg_variants()
    out = run_attack(
        backend,
        f"""
reg, reader = {reg!r}, {reader!r}
with luaplug.Runtime(BACKEND) as rt:
    b = rt.load_code(reg, "registrar")
    rt.contract("atk.Reg@1").default.call(0)
    rt.load_code(reader, "reader")
    out = ffi.new("uint32_t*")
    r = rt.contract("atk.Read@1").default
    r.call(0, None, out)
    print(out[0])
    rt.unload(b)  # its VM, and the callbacks behind guest.Clock, go away
    rt.collector.collect()
    out[0] = 0
    r.call(0, None, out)
    print(out[0])
""",
    )
    # 42: the clock's tick; then 1000, get_host_contract gave no instance: the entry went with
    # its bundle
    assert out.split() == ["42", "1000"]


ALIASER = """
local ffi = require("ffi")
local abi = require("polyplug_abi")
local guest = require("polyplug_guest")
local keep = {}
local function seven(_, _, out) ffi.cast("uint32_t*", out)[0] = 7 end
local function alias(self)
  local host = guest.cast_host_interface(self.host)
  local h = host.find_guest_contract(host, abi.guest_contract_id("atk.Own", 1), 1)
  local iface = host.resolve_guest_contract(host, h)
  local copy = ffi.new("GuestContractInterface")
  ffi.copy(copy, iface, ffi.sizeof("GuestContractInterface"))
  copy.contract_id = abi.guest_contract_id("atk.Alias", 1)
  local name, cname = "alias-plugin", "atk.Alias@1"
  local desc = ffi.new("PluginDescriptor")
  desc.name.ptr, desc.name.len = ffi.cast("const uint8_t*", name), #name
  desc.contract_name.ptr, desc.contract_name.len = ffi.cast("const uint8_t*", cname), #cname
  desc.version.major = 1
  local err = ffi.new("AbiError[1]")
  keep[#keep + 1] = { copy, desc, name, cname }
  host.register_guest_contract(host, desc, copy, err)
  ALIAS_CODE = err[0].code
end
function polyplug_init()
  return { ["atk.Own"] = { factory = function(h) return { host = h } end,
    functions = { [0] = seven, [1] = alias } } }, { code = 0 }
end
"""


CALLER = """
local ffi = require("ffi")
local abi = require("polyplug_abi")
local guest = require("polyplug_guest")
local function call_alias(self, _, out_addr)
  local out = ffi.cast("void*", out_addr)
  local host = guest.cast_host_interface(self.host)
  local h = host.find_guest_contract(host, abi.guest_contract_id("atk.Alias", 1), 1)
  local iface = h.index ~= 0xFFFFFFFF and host.resolve_guest_contract(host, h) or nil
  if iface == nil then ffi.cast("uint32_t*", out)[0] = 404 return end
  local inst = ffi.new("GuestContractInstance[1]")
  host.create_guest_instance(host, iface, nil, inst)
  local err = ffi.new("AbiError[1]")
  iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 0, nil, out, nil, err)
  host.destroy_guest_instance(host, iface, inst[0])
end
function polyplug_init()
  return { ["atk.Call"] = { factory = function(h) return { host = h } end,
    functions = { [0] = call_alias } } }, { code = 0 }
end
"""


ALIAS_ONLY = ALIASER.replace('["atk.Own"]', '["atk.Other"]').replace("[0] = seven, [1] = alias", "[0] = alias")


@pytest.mark.parametrize("aliased_by", ["itself", "another bundle"])
def test_a_contract_registered_under_another_name_goes_with_the_vm_behind_it(backend: str, aliased_by: str) -> None:
    # atk.Alias@1 is atk.Own@1's interface under another name, registered during a call by the
    # bundle that serves it or by another one; the bundle that serves it is unloaded.
    if aliased_by == "itself":
        setup = f"own = rt.load_code({ALIASER!r}, 'owner')\nrt.contract('atk.Own@1').default.call(1)"
    else:
        setup = (
            f"own = rt.load_code({ALIASER!r}, 'owner')\n"
            f"rt.load_code({ALIAS_ONLY!r}, 'aliaser')\n"
            "rt.contract('atk.Other@1').default.call(0)"
        )
    out = run_attack(
        backend,
        f"""
with luaplug.Runtime(BACKEND) as rt:
{textwrap.indent(setup, "    ")}
    rt.load_code({CALLER!r}, "caller")
    out = ffi.new("uint32_t*")
    call = rt.contract("atk.Call@1").default
    call.call(0, None, out)
    print(out[0])
    rt.unload(own)  # the alias points into its VM
    rt.collector.collect()
    out[0] = 0
    call.call(0, None, out)
    print(out[0])
""",
    )
    assert out.split() == ["7", "404"]


# -- mutual peer calls ---------------------------------------------------------------------------

MUTUAL = """
jit.off()  -- the spin below must re-read memory another thread writes
local ffi = require("ffi")
local abi = require("polyplug_abi")
local guest = require("polyplug_guest")
local ME, OWN, OTHER = @ME@, "@OWN@", "@OTHER@"
-- fn 0(flags): flags[ME] = 1, wait for flags[1 - ME], call OTHER fn 1, flags[2 + ME] = its code
local function meet(self, args)
  local flags = ffi.cast("volatile int32_t*", args)
  flags[ME] = 1
  while flags[1 - ME] == 0 do end
  local host = guest.cast_host_interface(self.host)
  local iface = host.resolve_guest_contract(host, host.find_guest_contract(host, abi.guest_contract_id(OTHER, 1), 1))
  local inst = ffi.new("GuestContractInstance[1]")
  host.create_guest_instance(host, iface, nil, inst)
  local err = ffi.new("AbiError[1]")
  iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 1, nil, nil, nil, err)
  host.destroy_guest_instance(host, iface, inst[0])
  flags[2 + ME] = err[0].code
end
function polyplug_init()
  return { [OWN] = { factory = function(h) return { host = h } end,
    functions = { [0] = meet, [1] = function() end } } }, { code = 0 }
end
"""


def test_mutual_peer_calls_from_two_threads_fail_one_call_instead_of_hanging(backend: str) -> None:
    _mutual_across(backend, backend)


@pytest.mark.parametrize("backend_is", ["P", "Q"])
def test_mutual_peer_calls_across_backends_fail_one_call_instead_of_hanging(backend: str, backend_is: str) -> None:
    """P on one backend, Q on another (each other available backend, both directions): the cycle
    runs through both engines' locks, and one call still fails with ReentrantCall (9) instead of
    both hanging."""
    import luaplug

    others = [name for name in luaplug.available_backends() if name != backend]
    if not others:
        pytest.skip("needs a second available backend")
    for other in others:
        p_backend, q_backend = (backend, other) if backend_is == "P" else (other, backend)
        _mutual_across(p_backend, q_backend)


def _mutual_across(p_backend: str, q_backend: str) -> None:
    p = MUTUAL.replace("@ME@", "0").replace("@OWN@", "atk.P").replace("@OTHER@", "atk.Q")
    q = MUTUAL.replace("@ME@", "1").replace("@OWN@", "atk.Q").replace("@OTHER@", "atk.P")
    out = run_attack(
        p_backend,
        f"""
import threading
with luaplug.Runtime(BACKEND) as rt:
    rt.load_code({p!r}, "p")
    rt.load_code({q!r}, "q", backend={q_backend!r})
    assert (rt.bundles["p"].backend, rt.bundles["q"].backend) == ({p_backend!r}, {q_backend!r})
    flags = ffi.new("int32_t[4]")
    addr = int(ffi.cast("uintptr_t", flags))
    codes = {{}}
    def run(name):
        codes[name] = int(rt.contract(name).default.dispatch(0, addr))
    threads = [threading.Thread(target=run, args=(n,)) for n in ("atk.P@1", "atk.Q@1")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(codes["atk.P@1"], codes["atk.Q@1"], sorted([flags[2], flags[3]]))
    flags[0:4] = [0, 1, 0, 0]
    print(int(rt.contract("atk.P@1").default.dispatch(0, addr)), flags[2])
    flags[0:4] = [1, 0, 0, 0]
    print(int(rt.contract("atk.Q@1").default.dispatch(0, addr)), flags[3])
""",
    )
    lines = out.splitlines()
    assert lines[0] == "0 0 [0, 9]", out  # one peer call refused with ReentrantCall, the other served
    assert lines[1:] == ["0 0", "0 0"], out


@pytest.mark.requires("memory_limit")
def test_a_bundle_that_keeps_its_cap_full_cannot_end_the_host_process(backend: str) -> None:
    # fn 0 fills the cap to the last bytes and keeps it full (a global holds everything, every
    # failure is caught) and returns normally: no failed call gives luaplug a reason to collect.
    # Right after it the host creates instances, calls and unloads: what lupa allocates outside
    # a protected call on that path (registry references and lookups of the prelude's functions)
    # must already exist. Each step fails or succeeds as an ordinary call. (The JIT is on in the
    # bundle's chunk: a capped state must run interpreted by itself.)
    out = run_attack(
        backend,
        """
src = bundle('''[0] = function()
    local size, rep, pcall = 65536, string.rep, pcall
    local function grab() H = { H, rep("x", size) } end
    local function node() H = { H } end
    local function tiny() H = { next = H } end
    while size >= 16 do
      while pcall(grab) do end
      size = math.floor(size / 2)
    end
    while pcall(node) do end
    for _ = 1, 1000 do pcall(tiny) end
  end,
  [1] = function() end,
  [2] = function() error("a string error " .. string.rep("y", 100)) end''')
seen = set()
with luaplug.Runtime(BACKEND) as rt:
    b = rt.load_code(src, "hoarder", memory_limit=4_000_000)
    c = rt.contract("atk.A@1")
    for _ in range(10):
        for fn in (1, 2, 0):  # the last refills what the failed call's collection gave back
            seen.add((fn, int(c.default.dispatch(fn))))
        try:
            inst = c.create_instance()
        except luaplug.LuaplugError:
            seen.add("create failed")
        else:
            seen.add(("instance", int(inst.dispatch(1))))
            inst.destroy()
    rt.unload(b)
print(sorted(map(str, seen)))
""",
    )
    assert "(0, 0)" in out and "(2, 1)" in out, out  # the fill returned; errors stay errors


@pytest.mark.requires("memory_limit")
def test_an_untrusted_bundle_that_keeps_its_cap_full_cannot_end_the_host_process(backend: str) -> None:
    # As above, on the value protocol: the names the engine looks up on its call path must
    # not need memory (untrusted mode removes `debug` from the globals).
    out = run_attack(
        backend,
        """
fill = '''[0] = function()
    local size, rep, pcall = 65536, string.rep, pcall
    local function grab() H = { H, rep("x", size) } end
    local function node() H = { H } end
    local function tiny() H = { next = H } end
    while size >= 16 do
      while pcall(grab) do end
      size = math.floor(size / 2)
    end
    while pcall(node) do end
    for _ = 1, 1000 do pcall(tiny) end
  end,
  [1] = function() end'''
seen = set()
with luaplug.Runtime(BACKEND) as rt:
    b = rt.load(value_bundle(fill), untrusted=True, memory_limit=4_000_000)
    inst = rt.contract("atk.A@1").default
    for _ in range(10):
        for fn in (0, 1):
            try:
                inst.call(fn)
                seen.add((fn, "ok"))
            except luaplug.DispatchError as exc:
                seen.add((fn, type(exc).__name__))
    rt.unload(b)
print(sorted(seen))
""",
    )
    assert "(0, 'ok')" in out, out  # the fill returned; every later call ended as an ordinary call
