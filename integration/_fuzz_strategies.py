"""Hypothesis strategies for ``test_fuzz.py``: TOML value texts, manifest mutations, Lua
source for random ``polyplug_init`` results and untrusted-mode escape attempts.

Every generated Lua function leaves ``args``/``out``/``arena`` alone, so a bundle built from
these strategies can be called with any address without touching memory.
"""

from __future__ import annotations

import json
import math

from hypothesis import strategies as st

__all__ = [
    "LIMIT_API",
    "MANIFEST_KEYS",
    "escape_attempt",
    "init_source",
    "limit_attack",
    "lua_function",
    "lua_string",
    "lua_value",
    "mutated_bytes",
    "pointer_hunt",
    "toml_value",
]

#: Every key the manifest validator knows (spec §1, runtime-semantics "Manifest").
MANIFEST_KEYS = (
    "name",
    "id",
    "loader",
    "runtime",
    "file",
    "version",
    "provides",
    "needs_reinit_on_dep_reload",
    "bundle_dependencies",
    "dependencies",
    "api",
)

_HUGE_INTS = st.sampled_from([0, -1, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), 10**30, -(10**30)])


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string (JSON escapes; lone surrogates make it unparsable, on purpose)."""
    return json.dumps(text)


def toml_value(depth: int = 2) -> st.SearchStrategy[str]:
    """TOML value texts of every type: integers (huge, negative, hex), floats, booleans,
    strings, dates, arrays and inline tables."""
    scalars = st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        _HUGE_INTS.map(str),
        st.integers(0, 2**64 - 1).map(lambda n: f"0x{n:x}"),
        st.integers(0, 2**64 + 5).map(lambda n: _toml_string(f"0x{n:x}")),
        st.floats(allow_nan=True, allow_infinity=True).map(_toml_float),
        st.booleans().map(lambda b: "true" if b else "false"),
        st.text(max_size=20).map(_toml_string),
        st.sampled_from(['""', '"lua"', '"main.lua"', '"1.0.0"', '"x.y.z"', '"a@1"', "1979-05-27T07:32:00Z"]),
    )
    if depth <= 0:
        return scalars
    inner = toml_value(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(st.sampled_from(["a", "b", "x86_64", "linux"]), inner, max_size=3).map(
            lambda d: "{ " + ", ".join(f"{k} = {v}" for k, v in d.items()) + " }"
        ),
    )


def _toml_float(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x) if "." in repr(x) or "e" in repr(x) else repr(x) + ".0"


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes, max_ops: int = 4) -> bytes:
    """``base`` after 1..``max_ops`` random edits: deleted, duplicated or replaced lines,
    inserted TOML lines, random text or bytes, flipped bits, truncation."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        lines = bytes(data).split(b"\n")
        op = draw(st.sampled_from(["del", "dup", "value", "line", "text", "bytes", "flip", "truncate"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if op == "del" and lines:
            del lines[i]
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "value" and lines and b"=" in lines[i]:
            key = lines[i].split(b"=", 1)[0]
            lines[i] = key + b"= " + draw(toml_value()).encode("utf-8", "surrogatepass")
        elif op == "line":
            key = draw(st.sampled_from([*MANIFEST_KEYS, "function_count", "x"]))
            lines.insert(i, f"{key} = {draw(toml_value())}".encode("utf-8", "surrogatepass"))
        if op in ("del", "dup", "value", "line"):
            data = bytearray(b"\n".join(lines))
            continue
        pos = draw(st.integers(0, len(data)))
        if op == "text":
            data[pos:pos] = draw(st.text(max_size=12)).encode("utf-8")
        elif op == "bytes":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "flip" and data:
            j = min(pos, len(data) - 1)
            data[j] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def lua_string(text: bytes) -> str:
    """A Lua string literal of any bytes (decimal escapes, so non-UTF-8 bytes survive)."""
    return '"' + "".join(f"\\{b:d}" for b in text) + '"'


_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-0", "1", "1.5", "-1", "4294967295", "4294967296", "1/0", "-1/0", "0/0", "2^53", "1e308"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)

_FUNCTIONS = st.sampled_from(
    [
        "function() end",
        "function() return 1 end",
        "function(s) return s end",
        "function() error('fuzz handler error') end",
        "function() error({ 'a table' }) end",
        "function() error() end",
        "function() error(setmetatable({}, { __tostring = function() return 'meta text' end })) end",
        "function(...) return ... end",
        "function() local t = {} for i = 1, 100 do t[i] = i end return t end",
        "function() return coroutine.yield() end",
    ]
)


def lua_function() -> st.SearchStrategy[str]:
    """Lua function expressions that never dereference their arguments."""
    return _FUNCTIONS


def lua_value(depth: int = 2) -> st.SearchStrategy[str]:
    """Lua expressions of every type: nil, booleans, numbers (NaN, inf, huge), strings
    (any bytes), functions, userdata, threads, cdata, tables (nested, odd keys, metatables)."""
    leaves = st.one_of(
        st.sampled_from(["nil", "true", "false", "newproxy(true)", "coroutine.create(function() end)"]),
        st.sampled_from(["require('ffi').new('int[4]')", "require('ffi').cast('void*', 0)", "_G", "string"]),
        _NUMBERS,
        st.binary(max_size=12).map(lua_string),
        lua_function(),
    )
    if depth <= 0:
        return leaves
    inner = lua_value(depth - 1)
    keys = st.one_of(
        st.binary(max_size=8).map(lua_string),
        st.integers(-3, 5).map(str),
        st.sampled_from(["1.5", "true", "{}", "print"]),
    )
    table = st.lists(st.tuples(keys, inner), max_size=4).map(
        lambda kv: "{ " + ", ".join(f"[{k}] = {v}" for k, v in kv) + " }"
    )
    array = st.lists(inner, max_size=4).map(lambda xs: "{ " + ", ".join(xs) + " }")
    meta = inner.map(lambda v: f"setmetatable({{}}, {{ __index = function() error('index trap') end, __call = {v} }})")
    return st.one_of(leaves, table, array, meta)


def _mostly(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str], one_in: int = 10) -> st.SearchStrategy[str]:
    """``usual``, but ``odd`` once in ``one_in`` draws (``usual`` is what hypothesis shrinks towards)."""
    return st.integers(0, one_in - 1).flatmap(lambda n: odd if n == one_in - 1 else usual)


_FACTORIES = st.sampled_from(
    [
        "function(h) return {} end",
        "function() return nil end",
        "function() return 42 end",
        "function(h) return { host = h } end",
        "function() error('factory trap') end",
    ]
)


@st.composite
def _functions_table(draw: st.DrawFn) -> str:
    """A ``functions`` value: usually ``{[0] = f0, ...}`` (rarely with a bad slot or from 1), else anything."""
    if draw(st.integers(0, 9)) == 9:
        return draw(lua_value(1))
    slots = draw(st.lists(_mostly(lua_function(), lua_value(0), 12), max_size=5))
    start = draw(_mostly(st.just(0), st.just(1), 8).map(int))
    return "{ " + ", ".join(f"[{start + i}] = {f}" for i, f in enumerate(slots)) + " }"


@st.composite
def _entry(draw: st.DrawFn) -> str:
    """A registration entry: the four fields, each valid, odd or missing."""
    fields = []
    if draw(st.integers(0, 2)) == 2:
        fields.append("contract_version = " + draw(st.one_of(_NUMBERS, lua_value(0))))
    if draw(st.integers(0, 2)) == 2:
        fields.append("plugin_name = " + draw(st.one_of(st.binary(max_size=10).map(lua_string), lua_value(0))))
    if draw(st.integers(0, 11)) < 11:
        fields.append("factory = " + draw(_mostly(_FACTORIES, lua_value(0))))
    if draw(st.integers(0, 11)) < 11:
        fields.append("functions = " + draw(_functions_table()))
    return "{ " + ", ".join(fields) + " }"


_NAMES = _mostly(
    st.sampled_from(["fuzz.A", "fuzz.B", "fuzz.C", "fuzz.D"]).map(lambda s: lua_string(s.encode())),
    st.one_of(st.binary(max_size=10).map(lua_string), st.sampled_from(["1", "2", "1.5", "true", "{}"])),
    4,
)


@st.composite
def _registrations(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 11)) == 11:
        return draw(lua_value(2))
    entries = draw(st.lists(st.tuples(_NAMES, _mostly(_entry(), lua_value(1))), min_size=1, max_size=4))
    return "{ " + ", ".join(f"[{k}] = {v}" for k, v in entries) + " }"


@st.composite
def _status(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 11)) == 11:
        return draw(lua_value(1))
    code = draw(_mostly(st.just("0"), st.one_of(_NUMBERS, lua_value(0)), 4))
    message = draw(st.one_of(st.binary(max_size=10).map(lua_string), lua_value(0)))
    return f"{{ code = {code}, message = {message} }}"


