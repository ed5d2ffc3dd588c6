"""Glue from ``luaplug codegen --bundle`` (polyplugc 0.1.3's files and guest API) + hand-written
implementations (``integration/glue``): loaded and called through luaplug on every backend."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import luaplug
from luaplug import typed
from luaplug.cli import main as cli_main

GLUE = Path(__file__).resolve().parent / "glue"


def build(tmp_path: Path, name: str, out: str = "generated") -> Path:
    """A copy of ``integration/glue`` with bundle ``name`` generated into ``<name>/<out>`` and its
    manifest next to the entry file (how polyplug's guides assemble a bundle)."""
    root = tmp_path / "glue"
    if not root.exists():
        shutil.copytree(GLUE, root)
    bundle = root / name
    assert (
        cli_main(["generate", "--bundle", str(bundle / "bundle.toml"), "--lang", "lua", "--out", str(bundle / out)])
        == 0
    )
    if (bundle / out).resolve() != bundle.resolve():
        shutil.copyfile(bundle / out / "manifest.toml", bundle / "manifest.toml")
    return bundle


@pytest.fixture
def api(tmp_path: Path) -> typed.ApiSpec:
    build(tmp_path, "counter_box")
    return typed.load_api(tmp_path / "glue" / "api.toml")


@pytest.fixture
def rt(runtime: luaplug.Runtime, tmp_path: Path, api: typed.ApiSpec) -> luaplug.Runtime:
    runtime.load(tmp_path / "glue" / "counter_box")
    runtime.load(build(tmp_path, "text_tools"))
    return runtime


@pytest.fixture
def scanner(rt: luaplug.Runtime, api: typed.ApiSpec) -> Iterator[typed.TypedProxy]:
    with rt.bind(api, "shapes.Scanner@1") as proxy:
        yield proxy


def test_the_plugins_register_under_their_names(rt: luaplug.Runtime) -> None:
    assert rt.contract("shapes.Scanner@1").plugin_name == "scanner"
    assert rt.contract("shapes.Counter@1").plugin_name == "counter"


def test_every_shape_round_trips(scanner: typed.TypedProxy, api: typed.ApiSpec) -> None:
    Mode, Caps, Stamp = api.enum("Mode").python, api.enum("Caps").python, api.struct("Stamp").python
    # StringView params reach the impl as StringView cdata (it calls polyplug_abi.to_str)
    assert scanner.upper("héllo") == "HéLLO"
    stamp = {"mode": Mode.Busy, "caps": Caps.Fast | Caps.Wide, "serial": 2**40 + 1, "weight": 1.25}
    assert scanner.scan("abc", stamp, True) == f"ABC|mode=1|caps=3|serial={2**40 + 1}|weight=1.25"
    assert scanner.scan("abc", Stamp(mode=Mode.Idle, caps=0, serial=0, weight=0.0), False) == (
        "abc|mode=0|caps=0|serial=0|weight=0.00"
    )
    assert scanner.weigh(b"\x01\x02\xff") == 258
    assert scanner.weigh(b"") == 0
    assert scanner.next_mode(Mode.Idle) is Mode.Busy
    assert scanner.stamp_of(7) == Stamp(mode=Mode.Busy, caps=Caps.Both, serial=7, weight=0.5)
    assert scanner.reverse(b"abc") == b"cba"
    assert scanner.reverse(b"") == b""
    assert scanner.cleared() == 0
    scanner.clear()
    scanner.clear()
    assert scanner.cleared() == 2


def test_instances_keep_their_own_state(rt: luaplug.Runtime, api: typed.ApiSpec) -> None:
    with rt.bind(api, "shapes.Scanner@1") as a, rt.bind(api, "shapes.Scanner@1") as b:
        a.clear()
        assert (a.cleared(), b.cleared()) == (1, 0)


def test_a_peer_call_through_peer_callers(scanner: typed.TypedProxy, rt: luaplug.Runtime, api: typed.ApiSpec) -> None:
    # ShapesCounterPeer.resolve(host) -> a fresh instance of the other bundle's contract each time
    assert scanner.ask_peer("x") == "counter:5:5:x"
    assert scanner.ask_peer("y") == "counter:5:5:y"
    with rt.bind(api, "shapes.Counter@1") as counter:
        assert counter.bump(3) == 3
        assert counter.add(-2, 9) == 7


def test_bad_struct_and_buffer_arguments_raise_before_the_call(scanner: typed.TypedProxy) -> None:
    with pytest.raises(TypeError, match="missing field 'weight'"):
        scanner.scan("a", {"mode": 0, "caps": 0, "serial": 0}, True)
    with pytest.raises(TypeError, match="no field 'colour'"):
        scanner.scan("a", {"mode": 0, "caps": 0, "serial": 0, "weight": 0.0, "colour": 1}, True)
    with pytest.raises(ValueError, match="not a Mode value"):
        scanner.scan("a", {"mode": 7, "caps": 0, "serial": 0, "weight": 0.0}, True)
    with pytest.raises(OverflowError, match="serial"):
        scanner.scan("a", {"mode": 0, "caps": 0, "serial": -1, "weight": 0.0}, True)
    with pytest.raises(TypeError, match="blob"):
        scanner.weigh(12)
    # a bitflag enum takes any combination
    assert scanner.scan("a", {"mode": 0, "caps": 0xF0, "serial": 0, "weight": 0.0}, False).endswith(
        "caps=240|serial=0|weight=0.00"
    )
    assert scanner.cleared() == 0


def test_a_missing_method_fails_at_factory_time(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    bundle = build(tmp_path, "counter_box")
    entry = bundle / "counter.lua"
    entry.write_text(entry.read_text("utf-8").replace("function self:label()", "function self:other()"), "utf-8")
    # the default impl is built by the load: it fails there, naming the contract and the method
    with pytest.raises(luaplug.InitFailed, match=r"shapes\.Counter@1: the impl lacks label\(\)"):
        runtime.load(bundle)
    assert runtime.contracts() == []


def test_a_result_of_the_wrong_type_names_the_function(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    bundle = build(tmp_path, "counter_box")
    entry = bundle / "counter.lua"
    text = entry.read_text("utf-8").replace(
        'function self:label() return "counter" end', "function self:label() return 7 end"
    )
    entry.write_text(text.replace("return self.total\n", "return 'many'\n"), "utf-8")
    runtime.load(bundle)
    with runtime.bind(tmp_path / "glue" / "api.toml", "shapes.Counter@1") as counter:
        with pytest.raises(luaplug.DispatchError) as info:
            counter.label()
        assert "shapes.Counter@1.label() must return a string, not a number" in str(info.value)
        assert "alloc_string_arena" not in str(info.value)
        with pytest.raises(luaplug.DispatchError, match=r"bump\(\) must return a number, not a string"):
            counter.bump(1)


def test_no_factory_fails_the_load_with_polyplug_inits_message(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    bundle = build(tmp_path, "counter_box")
    entry = bundle / "counter.lua"
    entry.write_text(entry.read_text("utf-8").replace("contracts.set_counter_factory(new_counter)", ""), "utf-8")
    with pytest.raises(luaplug.LoadError, match=r"set_counter_factory\(\.\.\.\) was not called"):
        runtime.load(bundle)


def test_the_glue_works_from_any_module_path(runtime: luaplug.Runtime, tmp_path: Path, api: typed.ApiSpec) -> None:
    """Generated straight into the bundle directory: the author requires ``guest.contracts``."""
    bundle = build(tmp_path, "counter_box", out=".")
    entry = bundle / "counter.lua"
    entry.write_text(entry.read_text("utf-8").replace("generated.guest.contracts", "guest.contracts"), "utf-8")
    runtime.load(bundle)
    with runtime.bind(api, "shapes.Counter@1") as counter:
        assert counter.label() == "counter"


def test_luaplug_call_reads_the_old_dialect(
    rt: luaplug.Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    bundle = tmp_path / "glue" / "text_tools"
    api = str(tmp_path / "glue" / "api.toml")
    base = ["--backend", backend, "call", str(bundle), "shapes.Scanner@1"]
    assert cli_main([*base, "upper", "hi", "--api", api]) == 0
    assert cli_main([*base, "next_mode", "Idle", "--api", api]) == 0
    assert (
        cli_main([*base, "scan", "ab", '{"mode": "Busy", "caps": 3, "serial": 4, "weight": 2}', "true", "--api", api])
        == 0
    )
    assert cli_main([*base, "stamp_of", "9", "--api", api]) == 0
    assert cli_main([*base, "reverse", "xyz", "--api", api]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "HI",
        "Busy (1)",
        "AB|mode=1|caps=3|serial=4|weight=2.00",
        '{"mode": "Busy", "caps": "Both", "serial": 9, "weight": 0.5}',
        "zyx",
    ]


class Notes:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def note(self, text: str) -> int:
        self.seen.append(text)
        return len(text)

    def tag(self, level: int, text: str) -> str:
        return f"{getattr(level, 'name', level)}:{text}"


def test_a_host_call_through_host_contracts(rt: luaplug.Runtime, scanner: typed.TypedProxy, tmp_path: Path) -> None:
    notes = Notes()
    rt.provide("host.notes@1", notes, api=tmp_path / "glue" / "api.toml")
    assert scanner.ask_host("hello") == "Busy:hello#5"
    assert notes.seen == ["hello"]


def test_no_host_contract_gives_nil_callers(scanner: typed.TypedProxy) -> None:
    # resolve_host_contract_interface answers null: from_host returns nil, nothing else is called
    assert scanner.ask_host("hello") == "no host contract"
