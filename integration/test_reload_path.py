"""What a reload reuses and what it postpones (issue 20 point 3), on every backend.

A reload keeps the parsed manifest when its text did not change and postpones the release of
what the new version supersedes to a batch of the epoch collector. These tests check that
neither goes stale: a changed manifest is picked up, the superseded interface outlives every
pin, and events are built for subscribers only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import luaplug
import luaplug.runtime
from luaplug.epoch import Collector
from luaplug.events import Event, Phase

CopyBundle = Callable[..., Path]


def edit(bundle: Path, n: int) -> None:
    """Change the bundle's entry file (a new version to reload)."""
    with (bundle / "main.lua").open("a", encoding="utf-8") as f:
        f.write(f"-- edit {n}\n")


def set_manifest(bundle: Path, base: str, extra: str) -> None:
    (bundle / "manifest.toml").write_text(base + extra, "utf-8")


def test_a_reload_picks_up_a_dependency_its_manifest_gained_or_lost(
    runtime: luaplug.Runtime, bundles: Path, copy_bundle: CopyBundle
) -> None:
    counter = copy_bundle("counter")
    base = (counter / "manifest.toml").read_text("utf-8")
    runtime.load(bundles / "echo")
    runtime.load(counter)
    assert runtime.dependents("echo") == []
    set_manifest(counter, base, '\n[[dependency]]\nkind = "bundle"\nbundle = "echo"\n')
    runtime.reload("counter")
    assert runtime.dependents("echo") == ["counter"]
    edit(counter, 1)  # the manifest unchanged: the dependency stays
    runtime.reload("counter")
    assert runtime.dependents("echo") == ["counter"]
    with pytest.raises(luaplug.DependencyError):
        runtime.unload("echo")
    set_manifest(counter, base, "")
    runtime.reload("counter")
    assert runtime.dependents("echo") == []
    runtime.unload("echo")


def test_a_reload_picks_up_a_changed_provides_list(
    runtime: luaplug.Runtime, copy_bundle: CopyBundle, caplog: pytest.LogCaptureFixture
) -> None:
    counter = copy_bundle("counter")
    text = (counter / "manifest.toml").read_text("utf-8")
    runtime.load(counter)
    assert 'provides = ["iso.Counter@1"]' in text
    (counter / "manifest.toml").write_text(text.replace("iso.Counter@1", "iso.Counter@2"), "utf-8")
    with caplog.at_level("WARNING", logger="luaplug"):
        runtime.reload("counter")
    assert any("provides iso.Counter@2" in r.getMessage() for r in caplog.records)
    assert runtime.bundles["counter"].manifest.provides[0].major == 2


def test_a_superseded_interface_is_released_with_a_batch_after_every_pin(backend: str, copy_bundle: CopyBundle) -> None:
    collector = Collector()
    rt = luaplug.Runtime(backend, hot_reload=True, collector=collector, config=False)
    try:
        adder = copy_bundle("adder")
        b = rt.load(adder)
        (old,) = rt.registry.of_bundle(b.id)
        assert old.keepalive
        edit(adder, 1)
        rt.reload(b)
        (new,) = rt.registry.of_bundle(b.id)
        assert new is not old
        # Off the reload path: the superseded registration waits for a batch, not for a pin.
        assert old.keepalive and collector.pending > 0
        guard = collector.pin()
        collector.collect()
        assert old.keepalive  # a pinned reader may still use the old interface
        guard.release()
        collector.collect()
        assert old.keepalive == [] and collector.pending == 0
        assert new.keepalive
        rt.contract("iso.Adder@1").default.call(1)  # the new version serves (raises otherwise)
    finally:
        rt.close()


def test_events_are_built_for_subscribers_only(
    runtime: luaplug.Runtime, copy_bundle: CopyBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Event] = []

    def counting(*args: Any) -> Event:
        event = Event(*args)
        built.append(event)
        return event

    monkeypatch.setattr(luaplug.runtime, "Event", counting)
    adder = copy_bundle("adder")
    runtime.load(adder)
    edit(adder, 1)
    runtime.reload("adder")
    runtime.unload("adder")
    assert built == []
    seen: list[Event] = []
    runtime.on_event(seen.append)
    runtime.load(adder)
    edit(adder, 2)
    runtime.reload("adder")
    runtime.unload("adder")
    assert [e.phase for e in seen] == [Phase.Preparing, Phase.Reloaded, Phase.Unloading]
    assert seen == built