@st.composite
def init_source(draw: st.DrawFn) -> str:
    """A bundle whose ``polyplug_init`` returns random registrations and status (or is odd itself)."""
    shape = draw(st.sampled_from(["two"] * 8 + ["one", "none", "three", "raise", "not_a_function"]))
    regs, status = draw(_registrations()), draw(_status())
    body = {
        "two": f"return {regs}, {status}",
        "one": f"return {regs}",
        "none": "return",
        "three": f"return {regs}, {status}, {draw(lua_value(1))}",
        "raise": f"error({draw(lua_value(1))})",
    }.get(shape)
    if body is None:
        return f"polyplug_init = {draw(lua_value(1))}\n"
    return f"function polyplug_init(host, ctx)\n  {body}\nend\n"


# -- untrusted-mode escapes (issue 17) -----------------------------------------------------------
#
# An attempt is Lua statements run inside one `probe(...)` of an attack bundle: first a few steps
# that rearrange what `require` might consult (`package` fields, the preload and loaded tables,
# the searchers, the globals), then one grab of something untrusted code must never hold. The
# test defines OUT (a directory outside the bundle holding secret.lua and shadow), `got(t)`
# ("ESCAPED ..." for the full ffi, io, os, debug, loadlib, jit.util) and checks the report for
# ESCAPED and SECRET. The bundle directory holds `compiled.lua` (bytecode), `link.lua` (a symlink
# to OUT/secret.lua) and `linkdir` (a symlink to OUT).

