"""The pattern limit of untrusted mode (issue 17, class 10: time inside one C function).

LuaJIT's pattern matcher backtracks inside one C call, where no count hook runs: one
``string.find`` could run for seconds under a tiny instruction budget. An untrusted bundle's
``string.find/match/gmatch/gsub`` estimate a call's worst-case work first and refuse one over the
limit with a ``pattern limit exceeded`` error; under a budget the estimate is charged to the call.
Nothing here measures time: a refused call is one that failed with the pattern-limit error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import luaplug
from luaplug import AbiErrorCode, typed
from luaplug.ids import bundle_id

LoadPat = Callable[..., typed.TypedProxy]

PATTERN_TEXT = "pattern limit exceeded"

API = """
[[guest_contract]]
name = "pat.P"
version = "1.0.0"
[[guest_contract.functions]]
name = "run"
params = [{ name = "src", type = "StringView" }]
return = "StringView"
"""

# run(src): runs Lua source `src` (text: untrusted `load` takes no bytecode) and returns what it
# returned as text, comma-separated.
RUN = r"""
local function show(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
  return table.concat(t, ",")
end
local function run(src)
  local f = assert(load(src, "=probe"))
  return show(f())
end
"""

UNTRUSTED_MAIN = (
    RUN
    + """
local P = {}
function P:run(src) return run(src) end
function polyplug_init() return { ["pat.P@1"] = function() return P end }, { code = 0 } end
"""
)

# The same method on the raw protocol (a trusted bundle): fn 0 reads the source from a StringView
# and writes the result text into the call arena.
TRUSTED_MAIN = (
    RUN
    + """
local ffi = require("ffi")
ffi.cdef("typedef struct { const uint8_t* ptr; size_t len; } pat_sv;")
local F = { [0] = function(_, args, out, arena, alloc)
  local sv = ffi.cast("pat_sv*", args)
  local r = run(ffi.string(sv.ptr, sv.len))
  local p = alloc(#r, arena)
  ffi.copy(ffi.cast("uint8_t*", p), r, #r)
  local o = ffi.cast("pat_sv*", out)
  o.ptr, o.len = ffi.cast("const uint8_t*", p), #r
end }
function polyplug_init()
  return { ["pat.P"] = { factory = function() return {} end, functions = F } }, { code = 0 }
end
"""
)


def pattern_bundle(d: Path, *, untrusted: bool) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.toml").write_text(
        f'name = "pat"\nid = {bundle_id("pat")}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n'
        'api = "api.toml"\n',
        "utf-8",
    )
    (d / "api.toml").write_text(API, "utf-8")
    (d / "main.lua").write_text(UNTRUSTED_MAIN if untrusted else TRUSTED_MAIN, "utf-8")
    return d


@pytest.fixture
def load_pat(runtime: luaplug.Runtime, tmp_path: Path) -> Iterator[LoadPat]:
    """load(untrusted=..., **limits) -> a typed proxy of pat.P@1 (run(src) -> str)."""
    proxies: list[typed.TypedProxy] = []

    def load(*, untrusted: bool = True, **limits: int) -> typed.TypedProxy:
        d = pattern_bundle(tmp_path / f"pat{len(proxies)}", untrusted=untrusted)
        runtime.load(d, untrusted=untrusted, **limits)
        proxy = runtime.bind(d / "api.toml", "pat.P@1")
        proxies.append(proxy)
        return proxy

    yield load
    for proxy in proxies:
        proxy.close()


def refused(proxy: typed.TypedProxy, src: str) -> luaplug.DispatchError:
    with pytest.raises(luaplug.DispatchError) as info:
        proxy.run(src)
    return info.value


# Calls whose worst case (and, with these subjects, real work) is far past the limit: each runs
# for a second or more in LuaJIT's matcher.
BACKTRACKING = {
    "find": 'return string.find(string.rep("a", 1000), ".-.-b")',
    "method": 'return (string.rep("a", 1000)):find(".-.-b")',
    "match": 'return string.match(string.rep("a", 1000), "a*a*a*b")',
    "gmatch": 'local n = 0 for _ in string.gmatch(string.rep("a", 1000), ".-.-b") do n = n + 1 end return n',
    "gsub-balance": 'return (string.gsub(string.rep("(", 30000), "%b()", ""))',
    "plain-find": 'return string.find(string.rep("a", 2^18), string.rep("a", 2^17) .. "b", 1, true)',
    "literal-find": 'return string.find(string.rep("a", 2^18), string.rep("a", 2^17) .. "b")',
    "literal-match": 'return string.match(string.rep("a", 40000), string.rep("a", 20000) .. "b")',
    "backreference": 'return string.find(string.rep("a", 30000), "(a*)%1b")',
}


@pytest.mark.parametrize("src", BACKTRACKING.values(), ids=BACKTRACKING.keys())
@pytest.mark.parametrize("limits", [{}, {"instruction_limit": 100_000}], ids=["no-budget", "budget"])
def test_a_costly_pattern_call_fails_with_the_pattern_limit(
    load_pat: LoadPat, src: str, limits: dict[str, int]
) -> None:
    proxy = load_pat(**limits)
    err = refused(proxy, src)
    assert err.code == AbiErrorCode.Generic
    assert err.lua_error is not None and PATTERN_TEXT in err.lua_error, err.lua_error
    assert "untrusted mode allows" in err.lua_error
    # the failure is an ordinary failed call: the bundle keeps working
    assert proxy.run('return ("key = value"):match("^(%w+)%s*=%s*(%w+)$")') == "key,value"


def test_the_pattern_limit_is_an_error_the_bundle_can_catch(load_pat: LoadPat) -> None:
    proxy = load_pat()
    out = proxy.run('local ok, e = pcall(string.find, string.rep("a", 1000), ".-.-b") return ok, e')
    ok, _, text = out.partition(",")
    assert ok == "false"
    assert PATTERN_TEXT in text and "string.find" in text


# Patterns real bundles use, on subjects of realistic sizes: (source, result).
EVERYDAY = {
    "trim": (
        'local s = "  \\t" .. string.rep("x y ", 200) .. "  \\n" return (s:match("^%s*(.-)%s*$"))',
        ("x y " * 200).rstrip(),
    ),
    "words": ('local n = 0 for _ in string.rep("word ", 2000):gmatch("%w+") do n = n + 1 end return n', "2000"),
    "gsub-function": (
        'local s, n = string.rep("ab ", 3000):gsub("%w+", function(w) return w:upper() end) return s:sub(1, 9), n',
        "AB AB AB ,3000",
    ),
    "key-values": (
        'local n = 0 for k, v in ("a=1\\nbb=22\\nccc=333\\n"):rep(300):gmatch("(%w+)=(%w+)") do n = n + #k + #v end'
        " return n",
        str(300 * 12),
    ),
    "between-tags": (
        'return (string.rep("<p>some text</p>\\n", 4000) .. "<title>T i</title>"):match("<title>(.-)</title>")',
        "T i",
    ),
    "plain-find": ('return (string.rep("ab", 30000) .. "needle"):find("needle", 1, true)', "60001,60006"),
    "literal-find": ('return (string.rep("ab", 30000) .. "needle"):find("needle")', "60001,60006"),
    "split": (
        'local t = {} for f in ("a,b,,c;"):rep(500):gmatch("([^,;]+)") do t[#t + 1] = f end return #t, t[1], t[3]',
        "1500,a,c",
    ),
    "escape": ('return (string.rep("a.b*c", 100):gsub("[%.%*]", "%%%0")):sub(1, 7)', "a%.b%*c"),
    "format": ('return string.format("%5.2f|%-4s|%d", 3.14159, "ab", 42)', " 3.14|ab  |42"),
}


@pytest.mark.parametrize("untrusted", [True, False], ids=["untrusted", "trusted"])
@pytest.mark.parametrize("limits", [{}, {"instruction_limit": 5_000_000}], ids=["no-budget", "budget"])
@pytest.mark.parametrize("case", EVERYDAY.values(), ids=EVERYDAY.keys())
def test_everyday_patterns_still_work(
    load_pat: LoadPat, untrusted: bool, limits: dict[str, int], case: tuple[str, str]
) -> None:
    src, expected = case
    proxy = load_pat(untrusted=untrusted, **limits)
    assert proxy.run(src) == expected


# Each call is well under the limit (a few ten thousand estimated steps); many of them are not.
MEDIUM_LOOP = 'for i = 1, 2000 do string.find(string.rep("a", 200), ".-b") end return "done"'


def test_pattern_work_is_charged_to_the_instruction_budget(load_pat: LoadPat, runtime: luaplug.Runtime) -> None:
    proxy = load_pat(instruction_limit=1_000_000)
    with pytest.raises(luaplug.DispatchLimitError):
        proxy.run(MEDIUM_LOOP)
    # a budget error is caught and swallowed in vain: the call still fails with it
    with pytest.raises(luaplug.DispatchLimitError):
        proxy.run(f"pcall(function() {MEDIUM_LOOP} end) return 1")
    assert proxy.run('return ("abc"):find("b")') == "2,2"
    # without a budget each call is judged alone
    proxy.close()
    runtime.unload("pat")
    assert load_pat().run(MEDIUM_LOOP) == "done"


def test_trusted_mode_keeps_the_original_functions(load_pat: LoadPat) -> None:
    """A trusted bundle is host code: its pattern calls are neither estimated nor refused."""
    proxy = load_pat(untrusted=False, instruction_limit=1000)
    # estimated far past the limit, real work small (the subject has no "x")
    assert proxy.run('return string.find(string.rep("ab", 50000), "x.-.-.-b")') == "nil"
    assert proxy.run('return string.find(string.rep("a", 100), ".-.-.-b")') == "nil"
    assert proxy.run("return tostring(string.find):match('builtin') ~= nil") == "true"


# Every route untrusted code has to the string functions; each must end in the bounded ones.
ROUTES = {
    "global": "string.find",
    "method": '("").find',
    "metatable": 'getmetatable("").__index.find',
    "rawget": 'rawget(string, "find")',
    "loaded": "package.loaded.string.find",
    "require": 'require("string").find',
    "env": "getfenv(0).string.find",
    "G": "_G.string.find",
    "gmatch": "string.gmatch",
    "gsub": "string.gsub",
    "match": "string.match",
}

UNWRAP = r"""
local results = {}
local function note(what, ok, v) results[#results + 1] = what .. "=" .. (ok and "ok" or "refused") end
-- no debug library: no upvalues, no registry
note("debug", debug == nil)
-- luaplug's functions hand out no environment, take none, and are no builtins of LuaJIT's
note("getfenv", pcall(getfenv, string.find))
note("setfenv", pcall(setfenv, string.find, {}))
note("builtin", tostring(string.find):match("builtin") == nil)
note("same-table", getmetatable("").__index == string and package.loaded.string == string)
-- rewriting the tables gives nothing back
local saved = string.find
string.find = nil
note("method-gone", pcall(function() return ("x"):find("x") end))
package.loaded.string = nil
note("require", pcall(require, "string"))
package.loaded.string, string.find = string, saved
return table.concat(results, " ")
"""


def test_the_bounded_functions_cannot_be_unwrapped(load_pat: LoadPat) -> None:
    proxy = load_pat()
    assert proxy.run(UNWRAP) == (
        "debug=ok getfenv=refused setfenv=refused builtin=ok same-table=ok method-gone=refused require=refused"
    )
    subject = 'string.rep("a", 1000)'
    for route, expr in ROUTES.items():
        pattern = '".-.-b"'
        if route == "gsub":
            call = f'{expr}({subject}, {pattern}, "")'
        elif route == "gmatch":
            call = f"{expr}({subject}, {pattern})()"
        else:
            call = f"{expr}({subject}, {pattern})"
        err = refused(proxy, f"return {call}")
        assert err.lua_error is not None and PATTERN_TEXT in err.lua_error, (route, err.lua_error)


# -- fuzzing: pattern and subject pairs -------------------------------------------------------------


def test_random_pattern_calls_complete_or_fail_with_a_luaplug_error(load_pat: LoadPat) -> None:
    """Random pattern+subject pairs in untrusted mode: each call completes with what plain LuaJIT
    answers, or fails with a luaplug error (the pattern limit, or the matcher's own error for a
    malformed pattern, as LuaJIT raises it); the bundle keeps serving."""
    pytest.importorskip("hypothesis")
    lupa_luajit = pytest.importorskip("lupa.luajit21")
    from _fuzz_strategies import pattern_call
    from hypothesis import HealthCheck, given, settings

    reference = lupa_luajit.LuaRuntime()
    ref_run = reference.execute(RUN + "return run")
    proxy = load_pat(instruction_limit=5_000_000)

    @settings(
        max_examples=int(os.environ.get("LUAPLUG_FUZZ_EXAMPLES", "150")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(src=pattern_call())
    def check(src: str) -> None:
        try:
            got: str | None = proxy.run(src)
        except luaplug.DispatchError as exc:
            assert exc.lua_error is not None
            if PATTERN_TEXT in exc.lua_error or "instruction limit exceeded" in exc.lua_error:
                return
            got = None  # the matcher's own error: LuaJIT must raise it too
        try:
            expected: str | None = ref_run(src)
        except lupa_luajit.LuaError:
            expected = None
        assert got == expected, src
        assert proxy.run('return ("a"):rep(3)') == "aaa"

    check()
