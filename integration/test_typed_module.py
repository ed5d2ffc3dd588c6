"""The typed Python module of ``luaplug codegen API --lang python``, bound and called on each backend."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

import luaplug
from luaplug.cli import main as cli_main

BUNDLE = "typed_calc"


@pytest.fixture
def module(bundles: Path, tmp_path: Path) -> types.ModuleType:
    code = cli_main(["codegen", str(bundles / BUNDLE / "api.toml"), "--lang", "python", "--out", str(tmp_path)])
    assert code == 0
    spec = importlib.util.spec_from_file_location("lp_typed_calc_contracts", tmp_path / "contracts.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    return mod


def test_the_bind_helper_returns_a_working_proxy(
    runtime: luaplug.Runtime, bundles: Path, module: types.ModuleType
) -> None:
    runtime.load(bundles / BUNDLE)
    calc = module.bind_typed_calc(runtime)
    assert isinstance(calc, luaplug.typed.TypedProxy)
    assert calc.add(2, 3) == 5
    assert calc.greet("world") == "hello, world"
    assert calc.greet(b"bytes") == "hello, bytes"
    assert calc.noop() is None
    assert calc.scale(1.5, 2) == 3.0
    assert calc.both(True, False) is False
    Color = module.Color
    # enum results are members of the generated class (the declaration is built on it)
    result = calc.next_color(Color.Red)
    assert result is Color.Green
    assert calc.next_color(2) is Color.Blue
    assert calc.describe("t", 7, True, Color.Blue) == "t:7:true:4"
    with pytest.raises(ValueError, match="not a Color value"):
        calc.next_color(3)
    assert [calc.count(), calc.count()] == [1, 2]  # an instance of its own
    calc.close()
    with pytest.raises(ValueError, match="closed"):
        calc.add(1, 1)


def test_the_bind_helper_passes_instance_and_bundle(
    runtime: luaplug.Runtime, bundles: Path, module: types.ModuleType
) -> None:
    runtime.load(bundles / BUNDLE)
    with runtime.bind(module.TYPED_CALC, instance=False) as plain:
        plain.count()
    shared = module.bind_typed_calc(runtime, instance=False, bundle=BUNDLE)
    assert shared.count() == 2  # the default impl, shared with the plain bind above
    with pytest.raises(luaplug.ContractNotFoundError):
        module.bind_typed_calc(runtime, bundle="no_such_bundle")