#: Module names worth asking for: forbidden modules, files outside, bytecode, odd spellings.
ESCAPE_NAMES = (
    "ffi",
    "io",
    "os",
    "debug",
    "jit.util",
    "jit.profile",
    "string.buffer",
    "secret",
    "shadow",
    "compiled",
    "link",
    "linkdir.secret",
    "..outside.secret",
    "../outside/secret",
    "outside/secret",
    "/etc/passwd",
    ".",
    "",
    "a..b",
    "ffi\0",
    "sub/../../outside/secret",
)

_PATHS = st.sampled_from(
    [
        'OUT .. "/?.lua"',
        'OUT .. "/?"',
        '"./?.lua"',
        '"/etc/?"',
        '"?"',
        '"?;?.lua"',
        "nil",
        "42",
        '""',
        'OUT .. "/?.lua;" .. package.path',
    ]
)


def _escape_name() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ESCAPE_NAMES).map(lambda n: lua_string(n.encode())),
        st.sampled_from(["OUT .. '/secret'", "OUT .. '/shadow'", "OUT"]),
    )


@st.composite
def _escape_step(draw: st.DrawFn) -> str:
    name = draw(_escape_name())
    return draw(
        st.sampled_from(
            [
                f"package.path = {draw(_PATHS)}",
                f"package.cpath = {draw(_PATHS)}",
                f"package.loaded[{name}] = nil",
                f"package.loaded[{name}] = package",
                f"package.preload[{name}] = package.preload.ffi",
                f"package.preload[{name}] = require",
                "package.loaders = { function(n) return loadstring('return 1') end }",
                "table.insert(package.loaders or {}, 1, function() return nil end)",
                "package = { loaded = {}, preload = {}, path = OUT .. '/?.lua' }",
                "package.loaded = setmetatable({}, { __index = function(_, k) return k end })",
                "setmetatable(package.loaded, { __index = _G })",
                "_G.require = require",
                "setfenv(1, setmetatable({}, { __index = _G }))",
                "setfenv(require, { package = { preload = {}, loaded = {} } })",
                "string.gsub = function() return OUT .. '/secret' end",
                "string.find = function() return 1 end",
                "string.gmatch = function() return function() return nil end end",
                "string.sub = function(s) return s end",
                "collectgarbage()",
            ]
        )
    )


