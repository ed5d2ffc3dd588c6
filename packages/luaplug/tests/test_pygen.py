"""``luaplug codegen API --lang python``: the typed module (Protocols, IntEnums, dataclasses, bind helpers)."""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import luaplug
from luaplug import typed
from luaplug.cli import main as cli_main
from luaplug.errors import ApiSpecError
from luaplug.typed.pygen import generate_python, write_python

API = """
[[enum]]
name = "Mode"
repr = "u8"
bitflag = true
variants = [{ name = "A", value = 1 }, { name = "B", value = 2 }]

[[enum]]
name = "Color"
repr = "i32"
docs = "A colour."
variants = [{ name = "Red", value = 1 }, { name = "Green", value = 2 }]

[[types]]
name = "Point"
fields = [{ name = "x", type = "i32" }, { name = "y", type = "f64" }]

[[types]]
name = "Box"
fields = [{ name = "lo", type = "Point" }, { name = "label", type = "StringView" }, { name = "mode", type = "Mode" }]

[[guest_contract]]
name = "text.Filter"
version = "1.2.0"
docs = "Filters text."

[[guest_contract.functions]]
name = "apply"
params = [{ name = "text", type = "StringView" }]
return = "StringView"

[[guest_contract.functions]]
name = "reset"

[[guest_contract.functions]]
name = "stats"
params = [{ name = "flag", type = "bool" }, { name = "scale", type = "f32" }, { name = "color", type = "Color" }]
return = "u64"

[[guest_contract.functions]]
name = "grow"
params = [{ name = "b", type = "Box" }, { name = "by", type = "i32" }]
return = "Box"

[[guest_contract.functions]]
name = "blob"
params = [{ name = "data", type = "Buffer" }]
return = "Buffer"

[[guest_contract.functions]]
name = "pick"
return = "Color"

[[guest_contract.functions]]
name = "describe_everything_at_length"
params = [
    { name = "first_text", type = "StringView" },
    { name = "second_text", type = "StringView" },
    { name = "the_color", type = "Color" },
    { name = "a_box_of_things", type = "Box" },
]
return = "StringView"
"""


@pytest.fixture
def api_file(tmp_path: Path) -> Path:
    path = tmp_path / "api.toml"
    path.write_text(API, encoding="utf-8")
    return path


