"""The typed proxy's C path (``typed_call`` in ``luaplug_entry.h``) against its Python path.

A proxy bound while the native entry is on packs the scalars of a scalar-only function in the
backend's call entry; one bound under ``LUAPLUG_NO_NATIVE_ENTRY=1`` runs the Python-compiled
method. Both must accept, refuse and return exactly the same, with the same exception types and
messages; the C path only falls back to the Python method for what it does not serve.
"""

from __future__ import annotations

import gc
import math
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_call_paths import calling_back
from test_typed import _Index, _Small

import luaplug
from luaplug import AbiErrorCode, typed
from luaplug.backend import NO_NATIVE_ENTRY
from luaplug.typed.luagen import generate_lua

CONTRACT = "test.Echo@1"
KINDS = ("i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f32", "f64", "bool")
API = "\n".join(
    [
        '[[enum]]\nname = "Shade"\nrepr = "i16"\n'
        'variants = [{ name = "Dark", value = -300 }, { name = "Light", value = 300 }]',
        '[[enum]]\nname = "Perm"\nrepr = "u32"\nbitflag = true\n'
        'variants = [{ name = "Read", value = 1 }, { name = "Write", value = 2 }, '
        '{ name = "Big", value = 2147483648 }]',
        '[[guest_contract]]\nname = "test.Echo"\nversion = "1.0.0"',
        *(
            f'[[guest_contract.functions]]\nname = "e_{k}"\nparams = [{{ name = "x", type = "{k}" }}]\nreturn = "{k}"'
            for k in (*KINDS, "Shade", "Perm")
        ),
        # Offsets and padding of an arg-pack struct: each call returns one of its fields.
        '[[guest_contract.functions]]\nname = "second"\n'
        'params = [{ name = "a", type = "u8" }, { name = "b", type = "u64" }]\nreturn = "u64"',
        '[[guest_contract.functions]]\nname = "last"\nparams = [{ name = "a", type = "bool" }, '
        '{ name = "b", type = "i16" }, { name = "c", type = "f32" }, { name = "d", type = "i8" }, '
        '{ name = "e", type = "f64" }]\nreturn = "f64"',
        '[[guest_contract.functions]]\nname = "chat"\nparams = [{ name = "x", type = "i32" }]\nreturn = "i32"',
        '[[guest_contract.functions]]\nname = "fail"\nparams = [{ name = "x", type = "i32" }]',
        '[[guest_contract.functions]]\nname = "bump"\nreturn = "u32"',
        '[[guest_contract.functions]]\nname = "greet"\nparams = [{ name = "name", type = "StringView" }]\n'
        'return = "StringView"',
        # Strings among scalars in an arg-pack struct; a string param with a scalar result; a
        # string result the test picks by number (invalid UTF-8, NUL bytes, a null pointer).
        '[[guest_contract.functions]]\nname = "tag"\nparams = [{ name = "a", type = "StringView" }, '
        '{ name = "n", type = "i32" }, { name = "b", type = "StringView" }]\nreturn = "StringView"',
        '[[guest_contract.functions]]\nname = "size"\nparams = [{ name = "s", type = "StringView" }]\nreturn = "u32"',
        '[[guest_contract.functions]]\nname = "raw"\nparams = [{ name = "n", type = "i32" }]\nreturn = "StringView"',
    ]
)
_ECHOED = ", ".join(f'"{k}"' for k in (*KINDS, "Shade", "Perm"))
MAIN = """
local guest = require("polyplug_guest")
-- Before the glue binds it: "<null>" comes back as a StringView with a length and a null pointer.
local alloc_string_arena = guest.alloc_string_arena
guest.alloc_string_arena = function(alloc, arena, s)
  if s == "<null>" then return { len = 3 } end
  return alloc_string_arena(alloc, arena, s)
end
local contracts = require("contracts")
local Echo = {}
Echo.__index = Echo
for _, k in ipairs({ ECHOED }) do Echo["e_" .. k] = function(_, x) return x end end
function Echo:second(_, b) return b end
function Echo:last(_, _, _, _, e) return e end
function Echo:chat(x)
  guest.log(self.host, guest.LogLevel.Info, "iso.chatty", "chatting")  -- the scope calling_back answers
  return x
end
function Echo:fail(x) error("failing with " .. tostring(x)) end
function Echo:bump() self.n = self.n + GENERATION return self.n end
function Echo:greet(name) return "hi " .. name end
function Echo:tag(a, n, b) return a .. "/" .. n .. "/" .. b end
function Echo:size(s) return #s end
local RAW = { "\\xff\\xfe", "ok\\0nul", "", "<null>", "\\xed\\xa0\\x80", "caf\\xc3\\xa9", "\\xc3" }
function Echo:raw(n) return RAW[n + 1] end
contracts.set_typed_echo_factory(function(h) return setmetatable({ host = h, n = 0 }, Echo) end)
function polyplug_init(_host, _ctx) return contracts.register_typed_echo(), { code = 0 } end
""".replace("ECHOED", _ECHOED)
MANIFEST = f'name = "typed_echo"\nid = {0x597256253468343D}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n'