@st.composite
def _escape_grab(draw: st.DrawFn) -> str:
    name = draw(_escape_name())
    return draw(
        st.sampled_from(
            [
                f"return got(require({name}))",
                f"return got(package.loaded[{name}])",
                f"local l = package.preload[{name}] return got(l and l({name}))",
                f"local s = (package.loaders or {{}})[{draw(st.integers(1, 5))}] "
                f"local l = s and s({name}) return got(type(l) == 'function' and l({name}) or l)",
                f"module({name}) return got(getfenv(1))",
                "return got(getfenv(require))",
                f"return tostring(require({name}))",
                f"local f = loadfile and loadfile({name}) return got(f and f())",
                "return got(require('ffi')) .. tostring(require('ffi').C)",
            ]
        )
    )


@st.composite
def escape_attempt(draw: st.DrawFn) -> str:
    """The body of one probe function: a few setup steps, then a grab (see above)."""
    steps = draw(st.lists(_escape_step(), max_size=4))
    return "\n".join([*steps, draw(_escape_grab())])


# -- untrusted mode: no way to a pointer (issue 17, the boundary) ---------------------------------
#
# A hunt is Lua statements run by an untrusted bundle on the value protocol (its api.toml declares
# iso.Counter@1 with `inc() -> i64` and host.Math@1). `host` is what polyplug_init got, and
# `keep(...)` stores every value for the walk that follows (test_fuzz.py: no cdata, no userdata,
# no number equal to a host address anywhere reachable). The steps call everything luaplug hands
# the bundle with odd arguments, rewrite the globals and objects the glue might lean on, and try
# the debug-less introspection that is left (getfenv levels, coroutines, error values).

_HUNT_KEYS = st.sampled_from(['"iso.Counter@1"', '"host.Math@1"', '"iso.Counter"', '"nope@1"', "1", "nil", "{}"])


def _hunt_value() -> st.SearchStrategy[str]:
    """lua_value without the leaves an untrusted bundle cannot make (ffi) or that are its own
    userdata (newproxy): the walk must find no userdata at all."""
    return lua_value(1).map(
        lambda v: (
            v.replace("require('ffi').new('int[4]')", "2^40")
            .replace("require('ffi').cast('void*', 0)", "-0.0")
            .replace("newproxy(true)", "{}")
        )
    )


