"""What a bundle VM sees: package paths set through the API, isolation, no bytecode (spec §2, §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.backend import CAP_REFUSES_BYTECODE
from luaplug.ids import bundle_id

PROBE = "iso.PathProbe@1"


def probe_text(rt: luaplug.Runtime, fn_id: int) -> str:
    out = ffi.new("StringView*")
    with luaplug.CallArena(4096, host=rt) as arena:
        rt.contract(PROBE).default.call(fn_id, 0, out, arena)
        return bytes(ffi.buffer(out.ptr, out.len)).decode("utf-8")


def probe_int(rt: luaplug.Runtime, fn_id: int, ctype: str = "int32_t") -> int:
    out = ffi.new(f"{ctype}*")
    rt.contract(PROBE).default.call(fn_id, 0, out)
    return int(out[0])


def sdk_entries(entries: list[str]) -> None:
    """The guest SDK dir, then the ABI SDK dir, each as ``<dir>/?.lua``."""
    assert len(entries) == 2
    for entry, module in zip(entries, ("polyplug_guest.lua", "polyplug_abi.lua"), strict=True):
        assert entry.endswith("/?.lua")
        assert (Path(entry[: -len("/?.lua")]) / module).is_file()


def test_package_path_of_a_path_bundle(runtime: luaplug.Runtime, bundles: Path) -> None:
    d = str(bundles / "pathprobe")
    runtime.load(d)
    entries = probe_text(runtime, 0).split(";")
    assert entries[:2] == [f"{d}/?.lua", f"{d}/?.init.lua"]
    sdk_entries(entries[2:4])
    assert probe_text(runtime, 5).startswith(f"{d}/?.so;")
    assert probe_int(runtime, 1) == 3  # PWNED is nil, probe_helper came from the bundle dir


def test_init_context(runtime: luaplug.Runtime, bundles: Path) -> None:
    d = bundles / "pathprobe"
    runtime.load(d)
    assert probe_text(runtime, 2) == str(d)
    assert probe_int(runtime, 3, "uint64_t") == bundle_id("pathprobe")
    assert probe_int(runtime, 4, "uint64_t") == runtime.host_api_address


def test_package_path_of_an_in_memory_bundle(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load_code((bundles / "pathprobe" / "main.lua").read_text("utf-8"), "probe_mem")
    path = probe_text(runtime, 0)
    entries = path.split(";")
    sdk_entries(entries[:2])
    assert str(bundles) not in path
    assert str(bundles) not in probe_text(runtime, 5)
    assert probe_int(runtime, 1) == 1  # no bundle dir: probe_helper is not found
    assert probe_int(runtime, 3, "uint64_t") == bundle_id("probe_mem")


WEIRD_DIRS = [
    'with"quote;semi\nnewline x";_G.PWNED=true;--',
    'x"]] _G.PWNED=true --[[\nsecond line',
    "tab\there 'single' \\back",
]


@pytest.mark.parametrize("dirname", WEIRD_DIRS, ids=["semicolon", "long_bracket", "tab_backslash"])
def test_weird_bundle_dir_is_stored_verbatim(runtime: luaplug.Runtime, copy_bundle: Any, dirname: str) -> None:
    d: Path = copy_bundle("pathprobe", dirname)
    runtime.load(d)
    fwd = str(d).replace("\\", "/")
    assert probe_text(runtime, 0).startswith(f"{fwd}/?.lua;{fwd}/?.init.lua;")
    assert probe_text(runtime, 5).startswith(f"{fwd}/?.so;")
    assert probe_text(runtime, 2) == str(d)
    flags = probe_int(runtime, 1)
    assert flags & 1  # _G.PWNED is nil: nothing of the name ran
    if ";" not in dirname and "\\" not in dirname:  # backslashes become "/" (spec §2)
        assert flags & 2  # and modules are found in it


def test_vendored_sdk_module_wins(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    d = tmp_path / "vendoring"
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "vendoring"\nid = {bundle_id("vendoring")}\nloader = "lua"\nfile = "main.lua"\n'
        'version = "1.0.0"\nprovides = ["x.Vendored@1"]\n',
        "utf-8",
    )
    (d / "polyplug_guest.lua").write_text("return { VENDORED = true }\n", "utf-8")
    (d / "main.lua").write_text(
        """
local ffi = require("ffi")
local guest = require("polyplug_guest")
function polyplug_init()
  return { ["x.Vendored"] = { factory = function() return {} end, functions = { [0] = function(_s, _a, out)
    ffi.cast("int32_t*", out)[0] = guest.VENDORED and 1 or 0 end } } }, { code = 0 }
