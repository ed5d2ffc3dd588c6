"""The ``luaplug`` command: subcommands, exit codes (0 ok, 1 failure, 2 usage), one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import luaplug
from luaplug.cli import main
from luaplug.testing import BUNDLES_DIR

BUNDLES = BUNDLES_DIR
TYPED = BUNDLES / "typed_calc"
needs_bundles = pytest.mark.skipif(not TYPED.is_dir(), reason="needs the conformance kit's bundles (luaplug.testing)")


@pytest.fixture
def backend() -> str:
    names = luaplug.available_backends()
    if not names:
        pytest.skip("no luaplug backend is available")
    return names[0]


@pytest.fixture(autouse=True)
def _no_host_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LUAPLUG_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)  # no luaplug.toml / [tool.luaplug] up from here


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "bogus")[0] == 2
    assert run(capsys)[0] == 2
    assert run(capsys, "codegen", "api.toml")[0] == 2  # --plugin and --out are required
    assert main(["--help"]) == 0


def test_backends_lists_versions(capsys: pytest.CaptureFixture[str], backend: str) -> None:
    code, out, _ = run(capsys, "backends")
    assert code == 0
    for name in luaplug.available_backends():
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "available" in line and "LuaJIT" in line
    code, out, _ = run(capsys, "backends", "--backend", backend)
    assert code == 0 and len(out.splitlines()) == 1
    code, _, err = run(capsys, "backends", "--backend", "no-such")
    assert code == 1 and err.startswith("luaplug: no luaplug backend named 'no-such'")


@needs_bundles
def test_inspect(capsys: pytest.CaptureFixture[str], backend: str) -> None:
    code, out, _ = run(capsys, "inspect", str(TYPED), "--backend", backend)
    assert code == 0
    assert "bundle    typed_calc" in out
    assert f"backend   {backend}  LuaJIT" in out
    assert "contract  typed.Calc@1  plugin typed_calc  functions 13" in out
    assert "0  add(a: i32, b: i32) -> i32" in out
    code, out, _ = run(capsys, "--backend", backend, "inspect", str(BUNDLES / "adder"))
    assert code == 0 and "contract  iso.Adder@1  plugin main.lua  functions 3" in out
    assert "provides  iso.Adder@1" in out


@needs_bundles
def test_call(capsys: pytest.CaptureFixture[str], backend: str) -> None:
    b = ["--backend", backend]
    assert run(capsys, "call", str(TYPED), "typed.Calc@1", "add", "2", "3", *b)[:2] == (0, "5\n")
    assert run(capsys, "call", str(TYPED), "typed.Calc", "greet", "you", *b)[1] == "hello, you\n"
    assert run(capsys, "call", str(TYPED), "typed.Calc", "both", "true", "yes", *b)[1] == "true\n"
    assert run(capsys, "call", str(TYPED), "typed.Calc", "next_color", "Red", *b)[1] == "Green (2)\n"
    assert run(capsys, "call", str(TYPED), "typed.Calc", "widen", "0x10", "1", "1", *b)[1] == "18\n"
    assert run(capsys, "call", str(TYPED), "typed.Calc", "noop", *b)[:2] == (0, "")
    api = str(TYPED / "api.toml")
    assert run(capsys, "call", str(TYPED / "main.lua"), "typed.Calc", "count", "--api", api, *b)[1] == "1\n"


@needs_bundles
def test_call_failures(capsys: pytest.CaptureFixture[str], backend: str) -> None:
    b = ["--backend", backend]
    code, out, err = run(capsys, "call", str(TYPED), "typed.Calc", "fail", "kaboom", *b)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "kaboom" in err and "(-v for details)" in err
    code, _, err = run(capsys, "-v", "call", str(TYPED), "typed.Calc", "fail", "kaboom", *b)
    assert code == 1 and "Traceback" in err and "stack traceback" in err
    for argv, words in [
        (["add", "2"], "takes 2 argument(s), 1 given"),
        (["add", "2", "x"], "argument b (i32)"),
        (["add", "2", str(2**40)], "does not fit"),
        (["nope"], "has no function 'nope'"),
    ]:
        code, _, err = run(capsys, "call", str(TYPED), "typed.Calc", *argv, *b)
        assert code == 2, argv
        assert words in err
    code, _, err = run(capsys, "call", str(BUNDLES / "adder"), "iso.Adder", "add", *b)
    assert code == 2 and "no --api given" in err
    code, _, err = run(capsys, "call", str(TYPED), "typed.Other", "f", *b)
    assert code == 1 and "no contract 'typed.Other'" in err


@needs_bundles
def test_check(capsys: pytest.CaptureFixture[str], backend: str) -> None:
    code, out, _ = run(capsys, "check", str(TYPED))
    assert code == 0
    names = luaplug.available_backends()
    for name in names:
        assert f"{name:8s} loaded typed_calc: typed.Calc@1 (13 functions)" in out
    assert ("same on " if len(names) > 1 else "ok on ") in out
    code, out, _ = run(capsys, "check", str(BUNDLES / "broken_syntax"), "--backend", backend)
    assert code == 1 and "load failed" in out


@needs_bundles
def test_codegen(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "glue"
    code, out, _ = run(
        capsys, "codegen", str(TYPED / "api.toml"), "--lang", "lua", "--plugin", "typed_calc", "--out", str(out_dir)
    )
    assert code == 0 and out.strip() == f"wrote {out_dir / 'contracts.lua'}"
    assert (out_dir / "contracts.lua").read_text("utf-8") == (TYPED / "contracts.lua").read_text("utf-8")
    code, _, err = run(capsys, "codegen", str(TYPED / "api.toml"), "--lang", "c", "--plugin", "p", "--out", "x")
    assert code == 2 and "unsupported --lang" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[[guest_contract]]\nname = 'x'\n", "utf-8")
    code, _, err = run(capsys, "codegen", str(bad), "--plugin", "p", "--out", str(out_dir))
    assert code == 1 and "key guest_contract[0].version" in err


@needs_bundles
def test_config_option(capsys: pytest.CaptureFixture[str], tmp_path: Path, backend: str) -> None:
    cfg = tmp_path / "custom.toml"
    cfg.write_text('backend = "no-such"\n', "utf-8")
    code, _, err = run(capsys, "--config", str(cfg), "inspect", str(TYPED))
    assert code == 1 and "no luaplug backend named 'no-such'" in err
    cfg.write_text("bogus = 1\n", "utf-8")
    code, _, err = run(capsys, "inspect", str(TYPED), "--config", str(cfg))
    assert code == 1 and "key bogus" in err


def test_demo(capsys: pytest.CaptureFixture[str], backend: str) -> None:
    code, out, _ = run(capsys, "demo", "--backend", backend)
    assert code == 0 and "demo.Counter inc x3 -> 3" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from luaplug._version import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"luaplug {__version__}"


@pytest.mark.parametrize("command", ["backends", "demo", "new", "inspect", "call", "check", "codegen"])
def test_every_command_has_help_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"examples:\n  luaplug {command}" in out
    if command in ("inspect", "call", "check"):
        assert "BUNDLE  " in out and "directory (holding manifest.toml)" in out
    if command == "call":
        assert "the function's name as the api.toml declares it" in out


def test_check_reports_an_invalid_api_toml_without_failing_the_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not luaplug.available_backends():
        pytest.skip("no backend available")
    bundle = tmp_path / "upper"
    assert main(["new", "upper", "--contract", "text.Filter@1", "--out", str(bundle)]) == 0
    (bundle / "api.toml").write_text("[[guest_contract]]\nname = 1\n", "utf-8")
    backend = luaplug.available_backends()[0]
    assert main(["check", "--backend", backend, str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "warning  invalid api.toml: " in out and f"{backend:8s} loaded upper: text.Filter@1" in out
    assert main(["check", "--strict", "--backend", backend, str(bundle)]) == 1
