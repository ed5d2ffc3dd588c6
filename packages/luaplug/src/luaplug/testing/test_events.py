"""Lifecycle events (Runtime.on_event): phases, order, reasons, and where callbacks run."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import Event, Phase
from luaplug.ids import bundle_id


def phases(events: list[Event]) -> list[tuple[Phase, str]]:
    return [(e.phase, e.bundle_name) for e in events]


def test_reload_and_unload_events(runtime: luaplug.Runtime, bundles: Path) -> None:
    events: list[Event] = []
    assert runtime.on_event(events.append) == events.append
    runtime.load(bundles / "counter")
    assert events == []  # a load sends none
    runtime.reload("counter")
    runtime.unload("counter")
    runtime.unload("counter")  # unknown: a no-op, no event
    assert events == [
        Event(Phase.Preparing, bundle_id("counter"), "counter"),
        Event(Phase.Reloaded, bundle_id("counter"), "counter"),
        Event(Phase.Unloading, bundle_id("counter"), "counter"),
    ]
    assert [int(p) for p in Phase] == [0, 1, 2, 3]


def test_a_failed_reload_reports_the_reason(runtime: luaplug.Runtime, copy_bundle: Any) -> None:
    events: list[Event] = []
    runtime.on_event(events.append)
    d: Path = copy_bundle("counter")
    runtime.load(d)
    (d / "main.lua").write_text("function polyplug_init() error('no way') end", "utf-8")
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.reload("counter")
    assert phases(events) == [(Phase.Preparing, "counter"), (Phase.Failed, "counter")]
    assert events[1].reason == info.value.error and "no way" in (events[1].reason or "")
    (d / "manifest.toml").write_text("name = 3", "utf-8")
    with pytest.raises(luaplug.ManifestError):
        runtime.reload("counter")
    assert phases(events)[2:] == [(Phase.Failed, "counter")]  # refused before Preparing
    assert "name" in (events[2].reason or "")
    assert runtime.contracts() == ["iso.Counter@1"]  # the old version keeps serving


def test_a_raising_callback_is_logged_and_harmless(
    runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    later: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    runtime.on_event(broken)
    runtime.on_event(later.append)
    runtime.load(bundles / "counter")
    with caplog.at_level(logging.ERROR, logger="luaplug.events"):
        runtime.reload("counter")
    assert phases(later) == [(Phase.Preparing, "counter"), (Phase.Reloaded, "counter")]
    assert "subscriber bug" in caplog.text
    assert runtime.off_event(broken) and not runtime.off_event(broken)
    runtime.unload("counter")
    assert len(later) == 3


def test_callbacks_run_after_the_lock_is_released(runtime: luaplug.Runtime, bundles: Path) -> None:
    """Another thread can use the runtime while a callback runs (and so can the callback)."""
    done: list[str] = []

    def on(event: Event) -> None:
        if (event.phase, event.bundle_name) != (Phase.Reloaded, "counter"):
            return
        t = threading.Thread(target=lambda: done.append(runtime.load(bundles / "echo").name))
        t.start()
        t.join(30)
        assert not t.is_alive()
        runtime.reload("echo")  # a callback may start another reload once the first finished
        done.append("reloaded")

    runtime.on_event(on)
    runtime.load(bundles / "counter")
    runtime.reload("counter")
    assert done == ["echo", "reloaded"]


def test_events_during_close(backend: str, bundles: Path) -> None:
    events: list[Event] = []
    with luaplug.Runtime(backend) as rt:
        rt.on_event(events.append)
        rt.load(bundles / "echo")
        rt.load(bundles / "counter")
    assert sorted(phases(events)) == [(Phase.Unloading, "counter"), (Phase.Unloading, "echo")]


def test_live_instance_warnings_go_to_logging(
    runtime: luaplug.Runtime, bundles: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.load(bundles / "counter")
    keep = runtime.contract("iso.Counter@1").create_instance()
    with caplog.at_level(logging.WARNING, logger="luaplug.runtime"):
        runtime.reload("counter")
        runtime.contract("iso.Counter@1").create_instance()
        runtime.unload("counter")
    assert "reloading bundle counter with 1 live instance(s)" in caplog.text
    assert "unloading bundle counter with 1 live instance(s)" in caplog.text
    keep.destroy()