FLT_MAX = 3.4028234663852886e38
#: Each kind's limits, the values just past them, and values of other classes.
LIMITS: dict[str, list[object]] = {
    "i8": [-(2**7), 2**7 - 1, -(2**7) - 1, 2**7],
    "i16": [-(2**15), 2**15 - 1, -(2**15) - 1, 2**15],
    "i32": [-(2**31), 2**31 - 1, -(2**31) - 1, 2**31],
    "i64": [-(2**63), 2**63 - 1, -(2**63) - 1, 2**63],
    "u8": [0, 2**8 - 1, -1, 2**8],
    "u16": [0, 2**16 - 1, -1, 2**16],
    "u32": [0, 2**32 - 1, -1, 2**32],
    "u64": [0, 2**64 - 1, -1, 2**64],
    "f32": [FLT_MAX, -FLT_MAX, FLT_MAX + 2.0**102, -FLT_MAX - 2.0**103, 1e39, -1e39, 1e-45, 1.1754943508222875e-38],
    "f64": [1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -0.0],
    "bool": [True, False],
    "Shade": [-300, 300, 0, 301, -(2**15) - 1],
    "Perm": [0, 1, 3, 2**31, 2**32 - 1, 2**32, -1],
}


class _Int(int):
    pass


class _Float(float):
    pass


ODD: list[object] = [0, 1, 7, -1, True, False, 2.0, 2.5, "3", None, b"1", _Index(3), _Small.TWO, _Int(5), _Float(1.5)]
ODD += [math.inf, -math.inf, math.nan, 2**100]


@pytest.fixture
def echo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "typed_echo"
    d.mkdir()
    (d / "api.toml").write_text(API, "utf-8")
    (d / "manifest.toml").write_text(MANIFEST, "utf-8")
    (d / "main.lua").write_text(MAIN.replace("GENERATION", "1"), "utf-8")
    (d / "contracts.lua").write_text(generate_lua(typed.load_api(d / "api.toml"), "typed_echo"), "utf-8")
    return d