end
""",
        "utf-8",
    )
    runtime.load(d)
    out = ffi.new("int32_t*")
    runtime.contract("x.Vendored@1").default.call(0, 0, out)
    assert out[0] == 1


GLOBALS_PROBE = """
local ffi = require("ffi")
SHARED_{tag} = true
local function count_new(_s, _a, out)
  local n = 0
  for k in pairs(_G) do
    if BEFORE[k] == nil then n = n + 1 end
  end
  local foreign = 0
  for _, other in ipairs({{ "SHARED_a", "SHARED_b" }}) do
    if other ~= "SHARED_{tag}" and rawget(_G, other) ~= nil then foreign = foreign + 1 end
  end
  ffi.cast("int32_t*", out)[0] = n * 100 + foreign
end
function polyplug_init()
  return {{ ["x.Globals_{tag}"] = {{ factory = function() return {{}} end,
                                   functions = {{ [0] = count_new }} }} }}, {{ code = 0 }}
end
BEFORE = {{ BEFORE = true }}
for k in pairs(_G) do BEFORE[k] = true end
"""


def test_bundles_are_isolated_and_the_loader_adds_no_globals(runtime: luaplug.Runtime) -> None:
    runtime.load_code(GLOBALS_PROBE.format(tag="a"), "globals_a")
    runtime.load_code(GLOBALS_PROBE.format(tag="b"), "globals_b")
    for tag in ("a", "b"):
        c = runtime.contract(f"x.Globals_{tag}@1")
        c.create_instance()
        out = ffi.new("int32_t*", -1)
        c.default.call(0, 0, out)
        assert out[0] == 0  # no global appeared after the chunk ran, none from the other bundle


BYTECODE_SOURCE = """
local ffi = require("ffi")
local inner = [[
  function polyplug_init()
    return { ["x.Byte"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
  end
]]
local function dump(_s, _a, out, arena, arena_alloc)
  local bc = string.dump(loadstring(inner))
  local p = arena_alloc(#bc, arena)
  ffi.copy(ffi.cast("uint8_t*", p), bc, #bc)
  local sv = ffi.cast("struct { const uint8_t* ptr; size_t len; } *", out)
  sv.ptr, sv.len = ffi.cast("const uint8_t*", p), #bc
end
function polyplug_init()
  return { ["x.Dumper"] = { factory = function() return {} end, functions = { [0] = dump } } }, { code = 0 }
end
"""


@pytest.mark.requires(CAP_REFUSES_BYTECODE)
def test_precompiled_bytecode_is_refused(runtime: luaplug.Runtime) -> None:
    runtime.load_code(BYTECODE_SOURCE, "dumper")
    out = ffi.new("StringView*")
    with luaplug.CallArena(4096, host=runtime) as arena:
        runtime.contract("x.Dumper@1").default.call(0, 0, out, arena)
        bytecode = bytes(ffi.buffer(out.ptr, out.len))
    assert bytecode.startswith(b"\x1bLJ")
    before = (sorted(runtime.contracts()), runtime.loader.live_states, runtime.revision)
    with pytest.raises(luaplug.LoadError):
        runtime.load_bytes(bytecode, "bc_bytes")
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load_code(bytecode.decode("latin-1"), "bc_code")
    assert info.value.error.startswith("Lua script load failed for bc_code: ")
    ascii_bytecode = b"\x1bLJ\x02\x00" + b"\x01" * 16  # valid UTF-8, still bytecode
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load_bytes(ascii_bytecode, "bc_ascii")
    assert info.value.error.startswith("Lua script load failed for bc_ascii: ")
    assert (sorted(runtime.contracts()), runtime.loader.live_states, runtime.revision) == before


LIBS_PROBE = """
local ffi = require("ffi")
local function check(_s, _a, out)
  local ok = 0
  for _, name in ipairs({ "string", "table", "math", "io", "os", "debug", "package", "coroutine" }) do
    if type(_G[name]) == "table" then ok = ok + 1 end
  end
  for _, name in ipairs({ "ffi", "bit", "jit" }) do
    local fine, mod = pcall(require, name)
    if fine and type(mod) == "table" then ok = ok + 1 end
  end
  if type(jit.version) == "string" and jit.version:sub(1, 6) == "LuaJIT" then ok = ok + 1 end
  ffi.cast("int32_t*", out)[0] = ok
end
function polyplug_init()
  return { ["x.Libs"] = { factory = function() return {} end, functions = { [0] = check } } }, { code = 0 }
end
"""


def test_standard_libraries_ffi_bit_and_jit_are_there(runtime: luaplug.Runtime) -> None:
    runtime.load_code(LIBS_PROBE, "libs")
    out = ffi.new("int32_t*")
    runtime.contract("x.Libs@1").default.call(0, 0, out)
    assert out[0] == 8 + 3 + 1