@st.composite
def _hunt_step(draw: st.DrawFn) -> str:
    v = draw(_hunt_value())
    w = draw(_hunt_value())
    key = draw(_HUNT_KEYS)
    return draw(
        st.sampled_from(
            [
                f"keep(pcall(host.contract, host, {key}))",
                f"keep(pcall(host.contract, {v}, {key}))",
                f"keep(pcall(host.log, host, {v}, {w}, {v}))",
                f"keep(pcall(host.log, host, 3, {w}, {v}))",
                f'local c = host:contract("iso.Counter@1") if c then keep(pcall(c.inc, c, {v})) end',
                f'local c = host:contract("iso.Counter@1") if c then keep(pcall(c.inc, {v})) end',
                f'local c = host:contract("host.Math@1") if c then keep(pcall(c.add, c, {v}, {w})) end',
                f'local c = host:contract("host.Math@1") if c then keep(pcall(c.greet, c, {v})) end',
                'local c = host:contract("host.Math@1") if c then keep(pcall(c.boom, c)) end',
                f"keep(pcall(getfenv, {draw(st.integers(-1, 8))}))",
                f"keep(pcall(setfenv, {draw(st.integers(-1, 8))}, {{}}))",
                f"keep(coroutine.resume(coroutine.create(host.contract), host, {key}))",
                'keep(coroutine.resume(coroutine.wrap(function() return host:contract("iso.Counter@1") end)))',
                f"keep(pcall(error, {v}))",
                f"keep(tostring(host.contract), tostring({v}))",
                f"host.contract = {draw(st.sampled_from(['nil', 'host.log', 'print']))}",
                f'local c = host:contract("iso.Counter@1") if c then c.inc = {v} keep(c) end',
                "string.format = function() return 'x' end",
                "string.match = function() return nil end",
                "tostring = function() return 'x' end",
                "error = function() end",
                "pcall = function(f, ...) return true, f(...) end",
                "setmetatable(_G, { __index = function(_, k) return k end })",
                "collectgarbage()",
                f"keep(tostring({v}), tostring(host), tostring(host.log), tostring(coroutine.create(print)))",
                f'keep(pcall(string.format, "%s %5s %p %q", {v}, {w}, {v}, {w}))',
                f'keep(pcall(string.format, "%s", {v}))',
                "keep(pcall(error, setmetatable({}, { __tostring = function() return tostring({}) end })))",
            ]
        )
    )


@st.composite
def pointer_hunt(draw: st.DrawFn) -> str:
    """The body of one hunt (see above)."""
    return "\n".join(draw(st.lists(_hunt_step(), min_size=1, max_size=6)))


#: Steps of a handler that tries to run past its instruction budget or memory cap (issue 17);
#: each ends or is stopped by the budget.
_LIMIT_STEPS = (
    "error = function() end",
    "error = nil; setmetatable(_G, { __index = function() return function() end end })",
    'pcall(function() load("while true do end", "=luaplug_host")() end)',
    "xpcall(function() while true do end end, function() while true do end end)",
    "pcall(setfenv, 3, {})",
    "pcall(function() local e = getfenv(alloc); setfenv(function() end, e) end)",
    "for _ = 1, 100 do pcall(function() while true do end end) end",
    "pcall(function() local t = {} for i = 1, 1e7 do t[i] = string.rep('m', 64) .. i end end)",
    "pcall(function() debug.sethook() end)",
    "pcall(function() local h = debug.gethook(); debug.getupvalue(h, 1)() end)",
    "local s = 0; for i = 1, 1000 do s = s + i end",
)


#: Finalizer attacks: untrusted bundles have neither newproxy nor ffi, so these must fail there.
_UNTRUSTED_STEPS = (
    "pcall(function() local p = newproxy(true); getmetatable(p).__gc = function() while true do end end; K = p end)",
    "pcall(function() local ffi = require('ffi'); K = ffi.gc(ffi.new('int[1]'), function() while true do end end) end)",
)