@contextmanager
def python_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Instances bound inside get the pure-Python entry (so their proxies the Python methods)."""
    with monkeypatch.context() as m:
        m.setenv(NO_NATIVE_ENTRY, "1")
        yield


def has_native_entry(proxy: typed.TypedProxy) -> bool:
    return type(getattr(proxy.instance.call, "__self__", None)).__name__ == "Entry"


@pytest.fixture
def pair(
    runtime: luaplug.Runtime, echo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[typed.TypedProxy, typed.TypedProxy]]:
    """(a proxy on the C path, one on the Python path) of the same contract."""
    monkeypatch.delenv(NO_NATIVE_ENTRY, raising=False)
    runtime.load(echo_dir)
    native = runtime.bind(echo_dir / "api.toml", CONTRACT)
    if not has_native_entry(native):
        pytest.skip("this backend was built without its native entry")
    with python_path(monkeypatch):
        python = runtime.bind(echo_dir / "api.toml", CONTRACT)
    assert isinstance(python.e_i8, types.FunctionType)
    yield native, python
    native.close()
    python.close()


def outcome(fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[object, ...]:
    """What a call does: ``("ok", type, repr)`` or ``("raised", type, message)``."""
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:  # the outcome itself is compared
        return ("raised", type(exc), str(exc))
    return ("ok", type(value), repr(value))


def test_scalar_functions_are_packed_in_c(pair: tuple[typed.TypedProxy, typed.TypedProxy]) -> None:
    native, _ = pair
    scalars = (*(f"e_{k}" for k in KINDS), "e_Shade", "e_Perm", "second", "last", "chat", "fail", "bump")
    for name in (*scalars, "greet", "tag", "size", "raw"):
        method = getattr(native, name)
        assert type(method).__name__ == "builtin_function_or_method", name
        assert method.__name__ == name
    assert native.e_i32.__doc__ is not None and native.e_i32.__doc__.startswith("e_i32(x: i32) -> i32")


@pytest.mark.parametrize("kind", [*KINDS, "Shade", "Perm"])
def test_every_kind_round_trips_at_its_limits_as_on_the_python_path(
    pair: tuple[typed.TypedProxy, typed.TypedProxy], kind: str
) -> None:
    native, python = pair
    name = f"e_{kind}"
    for value in LIMITS[kind] + ODD:
        got = outcome(getattr(native, name), value)
        assert got == outcome(getattr(python, name), value), (kind, value)
        if got[0] == "ok" and kind not in ("f32", "bool") and isinstance(value, (int, float)):
            assert got[2] == repr(value) or kind in ("Shade", "Perm") or type(value) is not got[1], (kind, value)
    assert native.e_u64(2**64 - 1) == 2**64 - 1
    assert native.e_i64(-(2**63)) == -(2**63)
    assert native.e_i8(-128) == -128 and native.e_u8(255) == 255
    assert native.e_i16(-(2**15)) == -(2**15) and native.e_u16(2**16 - 1) == 2**16 - 1
    assert native.e_u32(2**32 - 1) == 2**32 - 1 and native.e_i32(2**31 - 1) == 2**31 - 1
    assert native.e_f32(FLT_MAX) == FLT_MAX and native.e_f32(0.1) == 0.10000000149011612
    assert native.e_f32(FLT_MAX + 2.0**102) == FLT_MAX  # past FLT_MAX but rounds down to it: no overflow
    with pytest.raises(OverflowError, match="does not fit float"):
        native.e_f32(FLT_MAX + 2.0**103)  # halfway to the next power: rounds to inf
    assert native.e_f64(5e-324) == 5e-324 and native.e_bool(True) is True and native.e_bool(False) is False
    assert type(native.e_Shade(-300)).__name__ == "Shade" and native.e_Shade(-300) == -300
    assert native.e_Perm(2**31 | 3) == 2**31 | 3


def test_bad_calls_raise_as_on_the_python_path(pair: tuple[typed.TypedProxy, typed.TypedProxy]) -> None:
    native, python = pair
    calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = [
        ("e_i32", (), {}),
        ("e_i32", (1, 2), {}),
        ("e_i32", (), {"x": 5}),
        ("e_i32", (1,), {"x": 5}),
        ("e_i32", (), {"y": 5}),
        ("e_i32", (1.0,), {}),
        ("e_i32", (True,), {}),
        ("e_bool", (1,), {}),
        ("e_bool", (2,), {}),
        ("e_f64", (1,), {}),
        ("e_f64", (2**1024,), {}),
        ("e_f32", (1e39,), {}),
        ("e_Shade", (1,), {}),
        ("second", (256, 0), {}),
        ("second", (0, -1), {}),
        ("second", (1, 2**64 - 1), {}),
        ("last", (True, -1, 1.5, -1, 2.25), {}),
        ("last", (True, -1, 1e39, -1, 2.25), {}),
        ("last", (1, -1, 1.5, -1, 2.25), {}),
        ("last", (True, 2**15, 1.5, -1, 2.25), {}),
        ("fail", (3,), {}),
        ("fail", (2**31,), {}),
        ("bump", (), {}),
        ("bump", (1,), {}),
    ]
    for name, args, kwargs in calls:
        assert outcome(getattr(native, name), *args, **kwargs) == outcome(getattr(python, name), *args, **kwargs), (
            name,
            args,
            kwargs,
        )
    assert native.second(1, 2**64 - 1) == 2**64 - 1
    assert native.last(True, -1, 1.5, -1, 2.25) == 2.25
    with pytest.raises(OverflowError, match=r"e_i32\(\) argument 'x' \(i32\)"):
        native.e_i32(2**31)
    with pytest.raises(TypeError, match="argument 'x'"):
        native.e_i32(1.0)
    with pytest.raises(luaplug.DispatchError) as info:
        native.fail(3)
    assert info.value.code == AbiErrorCode.Generic and "failing with 3" in (info.value.lua_error or "")
    assert "fail" in str(info.value)


def test_a_reentrant_call_is_refused_as_on_the_python_path(pair: tuple[typed.TypedProxy, typed.TypedProxy]) -> None:
    """Host code inside a call calls the same proxy again: the re-entry answers what the Python
    path answers, and the outer call still returns its own argument."""
    seen: dict[int, list[tuple[object, ...]]] = {0: [], 1: []}
    for i, proxy in enumerate(pair):

        def again(p: typed.TypedProxy = proxy, into: list[tuple[object, ...]] = seen[i]) -> None:
            into.append(outcome(p.e_i32, 7))

        with calling_back(again):
            assert proxy.chat(41) == 41
        assert len(seen[i]) == 1
    assert seen[0] == seen[1]
    assert seen[0] == [("raised", luaplug.DispatchError, "call of test.Echo@1.e_i32 failed with ReentrantCall (9)")]


def test_a_call_made_while_the_arguments_are_packed_keeps_its_own_buffer(
    pair: tuple[typed.TypedProxy, typed.TypedProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking an enum argument may run Python code (its class's ``__hash__``), which may call
    the same method (or let another thread call it) before the outer call has run: that call must
    not pack into the memory the outer call's arguments already sit in."""
    native, _ = pair
    shade = type(native.e_Shade(-300))
    dark, light = shade(-300), shade(300)
    nested: list[object] = []

    def hashing(member: object) -> int:
        if not nested:
            nested.append(native.e_Shade(300))  # packed while the outer -300 is being checked
        return int.__hash__(member)  # type: ignore[arg-type]

    monkeypatch.setattr(shade, "__hash__", hashing)
    assert native.e_Shade(dark) == -300
    assert nested == [light]


