"""Backend discovery through pluggy entry points, tested with fake distributions: metadata
directories on a ``sys.path`` of their own, read through ``importlib.metadata``."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import luaplug
import luaplug.runtime
from luaplug import BackendNotFoundError, BackendUnavailableError, CapabilityError
from luaplug.backend import CAP_MEMORY_LIMIT, DEFAULT_OPTIONS, Engine, EngineState, StateOptions, hookimpl
from luaplug.backend import discovery as backends


class FakeEngine(Engine):
    name = "fake"

    def new_state(self, *, host_address: int, bundle: str) -> EngineState:
        raise NotImplementedError

    def lua_version(self) -> str:
        return "fake 1.0"


class BrokenEngine(FakeEngine):
    @staticmethod
    def unavailable_reason() -> str | None:
        return "libfake.so not found"


def _plugin(name: str, engine: str, priority: int) -> types.ModuleType:
    mod = types.ModuleType(f"fake_plugin_{name}")

    @hookimpl
    def luaplug_register_backends(register: backends.BackendRegistry) -> None:
        register.add(backends.BackendInfo(name=name, engine=engine, priority=priority, install_hint=f"install {name}"))

    mod.luaplug_register_backends = luaplug_register_backends  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def fake_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    mods = {
        "fake_plugin_good": _plugin("good", f"{__name__}:FakeEngine", 5),
        "fake_plugin_better": _plugin("better", f"{__name__}:FakeEngine", 9),
        "fake_plugin_broken": _plugin("broken", f"{__name__}:BrokenEngine", 99),
        "fake_plugin_missing": _plugin("missing", "no_such_module_xyz:Engine", 50),
    }
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    info = tmp_path / "fake_dist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-dist\nVersion: 1.0\n", "utf-8")
    lines = "".join(f"{m.split('_')[-1]} = {m}\n" for m in mods)
    (info / "entry_points.txt").write_text(f"[luaplug]\n{lines}", "utf-8")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # the plugin modules are in sys.modules
    monkeypatch.delenv("LUAPLUG_BACKEND", raising=False)
    monkeypatch.delenv("LUAPLUG_DISABLED_BACKENDS", raising=False)
    backends.reset()
    yield
    backends.reset()


def test_discovers_without_importing_engines(fake_world: None) -> None:
    found = backends.installed_backends()
    assert set(found) == {"good", "better", "broken", "missing"}
    assert not any(b._probed for b in found.values())


def test_available_best_first(fake_world: None) -> None:
    assert backends.available_backends() == ["better", "good"]
    assert backends.installed_backends()["broken"].probe() == "libfake.so not found"
    assert "no_such_module_xyz" in (backends.installed_backends()["missing"].probe() or "")


def test_selection_order(fake_world: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert backends.select_backend().name == "better"
    assert backends.select_backend(configured="good").name == "good"
    monkeypatch.setenv("LUAPLUG_BACKEND", "good")
    assert backends.select_backend().name == "good"
    assert backends.select_backend("better").name == "better"


def test_unknown_name_lists_installed(fake_world: None) -> None:
    with pytest.raises(BackendNotFoundError) as info:
        backends.select_backend("nope")
    assert "better, broken, good, missing" in str(info.value)


def test_unavailable_backend_has_reason_and_hint(fake_world: None) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        backends.select_backend("broken")
    assert info.value.reason == "libfake.so not found" and "install broken" in str(info.value)


def test_disabled_backends_are_never_loaded(fake_world: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUAPLUG_DISABLED_BACKENDS", "better, broken")
    backends.reset()
    assert set(backends.installed_backends()) == {"good", "missing"}
    assert backends.select_backend().name == "good"
    with pytest.raises(BackendNotFoundError):
        backends.select_backend("better")


class _Asked(Exception):
    """Raised by an engine asked for a state: the load got as far as the engine."""


class UncappedEngine(FakeEngine):
    def new_state(self, *, host_address: int, bundle: str, options: StateOptions = DEFAULT_OPTIONS) -> EngineState:
        raise _Asked(options)


class CappedEngine(UncappedEngine):
    capabilities = frozenset({CAP_MEMORY_LIMIT})


@pytest.mark.parametrize("engine", ["UncappedEngine", "CappedEngine"])
def test_a_memory_cap_needs_the_capability(monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    info = backends.BackendInfo(name="fake", engine=f"{__name__}:{engine}")
    monkeypatch.setattr(luaplug.runtime, "select_backend", lambda name=None, configured=None: info)
    with luaplug.Runtime("fake") as rt:
        with pytest.raises(_Asked):  # no cap: the engine makes the state, whatever it can do
            rt.load_code("x = 1", "free")
        if engine == "CappedEngine":
            with pytest.raises(_Asked) as asked:
                rt.load_code("x = 1", "capped", memory_limit=1 << 20)
            assert asked.value.args[0].memory_limit == 1 << 20
            return
        # A cap the engine cannot apply: refused before the engine is asked; nothing registered.
        with pytest.raises(CapabilityError) as info_:
            rt.load_code("x = 1", "capped", memory_limit=1 << 20)
        assert (info_.value.backend, info_.value.capability) == ("fake", CAP_MEMORY_LIMIT)
        assert str(info_.value) == (
            "memory_limit needs capability 'memory_limit', which luaplug backend 'fake' lacks "
            "(see Runtime.capabilities; load on a backend that has it, or without the option)"
        )
        assert rt.bundles == {} and rt.contracts() == []
    with luaplug.Runtime("fake", memory_limit=1 << 20) as rt, pytest.raises(CapabilityError):
        rt.load_code("x = 1", "capped-by-default")
