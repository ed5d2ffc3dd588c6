"""Untrusted mode as an attacker tries it (issue 17: the sandbox and bad input).

Each test is an attack: an untrusted bundle tries to get the full ``ffi`` back (and with it
``ffi.C.system``), to reach ``io``/``os``/``debug``/``package.loadlib``/the preload table, to make
``require`` read files outside its bundle or load bytecode, to call contracts it did not declare
through a made-up handle; a hostile manifest tries to make the host read files outside the
bundle or crash its parser. The attack bundles report what they got through their init status
message, so every probe runs before any contract exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import luaplug
from luaplug import cli
from luaplug.abi import ffi
from luaplug.backend import CAP_MEMORY_LIMIT
from luaplug.ids import bundle_id

lupa_luajit = pytest.importorskip("lupa.luajit21")  # a test tool here: it makes bytecode

# -- helpers ------------------------------------------------------------------------------------

# The attack body runs `probe(name, f)` calls; each records what f returned ("error: <text>"
# when it raised). ESCAPED marks a probe that got what it must not have.
ATTACK = r"""
local r = {}
local function probe(name, f)
  local ok, v = pcall(f)
  r[#r + 1] = name .. " => " .. (ok and tostring(v) or ("error: " .. tostring(v)))
end
%s
local report = table.concat(r, "\n")
function polyplug_init() return {}, { code = 1, message = "REPORT\n" .. report } end
"""

# Does table `t` look like one of the modules untrusted code must never reach?
FORBIDDEN = r"""
local function forbidden(t)
  if type(t) ~= "table" then return nil end
  if rawget(t, "C") ~= nil or rawget(t, "load") ~= nil and rawget(t, "cdef") ~= nil then return "ffi" end
  if rawget(t, "popen") ~= nil or rawget(t, "open") ~= nil and rawget(t, "lines") ~= nil then return "io" end
  if rawget(t, "execute") ~= nil or rawget(t, "getenv") ~= nil then return "os" end
  if rawget(t, "getregistry") ~= nil or rawget(t, "getupvalue") ~= nil then return "debug" end
  if rawget(t, "loadlib") ~= nil then return "loadlib" end
  if rawget(t, "util") ~= nil and rawget(t, "version") ~= nil then return "jit.util" end
  return nil
end
local function got(t) local what = forbidden(t) return what and ("ESCAPED " .. what) or "safe" end
"""


def write_bundle(d: Path, main: str, *, name: str = "attacker", extra_manifest: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {bundle_id(name)}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n'
        + extra_manifest,
        "utf-8",
    )
    (d / "main.lua").write_text(main, "utf-8")
    return d


def report_of(rt: luaplug.Runtime, d: Path, *, untrusted: bool = True) -> dict[str, str]:
    """The probes' results of the attack bundle at ``d`` (loaded untrusted by default)."""
    with pytest.raises(luaplug.InitFailed) as info:
        rt.load(d, untrusted=untrusted)
    text = info.value.error
    assert text.startswith("REPORT\n"), text
    out = {}
    for line in text[len("REPORT\n") :].split("\n"):
        if " => " in line:
            key, _, value = line.partition(" => ")
            out[key] = value
        else:  # a multi-line error text
            out[key] += "\n" + line
    return out


def assert_contained(report: dict[str, str]) -> None:
    escaped = {k: v for k, v in report.items() if "ESCAPED" in v or "SECRET" in v}
    assert not escaped, f"untrusted code escaped: {escaped}"


def bytecode(source: str) -> bytes:
    dump = lupa_luajit.LuaRuntime(encoding=None).eval("function(s) return string.dump(assert(loadstring(s))) end")
    data = bytes(dump(source.encode("utf-8")))
    assert data.startswith(b"\x1bLJ")
    return data


def bytecode_of_return(text: str) -> bytes:
    """LuaJIT bytecode of a chunk returning the string ``text``."""
    return bytecode(f"return {text!r}")


# -- 1: no route back to the full ffi, io, os, debug, loadlib or the preload table -----------------

REACHABLE = r"""
-- Everything reachable from the globals: tables, metatables, function environments.
probe("reachable", function()
  local seen, queue = {}, { _G }
  local function push(v)
    if (type(v) == "table" or type(v) == "function") and not seen[v] then queue[#queue + 1] = v end
  end
  local n = 0
  while #queue > 0 do
    local v = table.remove(queue)
    if not seen[v] then
      seen[v] = true
      n = n + 1
      if type(v) == "table" then
        local what = forbidden(v)
        if what then return "ESCAPED " .. what end
        for k, x in pairs(v) do push(k) push(x) end
        push(getmetatable(v))
      end
      local ok, env = pcall(getfenv, v)
      if ok then push(env) end
    end
  end
  push(getmetatable(""))
  return "safe (" .. n .. " objects)"
end)
"""

ROUTES = (
    FORBIDDEN
    + r"""
probe("preload.ffi", function()
  local loader = package.preload and package.preload.ffi
  if loader == nil then return "no preload.ffi" end
  return got(loader("ffi"))
end)
probe("require ffi after loaded.ffi = nil", function()
  package.loaded.ffi = nil
  return got(require("ffi"))
end)
probe("loaders", function()
  for i, searcher in ipairs(package.loaders or {}) do
    for _, name in ipairs({ "ffi", "io", "os", "debug", "jit.util" }) do
      local ok, loader = pcall(searcher, name)
      if ok and type(loader) == "function" then
        local ok2, m = pcall(loader, name)
        if ok2 and forbidden(m) then return "ESCAPED loaders[" .. i .. "] " .. name end
      end
    end
  end
  return "safe"
end)
probe("searchers", function()
  local first = package.searchers and package.searchers[1]
  return got(first and first("ffi"))
end)
probe("module", function()
  module("ffi")
  return got(getfenv(1))
end)
for _, name in ipairs({ "io", "os", "debug", "jit.util", "jit.profile" }) do
  probe("require " .. name, function() return got(require(name)) end)
  probe("loaded " .. name, function() return got(package.loaded[name]) end)
end
probe("loadlib", function() return package.loadlib ~= nil and "ESCAPED loadlib" or "safe" end)
probe("seeall", function() return package.seeall ~= nil and "ESCAPED seeall" or "safe" end)
probe("searchpath", function() return package.searchpath ~= nil and "ESCAPED searchpath" or "safe" end)
probe("ffi.C", function() return require("ffi").C ~= nil and "ESCAPED ffi.C" or "safe" end)
"""
    + REACHABLE
)

# Calling the real ffi loader again re-opens the ffi library under the prelude (which a trusted
# bundle may do to itself): the trusted control only looks.
TRUSTED_ROUTES = (
    FORBIDDEN
    + r"""
probe("preload.ffi", function() return type(package.preload.ffi) == "function" and "ESCAPED preload" or "safe" end)
probe("require io", function() return got(require("io")) end)
probe("loadlib", function() return package.loadlib ~= nil and "ESCAPED loadlib" or "safe" end)
"""
    + REACHABLE
)


def test_untrusted_code_has_no_route_back_to_ffi_io_os_debug_or_the_preload_table(
    runtime: luaplug.Runtime, tmp_path: Path
) -> None:
    report = report_of(runtime, write_bundle(tmp_path / "b", ATTACK % ROUTES))
    assert_contained(report)
    assert report["reachable"].startswith("safe (")
    # Untrusted code gets no ffi at all (test_untrusted_values.py: nor any address).
    assert "module 'ffi' not found" in report["require ffi after loaded.ffi = nil"]
    assert report["preload.ffi"] == "no preload.ffi"


def test_the_attack_finds_the_routes_in_trusted_mode(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    """The probes are real: a trusted bundle reaches what an untrusted one must not."""
    report = report_of(runtime, write_bundle(tmp_path / "b", ATTACK % TRUSTED_ROUTES), untrusted=False)
    assert report["preload.ffi"] == "ESCAPED preload"
    assert report["require io"] == "ESCAPED io" and report["loadlib"] == "ESCAPED loadlib"
    assert report["reachable"].startswith("ESCAPED")


def test_a_preloaded_module_of_the_bundle_itself_still_works(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    body = r"""
package.preload.mine = function(name) return { name = name } end
probe("mine", function() return require("mine").name end)
probe("again", function() return require("mine") == package.loaded.mine end)
probe("sdk", function() return type(require("polyplug_guest").alloc_string) end)
probe("ffi", function() local ffi = require("ffi") return ffi.sizeof("int32_t") end)
"""
    report = report_of(runtime, write_bundle(tmp_path / "b", ATTACK % body))
    assert (report["mine"], report["again"]) == ("mine", "true")
    # the SDK modules need ffi, which untrusted code does not get: neither loads
    assert "module 'polyplug_guest' not found" in report["sdk"]
    assert "module 'ffi' not found" in report["ffi"]


# -- 2: require resolves inside the bundle directory (and the SDK) only --------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the bundle with files the bundle must not read."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.lua").write_text('return "SECRET lua module"', "utf-8")
    (d / "shadow").write_text("root SECRET-HASH:19000:0:99999:7:::\n", "utf-8")
    return d


def path_attack(outside: Path) -> str:
    out = str(outside).replace("\\", "/")
    return (
        f"local OUT = {out!r}\n"
        + r"""
probe("package.path", function() package.path = OUT .. "/?.lua;" .. OUT .. "/?" return require("secret") end)
probe("non-lua file", function() package.path = OUT .. "/?" return require("shadow") end)
probe("searchpath", function() return package.searchpath("shadow", OUT .. "/?") end)
probe("absolute name", function() return require(OUT .. "/secret") end)
probe("dotdot name", function() return require("..outside.secret") end)
probe("slash dotdot", function() return require("../outside/secret") end)
probe("cwd", function() return require("secret") end)
probe("symlinked file", function() return require("link") end)
probe("symlinked dir", function() return require("linkdir.secret") end)
probe("inside", function() return require("helper") end)
probe("nested", function() return require("sub.inner") end)
probe("init quirk", function() return require("pkg") end)
"""
    )


def test_require_reads_nothing_outside_the_bundle(
    runtime: luaplug.Runtime, tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = write_bundle(tmp_path / "bundle", ATTACK % path_attack(outside))
    (d / "helper.lua").write_text('return "helper"', "utf-8")
    (d / "sub").mkdir()
    (d / "sub" / "inner.lua").write_text('return "inner"', "utf-8")
    (d / "pkg.init.lua").write_text('return "pkg"', "utf-8")
    (d / "link.lua").symlink_to(outside / "secret.lua")
    (d / "linkdir").symlink_to(outside, target_is_directory=True)
    monkeypatch.chdir(outside)  # the default path has ./?.lua
    report = report_of(runtime, d)
    assert_contained(report)
    for name in ("package.path", "non-lua file", "absolute name", "dotdot name", "cwd", "symlinked file"):
        assert report[name].startswith("error: module "), (name, report[name])
    assert report["searchpath"].startswith("error: ")  # no package.searchpath to probe with
    # The bundle's own modules are found as before.
    assert (report["inside"], report["nested"], report["init quirk"]) == ("helper", "inner", "pkg")


def test_the_path_attack_reads_the_secret_in_trusted_mode(
    runtime: luaplug.Runtime, tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = write_bundle(tmp_path / "bundle", ATTACK % path_attack(outside))
    (d / "link.lua").symlink_to(outside / "secret.lua")
    monkeypatch.chdir(outside)
    report = report_of(runtime, d, untrusted=False)
    assert report["package.path"] == "SECRET lua module"
    assert "near 'SECRET'" in report["non-lua file"]  # the error text shows the content


def test_an_in_memory_untrusted_bundle_finds_no_module(runtime: luaplug.Runtime, outside: Path) -> None:
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load_code(
            "assert(not pcall(require, 'polyplug_guest'))\n"
            "assert(not pcall(require, 'helper'))\n"
            "function polyplug_init() return {}, { code = 1, message = 'no module' } end",
            "mem",
            untrusted=True,
        )
    assert info.value.error == "no module"


# -- 3: require loads source text only ----------------------------------------------------------


def test_require_refuses_bytecode_modules(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    d = write_bundle(
        tmp_path / "b",
        ATTACK
        % r"""
probe("bytecode", function() return require("compiled") end)
probe("bytecode init", function() return require("pkg") end)
probe("again", function() return require("compiled") end)
""",
    )
    (d / "compiled.lua").write_bytes(bytecode('return "ESCAPED bytecode ran"'))
    (d / "pkg.init.lua").write_bytes(bytecode('return "ESCAPED bytecode ran"'))
    report = report_of(runtime, d)
    assert_contained(report)
    assert "bytecode is refused" in report["bytecode"]
    assert "bytecode is refused" in report["bytecode init"]
    assert report["again"].startswith("error: ")


# -- 4: handles are checked against the caller's declared dependencies, during init too ----------

GUESS = r"""
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")
local COUNTER = abi.guest_contract_id("iso.Counter", 1)
function polyplug_init(host)
  local h = guest.cast_host_interface(host)
  local found = h.find_guest_contract(h, COUNTER, 1)
  local got = {}
  for index = 0, 15 do
    for generation = 0, 3 do
      local handle = ffi.new("GuestContractHandle", { index, generation })
      local iface = h.resolve_guest_contract(h, handle)
      if iface ~= nil then got[#got + 1] = index .. "/" .. generation end
    end
  end
  return {}, { code = 1, message = "find " .. tostring(found.index ~= 0xFFFFFFFF) .. " resolved " .. #got }
end
"""


# The check is the HostApi's, the same in both modes; only a trusted bundle can make up a handle
# (untrusted code has no ffi: it names contracts, below).
def test_a_guessed_handle_resolves_nothing_undeclared_during_init(
    runtime: luaplug.Runtime, bundles: Path, tmp_path: Path
) -> None:
    runtime.load(bundles / "counter")
    runtime.load(bundles / "echo")
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load(write_bundle(tmp_path / "guess", GUESS))
    assert info.value.error == "find false resolved 0"


def test_a_declared_dependency_still_resolves_during_init(
    runtime: luaplug.Runtime, bundles: Path, tmp_path: Path
) -> None:
    runtime.load(bundles / "counter")
    runtime.load(bundles / "echo")
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load(write_bundle(tmp_path / "guess", GUESS, extra_manifest=DECLARED))
    assert info.value.error == "find true resolved 1"


DECLARED = '[[dependency]]\nkind = "contract"\ncontract = "iso.Counter"\nmin_version = "1.0.0"\n'

COUNTER_API = """
[[guest_contract]]
name = "iso.Counter"
version = "1.0.0"
[[guest_contract.functions]]
name = "inc"
return = "i64"
"""

# An untrusted bundle reaches a contract through host:contract("name@major") only.
NAMED = r"""
function polyplug_init(host)
  local c, why = host:contract("iso.Counter@1")
  local r = c and c:inc()
  return {}, { code = 1, message = tostring(r) .. "|" .. tostring(why) }
end
"""


@pytest.mark.parametrize("declared", [False, True], ids=["undeclared", "declared"])
def test_an_untrusted_init_calls_only_declared_dependencies(
    runtime: luaplug.Runtime, bundles: Path, tmp_path: Path, declared: bool
) -> None:
    runtime.load(bundles / "counter")
    d = write_bundle(tmp_path / "named", NAMED, extra_manifest='api = "api.toml"\n' + (DECLARED if declared else ""))
    (d / "api.toml").write_text(COUNTER_API, "utf-8")
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load(d, untrusted=True)
    assert info.value.error == ("1|nil" if declared else "nil|iso.Counter@1 is not available")


# -- 17-19: hostile manifests and entry files ----------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "deep = " + "[" * 5000 + "]" * 5000,
        "deep = " + "{ a = " * 3000 + "1" + " }" * 3000,
        "file." + ".".join(["a"] * 3000) + ' = "main.lua"',
    ],
    ids=["arrays", "inline-tables", "dotted-file-table"],
)
def test_deeply_nested_manifest_values_are_a_manifest_error(
    runtime: luaplug.Runtime, tmp_path: Path, line: str
) -> None:
    d = tmp_path / "deep"
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "deep"\nid = {bundle_id("deep")}\nloader = "lua"\nversion = "1.0.0"\n{line}\n', "utf-8"
    )
    with pytest.raises(luaplug.ManifestError, match="nested too deeply"):
        runtime.load(d)
    assert not runtime.bundles


def entry_outside(d: Path, outside: Path, how: str) -> str:
    if how == "absolute":
        return str(outside / "secret.lua").replace("\\", "/")
    if how == "dotdot":
        return "../outside/secret.lua"
    if how == "dotdot-inside":
        return "sub/../../outside/secret.lua"
    if how == "symlink":
        (d / "main.lua").symlink_to(outside / "shadow")
        return "main.lua"
    (d / "sub").symlink_to(outside, target_is_directory=True)  # a symlinked directory
    return "sub/shadow"


@pytest.mark.parametrize("how", ["absolute", "dotdot", "dotdot-inside", "symlink", "symlinked-dir"])
def test_an_entry_file_outside_the_bundle_is_refused_unread(
    runtime: luaplug.Runtime, tmp_path: Path, outside: Path, how: str
) -> None:
    d = tmp_path / "bundle"
    d.mkdir()
    file = entry_outside(d, outside, how)
    (d / "manifest.toml").write_text(
        f'name = "leaky"\nid = {bundle_id("leaky")}\nloader = "lua"\nversion = "1.0.0"\nfile = "{file}"\n', "utf-8"
    )
    with pytest.raises(luaplug.ManifestError) as info:
        runtime.load(d)
    assert info.value.key == "file"
    assert "SECRET" not in str(info.value)
    assert not runtime.bundles


def test_a_symlink_inside_the_bundle_is_followed(runtime: luaplug.Runtime, bundles: Path, tmp_path: Path) -> None:
    d = tmp_path / "counter"
    d.mkdir()
    (d / "manifest.toml").write_bytes((bundles / "counter" / "manifest.toml").read_bytes())
    (d / "real.lua").write_bytes((bundles / "counter" / "main.lua").read_bytes())
    (d / "main.lua").symlink_to(d / "real.lua")
    runtime.load(d)
    assert runtime.contracts() == ["iso.Counter@1"]


def test_an_entry_file_that_is_not_utf8_is_an_encoding_error(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    d = write_bundle(tmp_path / "latin", "")
    (d / "main.lua").write_bytes(b"-- caf\xe9\nfunction polyplug_init() end\n")
    with pytest.raises(luaplug.InvalidSourceEncoding) as info:
        runtime.load(d)
    assert "does not exist" not in str(info.value)
    assert info.value.source_kind == "file"


# -- 20: the command line restricts what it runs --------------------------------------------------

USES_IO = r"""
local f = io.open("/dev/null")
if f then f:close() end
function polyplug_init() return { ["x.Io"] = { factory = function() return {} end,
  functions = { [0] = function() end } } }, { code = 0 } end
"""

SPINS = r"""
local n = 0
while true do n = n + 1 end
"""


@pytest.mark.parametrize("command", ["inspect", "check"])
def test_cli_untrusted_runs_the_bundle_restricted(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    d = write_bundle(tmp_path / "io", USES_IO)
    assert cli.main([command, "--backend", backend, str(d)]) == 0
    capsys.readouterr()
    assert cli.main([command, "--backend", backend, "--untrusted", str(d)]) == 1
    out, err = capsys.readouterr()
    assert "io" in out + err


def test_cli_instruction_limit_stops_a_runaway_load(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = write_bundle(tmp_path / "spin", SPINS)
    assert cli.main(["inspect", "--backend", backend, "--instruction-limit", "100000", str(d)]) == 1
    assert "instruction limit exceeded" in capsys.readouterr().err


@pytest.mark.requires(CAP_MEMORY_LIMIT)
def test_cli_memory_limit_stops_a_greedy_load(backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_bundle(tmp_path / "greedy", "local t = {} for i = 1, 1e6 do t[i] = string.rep('x', 64) .. i end\n")
    assert cli.main(["check", "--backend", backend, "--memory-limit", str(16 * 2**20), str(d)]) == 1
    assert "not enough memory" in capsys.readouterr().out


def test_cli_call_takes_the_limits(backend: str, bundles: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["call", "--backend", backend, "--untrusted", "--instruction-limit", "1000000"]
    assert cli.main([*argv, str(bundles / "valuecalc"), "value.Calc", "add", "2", "3"]) == 0
    assert capsys.readouterr().out.strip() == "5"
    assert cli.main(["call", "--memory-limit", "-1", str(bundles / "typed_calc"), "typed.Calc", "add", "1", "2"]) == 2


# -- also seen ------------------------------------------------------------------------------------

AT_NAME = r"""
function polyplug_init()
  return { ["vendor@x.Thing"] = { factory = function() return {} end, functions = { [0] = function() end } } },
    { code = 0 }
end
"""


def test_a_contract_name_holding_an_at_sign_can_be_looked_up(runtime: luaplug.Runtime) -> None:
    runtime.load_code(AT_NAME, "at")
    assert runtime.contracts() == ["vendor@x.Thing@1"]
    for spelled in ("vendor@x.Thing@1", "vendor@x.Thing"):
        assert runtime.contract(spelled).default.dispatch(0) == 0
    assert runtime.contract("vendor@x.Thing", 1).default.dispatch(0) == 0
    with pytest.raises(luaplug.ContractNotFoundError):
        runtime.contract("vendor@x.Thing@2")


@pytest.mark.parametrize("code", ["4294967296", "2^53", "-1", "0.5", "0/0", "1/0"])
def test_every_non_zero_init_status_code_is_a_refusal(runtime: luaplug.Runtime, code: str) -> None:
    with pytest.raises(luaplug.InitFailed, match="returned error code"):
        runtime.load_code(f"function polyplug_init() return {{}}, {{ code = {code} }} end", "refuses")
    assert not runtime.bundles


@pytest.fixture
def instance(runtime: luaplug.Runtime) -> luaplug.Instance:
    runtime.load_code(
        "function polyplug_init() return { ['x.Args'] = { factory = function() return {} end,"
        " functions = { [0] = function() end } } }, { code = 0 } end",
        "args",
    )
    return runtime.contract("x.Args@1").default


@pytest.mark.parametrize("fn_id", ["0", 0.0, 1.5, None, b"0"])
@pytest.mark.parametrize("method", ["dispatch", "call"])
def test_a_fn_id_that_is_no_int_is_a_type_error(instance: luaplug.Instance, fn_id: object, method: str) -> None:
    with pytest.raises(TypeError, match="fn_id"):
        getattr(instance, method)(fn_id)


@pytest.mark.parametrize("where", ["args", "out"])
@pytest.mark.parametrize("value", [-1, -(2**40), 2**64])
def test_an_address_out_of_the_uintptr_range_is_an_overflow_error(
    instance: luaplug.Instance, where: str, value: int
) -> None:
    with pytest.raises(OverflowError):
        instance.dispatch(0, **{where: value})
    with pytest.raises(OverflowError):
        instance.call(0, **{where: value})
    assert instance.dispatch(0, ffi.NULL, 0) == 0


def test_a_bool_fn_id_is_the_int_it_stands_for(instance: luaplug.Instance) -> None:
    assert instance.dispatch(False) == 0
    assert instance.dispatch(True) == luaplug.AbiErrorCode.FunctionNotAvailable