def test_two_threads_calling_one_proxy(pair: tuple[typed.TypedProxy, typed.TypedProxy]) -> None:
    """Each call packs into memory no other call uses: two threads calling the same proxy
    always get their own arguments back."""
    native, _ = pair
    errors: list[str] = []

    def worker(base: int) -> None:
        for i in range(3000):
            a, b = base + i, -(base + i)
            if native.second(i % 256, a) != a or native.e_i64(b) != b or native.last(True, 1, 0.5, 1, float(a)) != a:
                errors.append(f"thread {base}: call {i}")
                return

    threads = [threading.Thread(target=worker, args=(base,)) for base in (1 << 20, 1 << 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_closed_proxy_runtime_and_bundle_raise_as_on_the_python_path(
    runtime: luaplug.Runtime, echo_dir: Path, monkeypatch: pytest.MonkeyPatch, new_runtime: Callable[..., Any]
) -> None:
    monkeypatch.delenv(NO_NATIVE_ENTRY, raising=False)
    results: dict[str, list[tuple[object, ...]]] = {}
    for path in ("native", "python"):
        with monkeypatch.context() as m:
            if path == "python":
                m.setenv(NO_NATIVE_ENTRY, "1")
            rt = new_runtime()
            rt.load(echo_dir)
            closed = rt.bind(echo_dir / "api.toml", CONTRACT)
            kept, kept_greet = closed.e_i32, closed.greet
            assert kept_greet("x") == "hi x"
            closed.close()
            unloaded = rt.bind(echo_dir / "api.toml", CONTRACT)
            before, before_greet, before_size = unloaded.e_i32, unloaded.greet, unloaded.size
            rt.unload("typed_echo")
            out = [outcome(closed.e_i32, 1), outcome(kept, 1), outcome(unloaded.e_i32, 1), outcome(before, 1)]
            out += [outcome(kept_greet, "x"), outcome(closed.greet, "x")]
            out += [outcome(before_greet, "x"), outcome(before_size, "x")]
            rt.load(echo_dir)
            shut = rt.bind(echo_dir / "api.toml", CONTRACT)
            held, held_greet = shut.e_i32, shut.greet
            rt.close()
            out += [outcome(shut.e_i32, 1), outcome(held, 1), outcome(shut.bump), outcome(held_greet, "x")]
            results[path] = out
    assert results["native"] == results["python"]
    assert results["native"][0][:2] == ("raised", ValueError)
    assert results["native"][4] == results["native"][11] == ("raised", ValueError, "the arena is closed")
    assert results["native"][6][:2] == ("raised", luaplug.DispatchError) and "StaleHandle" in str(results["native"][6])
    assert results["native"][8][:2] == ("raised", luaplug.RuntimeClosedError)


def test_the_default_impl_follows_a_reload_on_the_c_path(runtime: luaplug.Runtime, echo_dir: Path) -> None:
    """A proxy of the default impl retries a call that found the VM reloaded (StaleHandle)."""
    runtime.load(echo_dir)
    with runtime.bind(echo_dir / "api.toml", CONTRACT, instance=False) as default:
        if not has_native_entry(default):
            pytest.skip("this backend was built without its native entry")
        first = default.bump
        greeter = runtime.bind(echo_dir / "api.toml", CONTRACT, instance=False)
        greet = greeter.greet
        assert first() == 1 and first() == 2 and greet("ü") == "hi ü"
        (echo_dir / "main.lua").write_text(MAIN.replace("GENERATION", "10").replace('"hi "', '"hey "'), "utf-8")
        runtime.reload("typed_echo")
        assert first() == 10  # the method bound before the reload retries on the new VM
        assert greet("ü") == "hey ü"  # a string result, in the arena the retried call passes
        greeter.close()
        assert default.bump() == 20
        assert type(default.bump).__name__ == "builtin_function_or_method"


class _Str(str):
    pass


#: The strings' inline buffer, in UTF-8 bytes (the proxy's; a longer argument goes to the Python method).
INLINE = 256
#: String arguments: ASCII, non-ASCII, empty, NUL bytes inside, at and one past the inline buffer
#: (in ASCII and in two-byte characters), a lone surrogate, and objects of other classes.
STRINGS: list[object] = [
    "world",
    "héllo wörld ✓ 😀",
    "",
    "a\x00b\x00",
    "\x00",
    "x" * INLINE,
    "x" * (INLINE + 1),
    "é" * (INLINE // 2),
    "é" * (INLINE // 2) + "x",
    "😀" * (INLINE // 4 + 1),
    "\ud800",
    _Str("sub"),
    b"bytes",
    b"\xff",
    bytearray(b"ba"),
    memoryview(b"mv"),
    None,
    5,
    ["x"],
]


def test_strings_round_trip_as_on_the_python_path(pair: tuple[typed.TypedProxy, typed.TypedProxy]) -> None:
    native, python = pair
    for value in STRINGS:
        for name, args in (
            ("greet", (value,)),
            ("size", (value,)),
            ("tag", (value, -7, value)),
            ("tag", ("a", 7, value)),
            ("tag", (value, 2**31, "b")),
        ):
            got = outcome(getattr(native, name), *args)
            assert got == outcome(getattr(python, name), *args), (name, args)
    assert native.greet("world") == "hi world"
    assert native.greet("héllo wörld ✓ 😀") == "hi héllo wörld ✓ 😀"
    assert native.greet("") == "hi " and native.size("") == 0
    assert native.greet("a\x00b\x00") == "hi a\x00b\x00" and native.size("a\x00b\x00") == 4
    assert native.size("é" * (INLINE // 2)) == INLINE and native.size("x" * (INLINE + 1)) == INLINE + 1
    assert native.tag("a\x00", -5, "ü") == "a\x00/-5/ü"
    assert native.greet(b"ok") == "hi ok"
    with pytest.raises(ValueError, match="not UTF-8"):
        native.greet(b"\xff")
    with pytest.raises(TypeError, match="expected str or bytes, not NoneType"):
        native.greet(None)
    with pytest.raises(UnicodeEncodeError):
        native.greet("\ud800")


def test_strings_up_to_the_inline_buffer_are_served_in_c(pair: tuple[typed.TypedProxy, typed.TypedProxy]) -> None:
    """A call served in C uses an arena of its own; one handed to the Python method bumps the proxy's."""
    native, _ = pair

    def served(value: object) -> bool:
        native._arena_words[0] = native._arena_base
        native.greet(value)
        return bool(native._arena_words[0] == native._arena_base)

    assert served("x" * INLINE) and served("é" * (INLINE // 2)) and served("") and served("ü")
    assert not served("x" * (INLINE + 1)) and not served("é" * (INLINE // 2) + "x")
    assert not served(b"x") and not served(_Str("x"))


def test_string_results_decode_as_on_the_python_path(pair: tuple[typed.TypedProxy, typed.TypedProxy]) -> None:
    native, python = pair
    for n in range(-1, 8):
        assert outcome(native.raw, n) == outcome(python.raw, n), n
    with pytest.raises(UnicodeDecodeError, match="invalid start byte"):
        native.raw(0)
    assert native.raw(1) == "ok\x00nul" and native.raw(2) == "" and native.raw(5) == "café"
    with pytest.raises(luaplug.DispatchError) as info:
        native.raw(3)
    assert info.value.code == AbiErrorCode.InvalidPointer and "null StringView" in str(info.value)
    with pytest.raises(UnicodeDecodeError, match="invalid continuation byte"):
        native.raw(4)
    with pytest.raises(UnicodeDecodeError, match="unexpected end of data"):
        native.raw(6)
    with pytest.raises(luaplug.DispatchError, match="raw"):
        native.raw(7)  # nil: the glue refuses the result


def test_a_reentrant_string_call_is_refused_as_on_the_python_path(
    pair: tuple[typed.TypedProxy, typed.TypedProxy],
) -> None:
    """Inside a call, host code calls greet on the same proxy: the C path takes memory of its own
    for it (the proxy's is in use) and answers what the Python path answers."""
    seen: dict[int, list[tuple[object, ...]]] = {0: [], 1: []}
    for i, proxy in enumerate(pair):

        def again(p: typed.TypedProxy = proxy, into: list[tuple[object, ...]] = seen[i]) -> None:
            into.append(outcome(p.greet, "inner"))
            into.append(outcome(p.size, "inner"))

        with calling_back(again):
            assert proxy.chat(41) == 41
        assert proxy.greet("outer") == "hi outer"
    assert seen[0] == seen[1]
    assert seen[0][0] == ("raised", luaplug.DispatchError, "call of test.Echo@1.greet failed with ReentrantCall (9)")


def test_two_threads_calling_greet_on_one_proxy(pair: tuple[typed.TypedProxy, typed.TypedProxy]) -> None:
    """Each call copies its strings and gets its result in memory no other call uses: two threads
    calling the same proxy always get their own strings back."""
    native, _ = pair
    errors: list[str] = []

    def worker(mark: str) -> None:
        for i in range(3000):
            a, b = f"{mark}{i}", mark * (i % 60)
            got = (native.greet(a), native.tag(a, i, b), native.size(b))
            if got != ("hi " + a, f"{a}/{i}/{b}", len(b.encode())):
                errors.append(f"thread {mark}: call {i}")
                return

    threads = [threading.Thread(target=worker, args=(mark,)) for mark in ("a", "ü")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_arenas_of_the_c_methods_live_as_long_as_their_methods(runtime: luaplug.Runtime, echo_dir: Path) -> None:
    """A reload installs new methods with new arenas; those of the replaced methods are freed with
    them, and the proxy's close closes the current ones."""
    runtime.load(echo_dir)
    with runtime.bind(echo_dir / "api.toml", CONTRACT, instance=False) as default:
        if not has_native_entry(default):
            pytest.skip("this backend was built without its native entry")
        string_results = len(default._native_arenas)
        assert string_results == 3  # greet, tag, raw
        for _ in range(5):
            runtime.reload("typed_echo")
            assert default.greet("x") == "hi x"
        gc.collect()
        assert len(default._native_arenas) == string_results
        arenas = list(default._native_arenas)
    for arena in arenas:
        with pytest.raises(ValueError, match="the arena is closed"):
            arena.alloc(1)
