"""Authoring safety and error texts (issue 19): what a host developer sees when something is wrong."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.cli import main as cli_main
from luaplug.ids import bundle_id

CopyBundle = Callable[..., Path]
CALC = "typed.Calc@1"


def _bundle(root: Path, name: str, main: str, extra: str = "") -> Path:
    d = root / name
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {bundle_id(name)}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n{extra}',
        "utf-8",
    )
    (d / "main.lua").write_text(main, "utf-8")
    return d


_ONE = """
function polyplug_init(_host, _ctx)
  return { ["text.Filter"] = { contract_version = 1, plugin_name = "p",
           factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
"""


def test_a_call_error_raised_to_the_caller_is_not_logged_at_error(
    runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.load(bundles / "typed_calc")
    with runtime.bind(bundles / "typed_calc" / "api.toml") as calc, caplog.at_level(logging.DEBUG, "luaplug"):
        with pytest.raises(luaplug.DispatchError, match="boom"):
            calc.fail("boom")
    failures = [r for r in caplog.records if "Lua function call failed" in r.getMessage()]
    assert failures and all(r.levelno == logging.DEBUG for r in failures)
    # dispatch() reports only a code: the Lua error is logged at ERROR there (spec §6)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "luaplug"):
        code = runtime.contract(CALC).default.dispatch(99)
    assert code != 0


def test_errors_of_a_typed_call_name_the_function(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "typed_calc")
    with runtime.bind(bundles / "typed_calc" / "api.toml") as calc:
        with pytest.raises(luaplug.DispatchError) as info:
            calc.fail("boom")
    err = info.value
    assert err.function == "fail"
    assert str(err).startswith(f"call of {CALC}.fail failed with ")
    assert "function 13" not in str(err)


def test_a_proxy_called_after_close_raises_runtime_closed(backend: str, bundles: Path) -> None:
    rt = luaplug.Runtime(backend)
    rt.load(bundles / "typed_calc")
    owned = rt.bind(bundles / "typed_calc" / "api.toml")
    shared = rt.bind(bundles / "typed_calc" / "api.toml", instance=False)
    inst = rt.contract(CALC).default
    rt.close()
    for proxy in (owned, shared):
        with pytest.raises(luaplug.RuntimeClosedError, match=r"typed\.Calc@1\.add"):
            proxy.add(1, 2)
    with pytest.raises(luaplug.RuntimeClosedError):
        inst.call(0)


def test_closing_a_runtime_with_proxies_does_not_warn(
    backend: str, bundles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "luaplug"), luaplug.Runtime(backend) as rt:
        rt.load(bundles / "typed_calc")
        calc = rt.bind(bundles / "typed_calc" / "api.toml")
        assert calc.add(2, 3) == 5
    assert not [r for r in caplog.records if "state is lost" in r.getMessage()]
    # an instance the host holds itself is still reported
    with caplog.at_level(logging.WARNING, "luaplug"), luaplug.Runtime(backend) as rt:
        rt.load(bundles / "typed_calc")
        kept = rt.contract(CALC).create_instance()
    assert [r for r in caplog.records if "state is lost" in r.getMessage()]
    del kept


def test_a_stale_instance_after_a_reload_says_so(runtime: luaplug.Runtime, copy_bundle: CopyBundle) -> None:
    path = copy_bundle("typed_calc")
    runtime.load(path)
    with runtime.bind(path / "api.toml") as calc:
        runtime.reload("typed_calc")
        with pytest.raises(luaplug.DispatchError) as info:
            calc.add(1, 2)
    err = info.value
    assert err.code == AbiErrorCode.StaleHandle
    assert "'typed_calc' was reloaded" in str(err) and "bind" in str(err)
    assert err.function == "add"


def test_contract_not_found_lists_what_is_loaded(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "typed_calc")
    with pytest.raises(luaplug.ContractNotFoundError, match=r"typed\.Clac@1 \(loaded: .*typed\.Calc@1"):
        runtime.contract("typed.Clac@1")


def test_an_init_error_names_the_bundle_and_its_file(runtime: luaplug.Runtime, tmp_path: Path) -> None:
    d = _bundle(tmp_path, "noinit", "local x = 1\n")
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load(d)
    err = info.value
    assert err.bundle == "noinit" and err.file == "main.lua"
    assert str(err).startswith("bundle 'noinit' (main.lua): ")


def test_unregistered_provides_are_warned_at_load(
    runtime: luaplug.Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = _bundle(tmp_path, "typo", _ONE, 'provides = ["text.Filtr@1"]\n')
    with caplog.at_level(logging.WARNING, "luaplug"):
        runtime.load(d)
    texts = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("provides text.Filtr@1 (did you mean text.Filter@1?)" in t for t in texts), texts


def test_check_strict_fails_on_typos(tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    d = _bundle(tmp_path, "typo", _ONE, 'provides = ["text.Filtr@1"]\nverison = "1"\n')
    (d / "api.toml").write_text(
        '[[guest_contract]]\nname = "text.Filter"\nversion = "1.0.0"\n'
        '[[guest_contract.functions]]\nname = "apply"\nretrun = "i32"\n',
        "utf-8",
    )
    assert cli_main(["check", "--backend", backend, str(d)]) == 0
    out = capsys.readouterr().out
    assert "unknown key `verison` (did you mean `version`?)" in out
    assert "unknown key `guest_contract[0].functions[0].retrun` (did you mean `return`?)" in out
    assert "provides text.Filtr@1 (did you mean text.Filter@1?)" in out
    assert cli_main(["check", "--strict", "--backend", backend, str(d)]) == 1
    assert "3 warning(s) count as errors" in capsys.readouterr().out


def test_single_file_glue_checks_the_impl_at_factory_time(runtime: luaplug.Runtime, copy_bundle: CopyBundle) -> None:
    path = copy_bundle("typed_calc")
    main = path / "main.lua"
    main.write_text(main.read_text("utf-8").replace("function Calc:half(x)", "function Calc:halve(x)"), "utf-8")
    with pytest.raises(luaplug.InitFailed, match=r"typed\.Calc@1: the impl lacks half\(\)"):
        runtime.load(path)


def test_single_file_glue_names_a_result_of_the_wrong_type(runtime: luaplug.Runtime, copy_bundle: CopyBundle) -> None:
    path = copy_bundle("typed_calc")
    main = path / "main.lua"
    text = main.read_text("utf-8").replace('return "hello, " .. name', "return 42")
    main.write_text(
        text.replace("function Calc:add(a, b) return a + b end", 'function Calc:add() return "x" end'), "utf-8"
    )
    runtime.load(path)
    with runtime.bind(path / "api.toml") as calc:
        with pytest.raises(luaplug.DispatchError) as info:
            calc.greet("you")
        assert "typed.Calc@1.greet() must return a string, not a number" in str(info.value)
        assert "alloc_string_arena" not in str(info.value)
        with pytest.raises(luaplug.DispatchError, match=r"add\(\) must return a number, not a string"):
            calc.add(1, 2)


def test_luaplug_new_writes_bundles_that_load(backend: str, tmp_path: Path, bundles: Path) -> None:
    raw = tmp_path / "upper"
    assert cli_main(["new", "upper", "--contract", "text.Filter@1", "--out", str(raw)]) == 0
    typed_dir = tmp_path / "calc"
    api = bundles / "typed_calc" / "api.toml"
    assert cli_main(["new", "calc", "--contract", "typed.Calc@1", "--api", str(api), "--out", str(typed_dir)]) == 0
    with luaplug.Runtime(backend) as rt:
        assert rt.load(raw).manifest.id == bundle_id("upper")
        assert rt.contract("text.Filter@1").plugin_name == "upper"
        rt.load(typed_dir)
        with rt.bind(typed_dir / "api.toml") as calc:
            assert calc.add(2, 3) == 0  # the stubs return their type's default
            assert calc.greet("x") == ""
    assert cli_main(["check", "--strict", "--backend", backend, str(typed_dir)]) == 0
    # files are not overwritten
    assert cli_main(["new", "upper", "--contract", "text.Filter@1", "--out", str(raw)]) == 1


def test_luaplug_new_refuses_an_undeclared_contract(tmp_path: Path, bundles: Path) -> None:
    api = bundles / "typed_calc" / "api.toml"
    code = cli_main(["new", "x", "--contract", "typed.Calc@2", "--api", str(api), "--out", str(tmp_path / "x")])
    assert code == 1
    assert not (tmp_path / "x").exists()


def test_a_disabled_backend_says_so(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    from luaplug.backend import discovery as backends

    monkeypatch.setenv("LUAPLUG_DISABLED_BACKENDS", backend)
    backends.reset()
    try:
        with pytest.raises(luaplug.BackendNotFoundError, match="disabled by LUAPLUG_DISABLED_BACKENDS") as info:
            luaplug.Runtime(backend)
        assert info.value.disabled_by == "LUAPLUG_DISABLED_BACKENDS"
    finally:
        monkeypatch.delenv("LUAPLUG_DISABLED_BACKENDS")
        backends.reset()


def test_call_with_a_bad_enum_word_lists_the_names(
    backend: str, bundles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["call", "--backend", backend, str(bundles / "typed_calc"), "typed.Calc@1", "next_color", "Purple"]
    assert cli_main(args) == 2
    assert "'Purple' is not a Color (valid: Red, Green, Blue" in capsys.readouterr().err


def test_stringview_bytes_are_checked_for_utf8_before_the_call(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "typed_calc")
    with runtime.bind(bundles / "typed_calc" / "api.toml") as calc:
        before = calc.count()
        assert calc.greet("é".encode()) == "hello, é"
        with pytest.raises(ValueError, match=r"greet\(\) argument 'name' \(StringView\): the bytes are not UTF-8"):
            calc.greet(b"\xff\xfe")
        with pytest.raises(ValueError, match="not UTF-8"):
            calc.greet(bytearray(b"ok\xc3"))
        assert calc.count() == before + 1  # the proxy still works


def test_a_duplicate_provide_names_the_contract(runtime: luaplug.Runtime) -> None:
    from luaplug import typed

    spec = typed.contract("host.Store@1", typed.function("size", returns="u32"), version="1.0.0", kind="host")

    class Store:
        def size(self) -> int:
            return 0

    runtime.provide("host.Store@1", Store(), api=spec)
    with pytest.raises(luaplug.DuplicateProvider) as info:
        runtime.provide("host.Store@1", Store(), api=spec)
    text = str(info.value)
    assert "host contract host.Store@1 (id 0x" in text and "by the host (Runtime.provide)" in text
    assert info.value.contract == "host.Store@1"
