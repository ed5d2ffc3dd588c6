"""Glue from ``luaplug codegen --bundle`` on the reference runtime (polyplug 0.1.3), side by side with luaplug.

The bundles of ``integration/glue`` (an api.toml in polyplugc 0.1.3's dialect, hand-written
implementations) are generated, vendored (spec §15) and loaded on both; every function is called
with the same packed arguments and must give the same result. The host-contract caller
(``host_contracts.lua``) is checked here against the reference's by-value ``get_host_contract``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import typed
from luaplug.abi import ffi
from luaplug.cli import main as cli_main
from luaplug.hostcontract import HostContract, host_spec
from luaplug.typed.values import load, store

from .adapter import ReferenceRuntime, reference_available, vendored_copy

GLUE = Path(__file__).resolve().parent.parent / "glue"
_REASON = reference_available()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

Dispatch = Callable[[int, Any, Any, Any], int]


class Notes:
    def note(self, text: str) -> int:
        return len(text)

    def tag(self, level: Any, text: str) -> str:
        return f"{getattr(level, 'name', level)}:{text}"


@pytest.fixture
def glue(tmp_path: Path) -> Path:
    root = tmp_path / "glue"
    shutil.copytree(GLUE, root)
    for name in ("counter_box", "text_tools"):
        bundle = root / name
        assert cli_main(["generate", "--bundle", str(bundle / "bundle.toml"), "--out", str(bundle / "generated")]) == 0
        shutil.copyfile(bundle / "generated" / "manifest.toml", bundle / "manifest.toml")
    return root


@pytest.fixture
def api(glue: Path) -> typed.ApiSpec:
    return typed.load_api(glue / "api.toml")


@pytest.fixture
def ref(glue: Path, tmp_path: Path, api: typed.ApiSpec) -> Iterator[ReferenceRuntime]:
    with ReferenceRuntime() as rt:
        notes = HostContract(host_spec("host.notes@1", glue / "api.toml"), Notes(), host_address=rt.host_api_address)
        assert rt.register_host_contract(notes.address) == 0
        vendored = tmp_path / "vendored"
        vendored.mkdir()
        rt.load(vendored_copy(glue / "counter_box", vendored))
        rt.load(vendored_copy(glue / "text_tools", vendored))
        yield rt


@pytest.fixture
def ours(glue: Path) -> Iterator[luaplug.Runtime]:
    with luaplug.Runtime("lupa") as rt:
        rt.load(glue / "counter_box")
        rt.load(glue / "text_tools")
        yield rt


def call(dispatch: Dispatch, arena: luaplug.CallArena, spec: typed.ContractSpec, name: str, *values: object) -> object:
    """Pack ``values`` as spec §14 says, dispatch, read the result."""
    fn_id, fn = spec.function_named(name)
    keep: list[Any] = []
    args: Any = ffi.NULL
    if len(fn.params) == 1:
        args = ffi.new(f"{fn.params[0].type.cdecl}*")
        store(fn.params[0].type, args, values[0], keep, name)
    elif fn.params:
        args = ffi.new("struct { " + " ".join(f"{p.type.cdecl} {p.name};" for p in fn.params) + " } *")
        for p, v in zip(fn.params, values, strict=True):
            store(p.type, ffi.addressof(args[0], p.name), v, keep, name)
    out = ffi.new(f"{fn.returns.cdecl}*") if fn.returns is not None else ffi.NULL
    arena.reset()
    assert dispatch(fn_id, args, out, arena) == 0
    return load(fn.returns, out) if fn.returns is not None else None


CASES: list[tuple[str, tuple[object, ...]]] = [
    ("upper", ("héllo",)),
    ("scan", ("abc", {"mode": 1, "caps": 3, "serial": 2**40 + 1, "weight": 1.25}, True)),
    ("weigh", (b"\x01\x02\xff",)),
    ("next_mode", (0,)),
    ("stamp_of", (7,)),
    ("reverse", (b"abc",)),
    ("cleared", ()),
    ("ask_peer", ("x",)),
]


def test_the_same_results_on_both(ref: ReferenceRuntime, ours: luaplug.Runtime, api: typed.ApiSpec) -> None:
    spec = api.contract("shapes.Scanner@1")
    theirs = ref.contract("shapes.Scanner@1")
    mine = ours.contract("shapes.Scanner@1").default

    def mine_dispatch(fn_id: int, args: Any, out: Any, arena: Any) -> int:
        mine.call(fn_id, args=args, out=out, arena=arena)
        return 0

    with (
        luaplug.CallArena(4096, host=ref.host_api_address) as ref_arena,
        luaplug.CallArena(4096, host=ours) as our_arena,
    ):
        results = []
        for name, values in CASES:
            a = call(theirs.dispatch, ref_arena, spec, name, *values)
            b = call(mine_dispatch, our_arena, spec, name, *values)
            results.append((name, a))
            assert a == b, name
        assert dict(results)["upper"] == "HéLLO"
        assert dict(results)["ask_peer"] == "counter:5:5:x"
        assert dict(results)["stamp_of"] == api.struct("Stamp").python(mode=1, caps=3, serial=7, weight=0.5)


def test_a_host_call_through_the_generated_caller(ref: ReferenceRuntime, api: typed.ApiSpec) -> None:
    spec = api.contract("shapes.Scanner@1")
    with luaplug.CallArena(4096, host=ref.host_api_address) as arena:
        assert call(ref.contract("shapes.Scanner@1").dispatch, arena, spec, "ask_host", "hello") == "Busy:hello#5"
