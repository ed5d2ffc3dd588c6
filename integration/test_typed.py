"""Typed contracts (spec §14): generated Lua glue + plain Lua methods, called through ``Runtime.bind``."""

from __future__ import annotations

import enum
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import luaplug
from luaplug import AbiErrorCode, typed
from luaplug.abi import ffi
from luaplug.cli import main as cli_main
from luaplug.typed.luagen import generate_lua

BUNDLE = "typed_calc"
CopyBundle = Callable[..., Path]


@pytest.fixture
def api_path(bundles: Path) -> Path:
    return bundles / BUNDLE / "api.toml"


@pytest.fixture
def rt(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    runtime.load(bundles / BUNDLE)
    return runtime


@pytest.fixture
def calc(rt: luaplug.Runtime, api_path: Path) -> Iterator[typed.TypedProxy]:
    with rt.bind(api_path, "typed.Calc@1") as proxy:
        yield proxy


def test_the_committed_glue_is_what_codegen_writes(api_path: Path) -> None:
    committed = (api_path.parent / "contracts.lua").read_text("utf-8")
    assert committed == generate_lua(typed.load_api(api_path), BUNDLE)


def test_freshly_generated_glue_loads_and_serves(runtime: luaplug.Runtime, copy_bundle: CopyBundle) -> None:
    path = copy_bundle(BUNDLE)
    (path / "contracts.lua").unlink()
    code = cli_main(["codegen", str(path / "api.toml"), "--lang", "lua", "--plugin", BUNDLE, "--out", str(path)])
    assert code == 0
    runtime.load(path)
    with runtime.bind(path / "api.toml") as calc:
        assert calc.add(2, 3) == 5
        assert calc.greet("world") == "hello, world"
    assert runtime.contract("typed.Calc@1").plugin_name == BUNDLE


@pytest.mark.parametrize("sizes", [(5, 300, 5), (255, 256, 257), (4000, 1, 9000)])
def test_strings_of_every_length_round_trip(calc: typed.TypedProxy, sizes: tuple[int, ...]) -> None:
    """Short arguments go through the proxy's own buffer, long ones are wrapped; results come from
    the arena's buffer or, past it, from overflow blocks."""
    for n in sizes:
        text = ("é" * n)[:n]
        assert calc.greet(text) == "hello, " + text


def test_every_type_round_trips(calc: typed.TypedProxy, api_path: Path) -> None:
    Color = typed.load_api(api_path).enum("Color").python
    assert calc.add(2, 3) == 5
    assert calc.add(-(2**31), 2**31 - 1) == -1
    assert calc.noop() is None
    assert calc.negate(2**62) == -(2**62)
    assert calc.greet("wörld") == "hello, wörld"
    assert calc.greet(b"bytes") == "hello, bytes"
    assert calc.greet("") == "hello, "
    assert calc.widen(255, 65535, 2**32 - 1) == 255 + 65535 + 2**32 - 1
    assert calc.mix(-128, -32768, -(2**62), 2**62) == -128 - 32768
    assert calc.scale(1.5, 2.0) == 3.0
    assert calc.half(3.0) == 1.5
    assert calc.both(True, True) is True
    assert calc.both(True, False) is False
    nxt = calc.next_color(Color.Green)
    assert nxt is Color.Blue
    assert calc.next_color(4) is Color.Red  # plain ints that are variants are accepted
    assert calc.describe("tag", 7, True, Color.Blue) == "tag:7:true:4"
    assert calc.add(a=1, b=2) == 3  # keywords by the declared names


def test_bad_arguments_raise_before_the_call(calc: typed.TypedProxy) -> None:
    assert calc.count() == 1
    with pytest.raises(TypeError, match="argument 'a'"):
        calc.add("2", 3)
    with pytest.raises(TypeError):
        calc.add(2.5, 3)
    with pytest.raises(OverflowError, match="'b'"):
        calc.add(1, 2**31)
    with pytest.raises(OverflowError):
        calc.widen(256, 0, 0)
    with pytest.raises(OverflowError):
        calc.widen(-1, 0, 0)
    with pytest.raises(OverflowError):
        calc.mix(0, 0, 0, 2**64)
    with pytest.raises(OverflowError):
        calc.half(1e39)
    with pytest.raises(TypeError, match="StringView"):
        calc.greet(42)
    with pytest.raises(ValueError, match="Color"):
        calc.next_color(3)
    with pytest.raises(TypeError):
        calc.add(1)
    assert calc.count() == 2  # nothing above reached the VM
    assert math.isinf(calc.half(math.inf))


def test_a_lua_error_raises_dispatch_error(calc: typed.TypedProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="luaplug.loader")
    with pytest.raises(luaplug.DispatchError) as info:
        calc.fail("kaboom")
    assert info.value.code == AbiErrorCode.Generic
    assert info.value.contract == "typed.Calc@1"
    assert info.value.fn_id == 12
    assert "kaboom" in (info.value.lua_error or "")
    # raised to the caller: logged at DEBUG, not at ERROR
    assert [r.levelno for r in caplog.records if "kaboom" in r.getMessage()] == [logging.DEBUG]
    assert calc.add(1, 1) == 2  # still usable


def test_each_proxy_owns_an_instance(rt: luaplug.Runtime, api_path: Path) -> None:
    with rt.bind(api_path) as one, rt.bind(api_path) as two, rt.bind(api_path, instance=False) as default:
        assert [one.count(), one.count(), two.count()] == [1, 2, 1]
        assert default.instance.id == 0
        assert one.instance.id != two.instance.id
        assert default.count() == 1
    assert one.closed
    with pytest.raises(ValueError, match="closed"):
        one.count()
    with pytest.raises(ValueError):
        _ = one.instance
    with rt.bind(api_path, instance=False) as again:
        assert again.count() == 2  # the default impl lives on


def test_close_destroys_the_instance(rt: luaplug.Runtime, api_path: Path) -> None:
    proxy = rt.bind(api_path)
    inst = proxy.instance
    proxy.close()
    assert inst.dispatch(11) == AbiErrorCode.StaleHandle
    proxy.close()  # idempotent


def test_strings_longer_than_the_arena(rt: luaplug.Runtime, api_path: Path) -> None:
    proxy = typed.bind(rt, api_path, arena_capacity=64)
    try:
        big = "x" * 10_000
        for _ in range(50):
            assert proxy.greet(big) == "hello, " + big
            assert proxy.greet("small") == "hello, small"
        assert proxy._arena.overflow_blocks <= 2  # reset per call: no growth
    finally:
        proxy.close()


def test_the_default_impl_follows_a_reload(runtime: luaplug.Runtime, copy_bundle: CopyBundle) -> None:
    path = copy_bundle(BUNDLE)
    runtime.load(path)
    with runtime.bind(path / "api.toml", instance=False) as default, runtime.bind(path / "api.toml") as own:
        assert default.count() == 1
        assert own.count() == 1
        main = path / "main.lua"
        main.write_text(main.read_text("utf-8").replace('"hello, "', '"hi, "'), "utf-8")
        runtime.reload(BUNDLE)
        assert default.greet("you") == "hi, you"
        assert default.count() == 1  # a new VM: fresh state
        with pytest.raises(luaplug.DispatchError) as info:
            own.count()
        assert info.value.code == AbiErrorCode.StaleHandle


def test_a_python_declaration(rt: luaplug.Runtime) -> None:
    color = typed.enum("Color", "u8", {"Red": 1, "Green": 2, "Blue": 4})
    spec = typed.contract(
        "typed.Calc@1",
        typed.function("add", [("a", "i32"), ("b", "i32")], returns="i32"),
        typed.function("noop"),
        typed.function("negate", {"x": "i64"}, returns="i64"),
        typed.function("greet", [("name", "StringView")], returns="StringView"),
        *[typed.function(f"unused{i}") for i in range(5)],
        typed.function("next_color", [("c", color)], returns=color),
    )
    with rt.bind(spec) as calc:
        assert calc.add(20, 22) == 42
        assert calc.negate(-5) == 5
        assert calc.greet("py") == "hello, py"
        assert calc.next_color(color.python.Blue) == color.python.Red


def test_binding_errors(rt: luaplug.Runtime, api_path: Path, tmp_path: Path) -> None:
    with pytest.raises(luaplug.ApiSpecError, match="no contract"):
        rt.bind(api_path, "typed.Other@1")
    with pytest.raises(luaplug.ApiSpecError, match="no contract"):
        rt.bind(api_path, "typed.Calc@2")
    other = tmp_path / "api.toml"
    other.write_text('[[guest_contract]]\nname = "not.Loaded"\nversion = "1.0.0"\n', "utf-8")
    with pytest.raises(luaplug.ContractNotFoundError):
        rt.bind(other)
    with pytest.raises(luaplug.ApiSpecError, match="cannot read"):
        rt.bind(tmp_path / "missing.toml")


def test_the_bundle_dir_is_self_contained(bundles: Path, tmp_path: Path) -> None:
    # What a reference-runtime run needs besides the SDK: the glue sits next to main.lua.
    target = tmp_path / BUNDLE
    shutil.copytree(bundles / BUNDLE, target)
    assert {p.name for p in target.iterdir()} >= {"manifest.toml", "main.lua", "contracts.lua", "api.toml"}


class _Index:
    """An object with ``__index__`` only: cffi refuses it where an integer goes."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


class _Small(enum.IntEnum):
    TWO = 2


def _cffi_store(ctype: str, value: object) -> object:
    """What cffi makes of ``value`` stored into a ``ctype`` slot: the value read back, or the error type."""
    slot = ffi.new(f"{ctype}*")
    try:
        slot[0] = value
    except (TypeError, OverflowError) as exc:
        return type(exc)
    return slot[0]


_ODD_VALUES = [0, 7, -1, True, False, _Small.TWO, 2.0, 2.5, "3", None, _Index(3), 2**7, 2**8, 2**15, 2**16]
_ODD_VALUES += [2**31, -(2**31) - 1, 2**32, 2**63, -(2**63) - 1, 2**64, -(2**64), math.inf, math.nan]


@pytest.mark.parametrize("value", _ODD_VALUES, ids=repr)
def test_scalar_arguments_convert_like_a_cffi_store(calc: typed.TypedProxy, value: object) -> None:
    """The proxy stores scalars of the exact Python class through a memoryview and everything else
    through cffi: every value is refused or accepted exactly as a cffi store refuses or stores it."""
    # (a call taking the value as one param, the param's C type, what the guest returns for the stored value)
    cases: list[tuple[Callable[..., object], str, Callable[[object], object]]] = [
        (lambda v: calc.add(v, 0), "int32_t", lambda v: v),
        (lambda v: calc.negate(v), "int64_t", lambda v: -v),  # type: ignore[operator]
        (lambda v: calc.widen(v, 0, 0), "uint8_t", lambda v: v),
        (lambda v: calc.widen(0, v, 0), "uint16_t", lambda v: v),
        (lambda v: calc.widen(0, 0, v), "uint32_t", lambda v: v),
        (lambda v: calc.mix(v, 0, 0, 0), "int8_t", lambda v: v),
        (lambda v: calc.mix(0, v, 0, 0), "int16_t", lambda v: v),
        (lambda v: calc.mix(0, 0, v, 0), "int64_t", lambda v: v),
        (lambda v: calc.mix(0, 0, 0, v), "uint64_t", lambda v: (v + 2**63) % 2**64 - 2**63),  # type: ignore[operator]
        (lambda v: calc.scale(v, 1.0), "double", lambda v: v),
        (lambda v: calc.both(v, True), "bool", lambda v: v),
    ]
    for call, ctype, expected_of in cases:
        stored = _cffi_store(ctype, value)
        if isinstance(stored, type):
            with pytest.raises(stored):
                call(value)
        else:
            got = call(value)
            want = expected_of(stored)
            assert got == want or (got != got and want != want), (ctype, value, got, want)  # NaN == NaN


@pytest.mark.parametrize("value", _ODD_VALUES, ids=repr)
def test_enum_arguments_convert_like_a_cffi_store(calc: typed.TypedProxy, api_path: Path, value: object) -> None:
    Color = typed.load_api(api_path).enum("Color").python
    stored = _cffi_store("uint8_t", value)
    if isinstance(stored, type):
        with pytest.raises(stored):
            calc.next_color(value)
    elif stored not in {1, 2, 4}:
        with pytest.raises(ValueError, match="Color"):
            calc.next_color(value)
    else:
        assert calc.next_color(value) is {1: Color.Green, 2: Color.Blue, 4: Color.Red}[stored]  # type: ignore[index]
    assert calc.next_color(Color.Red) is Color.Green  # the members themselves


def test_only_functions_with_variable_size_results_get_the_arena(runtime: luaplug.Runtime, bundles: Path) -> None:
    """Like the reference's generated callers: a function whose result needs memory (a string)
    gets the proxy's arena, every other one a null arena (the guest then allocates from the host)."""
    runtime.load(bundles / "adder")
    runtime.load(bundles / "greeter")
    adder = typed.contract(
        "iso.Adder@1",
        typed.function("add", [("a", "i32"), ("b", "i32")], returns="i32"),
        typed.function("noop"),
        typed.function("probe", returns="i32"),
    )
    with runtime.bind(adder) as proxy:
        flags = proxy.probe()
        assert flags & 4  # the arena argument is a number
        assert flags & 32  # ... and 0: no arena
        assert proxy.add(40, 2) == 42
        assert proxy.noop() is None
    greeter = typed.contract("iso.Greeter@1", typed.function("greet", [("name", "StringView")], returns="StringView"))
    with typed.bind(runtime, greeter, arena_capacity=64) as proxy:
        for _ in range(20):  # each result lands in the reset arena: no overflow block is ever needed
            assert proxy.greet("world") == "hello, world"
        assert proxy._arena.overflow_blocks == 0


def test_a_short_string_after_a_failed_long_one(calc: typed.TypedProxy) -> None:
    """A string longer than the proxy's input buffer is passed from its own buffer for that call
    only: after it, even when the call raised, a short string is read from the proxy's buffer."""
    with pytest.raises(luaplug.DispatchError):
        calc.fail("x" * 1000)
    assert calc.greet("short") == "hello, short"
    assert calc.describe("t" * 300, 1, False, 1) == "t" * 300 + ":1:false:1"
    assert calc.describe("tag", 2, True, 2) == "tag:2:true:2"


def test_a_short_string_after_a_long_one_refused_while_packing(calc: typed.TypedProxy) -> None:
    """An argument after a long string is refused before the call: the string params point at
    the proxy's buffers again, not at the long string's copy (freed with the failed call)."""
    for bad in ("1", 2**40):
        with pytest.raises((TypeError, OverflowError)):
            calc.describe("t" * 300, bad, False, 1)
        assert calc.describe(b"tag", 2, True, 2) == "tag:2:true:2"  # bytes: the Python method on every path
        assert calc.describe("tag", 2, True, 2) == "tag:2:true:2"
