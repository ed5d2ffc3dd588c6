"""[[dependency]], bundle_dependencies and needs_reinit_on_dep_reload (runtime-semantics "Dependencies")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.abi import core_ffi as ffi
from luaplug.events import Event, Phase


def bits(rt: luaplug.Runtime, fn_id: int) -> int:
    out = ffi.new("uint32_t*")
    rt.contract("svc.DepUser@1").default.call(fn_id, 0, out)
    return int(out[0])


def test_undeclared_lookups_during_init_get_the_null_handle(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "counter")
    runtime.load(bundles / "depuser")
    assert bits(runtime, 0) == 1  # iso.Echo@1 (declared) found, iso.Counter@1 (undeclared) not
    assert bits(runtime, 1) == 3  # outside init nothing is restricted


def test_a_declared_dependency_that_is_missing_is_not_an_error(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "depuser")
    assert bits(runtime, 0) == 0


def test_unloading_a_provider_with_dependents_is_refused(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "depuser")
    with pytest.raises(luaplug.DependencyError) as info:
        runtime.unload("echo")
    assert str(info.value) == (
        'cannot unload bundle `echo`: still-loaded bundles declared a dependency on it: ["depuser"]'
    )
    assert info.value.dependents == ["depuser"]
    assert runtime.contracts() == ["iso.Echo@1", "svc.DepUser@1"]
    assert runtime.dependents("echo") == ["depuser"]
    runtime.unload("depuser")
    runtime.unload("echo")
    assert runtime.contracts() == []


def test_bundle_dependencies_and_bundle_kind(runtime: luaplug.Runtime, bundles: Path, copy_bundle: Any) -> None:
    one: Path = copy_bundle("counter", "counter-by-name")
    manifest = one / "manifest.toml"
    text = manifest.read_text("utf-8")
    manifest.write_text(text.replace('version = "1.0.0"', 'version = "1.0.0"\nbundle_dependencies = ["echo@1.0.0"]'))
    runtime.load(bundles / "echo")
    runtime.load(one)
    with pytest.raises(luaplug.DependencyError, match=r'\["counter"\]'):
        runtime.unload("echo")
    runtime.unload("counter")
    two: Path = copy_bundle("counter", "counter-by-table")
    (two / "manifest.toml").write_text(text + '\n[[dependency]]\nkind = "bundle"\nbundle = "echo"\n', "utf-8")
    runtime.load(two)
    assert runtime.dependents("echo") == ["counter"]


def test_a_second_provider_lifts_the_refusal(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "echo_alt")
    runtime.load(bundles / "depuser")
    runtime.unload("echo")  # echo_alt still provides iso.Echo@1
    with pytest.raises(luaplug.DependencyError):
        runtime.unload("echo_alt")


def test_dependents_are_reloaded_after_their_provider(runtime: luaplug.Runtime, bundles: Path) -> None:
    events: list[Event] = []
    runtime.on_event(events.append)
    runtime.load(bundles / "echo")
    runtime.load(bundles / "consumer")  # no dependency declared: not reloaded
    runtime.load(bundles / "depuser")
    user = runtime.contract("svc.DepUser@1").create_instance()
    runtime.reload("echo")
    assert [(e.phase, e.bundle_name) for e in events] == [
        (Phase.Preparing, "echo"),
        (Phase.Preparing, "depuser"),
        (Phase.Reloaded, "depuser"),
        (Phase.Reloaded, "echo"),
    ]
    assert user.dispatch(0) == luaplug.AbiErrorCode.StaleHandle  # depuser's VM was replaced
    assert bits(runtime, 0) == 1


def test_a_failing_dependent_is_logged_not_raised(
    runtime: luaplug.Runtime, bundles: Path, copy_bundle: Any, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Event] = []
    runtime.on_event(events.append)
    d: Path = copy_bundle("depuser")
    runtime.load(bundles / "echo")
    runtime.load(d)
    (d / "main.lua").write_text("syntax error here", "utf-8")
    runtime.reload("echo")
    assert [(e.phase, e.bundle_name) for e in events] == [
        (Phase.Preparing, "echo"),
        (Phase.Preparing, "depuser"),
        (Phase.Failed, "depuser"),
        (Phase.Reloaded, "echo"),
    ]
    assert events[2].reason and "main.lua" in events[2].reason
    assert "reloading depuser after echo failed" in caplog.text
    assert bits(runtime, 0) == 1  # the old depuser keeps serving


def test_close_unloads_bundles_with_dependents(backend: str, bundles: Path) -> None:
    rt = luaplug.Runtime(backend)
    rt.load(bundles / "echo")
    rt.load(bundles / "depuser")
    rt.close()
    assert rt.bundles == {}


def test_contract_id_is_optional(runtime: luaplug.Runtime, bundles: Path, copy_bundle: Any) -> None:
    d: Path = copy_bundle("depuser")
    manifest = d / "manifest.toml"
    manifest.write_text("".join(x for x in manifest.read_text("utf-8").splitlines(True) if "contract_id" not in x))
    runtime.load(bundles / "echo")
    runtime.load(bundles / "counter")
    runtime.load(d)
    assert bits(runtime, 0) == 1
    with pytest.raises(luaplug.DependencyError):
        runtime.unload("echo")