def _import(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.fixture
def generated(api_file: Path, tmp_path: Path) -> types.ModuleType:
    return _import(write_python(typed.load_api(api_file), tmp_path / "out"), "lp_generated_contracts")


def _annotations(fn: object) -> dict[str, str]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    found = {name: str(p.annotation) for name, p in sig.parameters.items() if name != "self"}
    found["return"] = str(sig.return_annotation)
    return found


def test_the_protocol_annotates_what_the_proxy_takes_and_returns(generated: types.ModuleType) -> None:
    proto = generated.TextFilter
    assert proto._is_protocol
    sv_in = "str | bytes | bytearray | memoryview"
    assert _annotations(proto.apply) == {"text": sv_in, "return": "str"}
    assert _annotations(proto.reset) == {"return": "None"}
    assert _annotations(proto.stats) == {"flag": "bool", "scale": "float", "color": "int", "return": "int"}
    assert _annotations(proto.grow) == {"b": "Box | Mapping[str, object]", "by": "int", "return": "Box"}
    assert _annotations(proto.blob) == {"data": sv_in, "return": "bytes"}
    assert _annotations(proto.pick) == {"return": "Color | int"}
    assert _annotations(proto.close) == {"return": "None"}
    long = _annotations(proto.describe_everything_at_length)
    assert list(long) == ["first_text", "second_text", "the_color", "a_box_of_things", "return"]
    assert "Filters text." in (proto.__doc__ or "")


def test_enums_and_structs_are_classes_of_the_module(generated: types.ModuleType) -> None:
    assert issubclass(generated.Color, enum.IntEnum)
    assert [(m.name, m.value) for m in generated.Color] == [("Red", 1), ("Green", 2)]
    assert [(m.name, m.value) for m in generated.Mode] == [("A", 1), ("B", 2)]
    assert generated.Color.__doc__ == "A colour."
    box = generated.Box(generated.Point(1, 2.0), "x", generated.Mode.A)
    assert [f.name for f in dataclasses.fields(box)] == ["lo", "label", "mode"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.label = "y"  # type: ignore[misc]


def test_the_embedded_declaration_matches_the_api_toml_and_uses_the_module_classes(
    generated: types.ModuleType, api_file: Path
) -> None:
    declared = typed.load_api(api_file).contract("text.Filter@1")
    spec = generated.TEXT_FILTER
    assert (spec.key, spec.version) == ("text.Filter@1", "1.2.0")
    assert [fn.signature() for fn in spec.functions] == [fn.signature() for fn in declared.functions]
    _, stats = spec.function_named("stats")
    assert stats.params[2].type.python is generated.Color
    _, grow = spec.function_named("grow")
    box = grow.returns
    assert box.python is generated.Box
    assert box.fields[0].type.python is generated.Point
    assert box.fields[2].type.python is generated.Mode and box.fields[2].type.bitflag
    assert [f.type.cdecl for f in box.fields] == [
        f.type.cdecl for f in declared.function_named("grow")[1].returns.fields
    ]


def test_bind_helper_calls_runtime_bind_with_the_declaration(generated: types.ModuleType) -> None:
    calls: list[tuple[object, ...]] = []

    class FakeRuntime:
        def bind(self, api: object, contract: object = None, *, instance: bool = True, bundle: object = None) -> str:
            calls.append((api, contract, instance, bundle))
            return "proxy"

    assert generated.bind_text_filter(FakeRuntime(), instance=False, bundle="b") == "proxy"
    assert calls == [(generated.TEXT_FILTER, None, False, "b")]
    assert generated.__all__ == ["TEXT_FILTER", "Box", "Color", "Mode", "Point", "TextFilter", "bind_text_filter"]


def test_the_output_is_deterministic_and_names_no_path(api_file: Path, tmp_path: Path) -> None:
    first = generate_python(typed.load_api(api_file))
    assert first == generate_python(typed.load_api(api_file))
    assert str(tmp_path) not in first
    assert all(len(line) <= 120 for line in first.splitlines())


def test_host_contracts_get_no_binding() -> None:
    host = typed.contract("host.Store@1", typed.function("get", [("k", "StringView")], "StringView"), kind="host")
    text = generate_python(typed.api(host))
    assert "class " not in text and "bind_" not in text
    compile(text, "<generated>", "exec")


def test_two_majors_of_one_contract_get_distinct_names() -> None:
    v1 = typed.contract("a.B@1", typed.function("f", returns="i32"))
    v2 = typed.contract("a.B@2", typed.function("f", returns="bool"))
    text = generate_python(typed.api(v1, v2))
    assert "class ABV1(Protocol):" in text and "class ABV2(Protocol):" in text
    assert "def bind_a_b_v1(" in text and "def bind_a_b_v2(" in text


def test_a_python_name_clash_is_an_api_spec_error() -> None:
    color = typed.enum("TextFilter", "u8", {"X": 0})
    c = typed.contract("text.Filter@1", typed.function("f", [("c", color)]))
    with pytest.raises(ApiSpecError, match="TextFilter"):
        generate_python(typed.api(c, enums=[color]))


def test_cli_writes_contracts_py(api_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gen"
    assert cli_main(["codegen", str(api_file), "--lang", "python", "--out", str(out)]) == 0
    written = out / "contracts.py"
    assert f"wrote {written}" in capsys.readouterr().out
    assert written.read_text("utf-8") == generate_python(typed.load_api(api_file))


@pytest.mark.parametrize("extra", [["--plugin", "p"], ["--contract", "text.Filter@1"]])
def test_cli_python_takes_an_api_toml_alone(api_file: Path, tmp_path: Path, extra: list[str]) -> None:
    assert cli_main(["codegen", str(api_file), "--lang", "python", "--out", str(tmp_path), *extra]) == 2
    assert not (tmp_path / "contracts.py").exists()


def test_cli_rejects_an_unknown_lang(api_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["codegen", str(api_file), "--lang", "rust", "--out", str(tmp_path)]) == 2
    assert "lua, python" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_the_module_is_ruff_clean(api_file: Path, tmp_path: Path) -> None:
    path = write_python(typed.load_api(api_file), tmp_path)
    ruff = shutil.which("ruff")
    assert ruff is not None
    done = subprocess.run(
        [ruff, "check", "--isolated", "--line-length", "120", "--select", "E,F,W,I,UP,B,RUF", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [ruff, "format", "--check", "--diff", "--isolated", "--line-length", "120", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- mypy sees the types ---------------------------------------------------------------

_WRONG = """\
from luaplug import Runtime

from contracts import bind_text_filter


def use(rt: Runtime) -> None:
    p = bind_text_filter(rt)
    x: int = p.apply("s")
    p.aplly()
    print(x)
"""

_RIGHT = """\
from luaplug import Runtime

from contracts import Box, Color, Point, bind_text_filter


def use(rt: Runtime) -> None:
    p = bind_text_filter(rt, instance=False)
    x: str = p.apply("s")
    y: str = p.apply(b"s")
    n: int = p.stats(True, 2, Color.Red)
    b: Box = p.grow(Box(Point(1, 2.0), "l", 3), 1)
    b2: Box = p.grow({"lo": {"x": 1, "y": 2.0}, "label": "l", "mode": 1}, 1)
    c = p.pick()
    data: bytes = p.blob(bytearray(b"z"))
    p.reset()
    p.close()
    print(x, y, n, b, b2, c == Color.Red, data)
"""


def _mypy(tmp_path: Path, api_file: Path, script: str) -> subprocess.CompletedProcess[str]:
    write_python(typed.load_api(api_file), tmp_path)
    (tmp_path / "user.py").write_text(script, encoding="utf-8")
    luaplug_src = Path(luaplug.__file__).resolve().parent.parent
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(luaplug_src), str(tmp_path)])}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            "user.py",
            "contracts.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_strict_reports_both_mistakes(tmp_path: Path, api_file: Path) -> None:
    done = _mypy(tmp_path, api_file, _WRONG)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert (
        'user.py:8: error: Incompatible types in assignment (expression has type "str", variable has type "int")' in out
    )
    assert 'user.py:9: error: "TextFilter" has no attribute "aplly"' in out
    assert "Found 2 errors in 1 file" in out


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_strict_passes_correct_use_and_the_module(tmp_path: Path, api_file: Path) -> None:
    done = _mypy(tmp_path, api_file, _RIGHT)
    assert done.returncode == 0, done.stdout + done.stderr