@st.composite
def limit_attack(draw: st.DrawFn, untrusted: bool = False) -> str:
    """Lua source of a contract ``fuzz.L@1`` whose fn 0 runs 1-4 budget/cap attacks in a row
    and ends spinning; fn 1 does nothing. ``untrusted``: for a bundle loaded untrusted, on the
    value protocol (its api.toml: :data:`LIMIT_API`; methods ``attack`` and ``noop``)."""
    pool = _LIMIT_STEPS + (_UNTRUSTED_STEPS if untrusted else ())
    steps = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
    body = "\n    ".join(steps)
    if untrusted:
        return (
            "local L = {}\n"
            "function L.attack(_, alloc)\n    " + body + "\n    while true do end\n  end\n"
            "function L.noop() end\n"
            "function polyplug_init()\n"
            "  return { ['fuzz.L@1'] = function() return L end }, { code = 0 }\n"
            "end\n"
        )
    return (
        "local F = { [0] = function(_, _, _, _, alloc)\n    "
        + body
        + "\n    while true do end\n  end, [1] = function() end }\n"
        "function polyplug_init()\n"
        "  return { ['fuzz.L'] = { factory = function() return {} end, functions = F } }, { code = 0 }\n"
        "end\n"
    )


#: The api.toml of an untrusted limit_attack bundle.
LIMIT_API = """
[[guest_contract]]
name = "fuzz.L"
version = "1.0.0"
[[guest_contract.functions]]
name = "attack"
[[guest_contract.functions]]
name = "noop"
"""


# -- pattern calls (issue 17, class 10: the pattern limit of untrusted mode) ----------------------

#: Pattern items: single-byte classes (which take a quantifier) and the rest.
_PATTERN_CLASSES = ("a", "b", ".", "%a", "%d", "%s", "%w", "[ab]", "[^a]", "[%a%d]", "x", "%.", "(", ")")
_PATTERN_OTHERS = ("%b()", "%f[%w]", "()", "(", ")", "%1", "-", "%")
_SUBJECT_UNITS = ("a", "ab", "a b", "((", "()", "aaab", "1a ", "a=1\n", "(a)")


@st.composite
def _pattern(draw: st.DrawFn) -> str:
    items = []
    for _ in range(draw(st.integers(1, 7))):
        if draw(st.integers(0, 4)) == 0:
            items.append(draw(st.sampled_from(_PATTERN_OTHERS)))
        else:
            items.append(draw(st.sampled_from(_PATTERN_CLASSES)) + draw(st.sampled_from(("", "", "*", "+", "-", "?"))))
    return draw(st.sampled_from(("", "", "^"))) + "".join(items) + draw(st.sampled_from(("", "", "$")))


@st.composite
def pattern_call(draw: st.DrawFn) -> str:
    """Lua source (a chunk body) making one string.find/match/gmatch/gsub call on a pattern and a
    subject of up to a few KiB, and returning what it found (small values only)."""
    unit = draw(st.sampled_from(_SUBJECT_UNITS))
    count = draw(st.one_of(st.integers(0, 40), st.integers(0, 3000)))
    tail = draw(st.sampled_from(("", "b", "x", ")", "=")))
    subject = f"string.rep({lua_string(unit.encode())}, {count}) .. {lua_string(tail.encode())}"
    pattern = lua_string(draw(_pattern()).encode())
    how = draw(st.sampled_from(("find", "plain", "method", "match", "gmatch", "gsub", "gsub-function")))
    if how == "find":
        return f"return string.find({subject}, {pattern})"
    if how == "plain":
        return f"return string.find({subject}, {pattern}, 1, true)"
    if how == "method":
        return f"return ({subject}):find({pattern}, 2)"
    if how == "match":
        return f"return string.match({subject}, {pattern})"
    if how == "gmatch":
        return (
            f"local t = {{}} for a in string.gmatch({subject}, {pattern}) do t[#t + 1] = tostring(a) "
            'if #t > 20 then break end end return #t, table.concat(t, "|")'
        )
    if how == "gsub":
        return f'local r, n = string.gsub({subject}, {pattern}, "<%0>") return #r, n, r:sub(1, 40)'
    return (
        f"local k = 0 local r, n = string.gsub({subject}, {pattern}, function(x) k = k + 1 "
        "if k % 2 == 0 then return nil end return tostring(x):upper() end) return #r, n, r:sub(1, 40)"
    )
