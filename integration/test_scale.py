"""Many bundles in one runtime, many reloads of one (issue 20): what unload, close and reload
leave behind, and that they touch only the bundles concerned.

Counts, never the clock: every VM a runtime created is closed exactly once, no registration,
keepalive or deferred reclamation is left, and unloading a bundle asks no unrelated bundle
whether it depends on it. The 10,000-reload case runs with ``LUAPLUG_SLOW_TESTS=1`` (some
seconds per backend); the default run reloads 1,000 times.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import luaplug
import luaplug.runtime
from luaplug.backend import EngineState
from luaplug.epoch import RETIRE_BATCH, Collector

TINY = """
function polyplug_init(_host, _ctx)
  local c = {{ factory = function() return {{}} end, functions = {{ [0] = function() end }} }}
  return {{ ["scale.C{i}"] = c }}, {{ code = 0 }}
end
"""


class VmCount:
    """Counts the VMs a runtime's engine creates and how often each is closed."""

    def __init__(self, rt: luaplug.Runtime) -> None:
        #: every VM created (weakly: the count must not keep one alive)
        self.states: list[weakref.ref[EngineState]] = []
        self.closes: dict[int, int] = {}
        #: VMs created and not closed yet
        self.open = 0
        engine = rt.loader.engine
        make = engine.new_state

        def new_state(**kwargs: Any) -> EngineState:
            state = make(**kwargs)
            ref = weakref.ref(state)
            self.states.append(ref)
            key = len(self.states)
            self.closes[key] = 0
            self.open += 1

            def counted_close() -> None:
                self.closes[key] += 1
                if self.closes[key] == 1:
                    self.open -= 1
                s = ref()
                assert s is not None
                type(s).close(s)

            state.close = counted_close  # type: ignore[method-assign]
            return state

        engine.new_state = new_state  # type: ignore[method-assign]

    def closed_once(self) -> bool:
        return all(n == 1 for n in self.closes.values())


def load_tiny(rt: luaplug.Runtime, count: int) -> list[luaplug.Bundle]:
    return [rt.load_code(TINY.format(i=i), f"tiny{i}") for i in range(count)]


def assert_nothing_left(rt: luaplug.Runtime, regs: list[Any]) -> None:
    assert rt.loader.live_states == 0
    assert rt.registry.providers() == []
    assert rt.registry._by_cid == {} and rt.registry._by_bundle == {}
    assert rt._dep_index._by_target == {}
    assert all(r.keepalive == [] for r in regs)
    assert rt.collector.pending == 0


@pytest.mark.parametrize("how", ["close", "unload"])
def test_close_and_unload_reclaim_every_vm_and_registration(backend: str, how: str) -> None:
    rt = luaplug.Runtime(backend, collector=Collector())
    vms = VmCount(rt)
    bundles = load_tiny(rt, 3 * RETIRE_BATCH + 5)
    regs = rt.registry.providers()
    assert len(regs) == len(bundles) and vms.open == len(bundles)
    if how == "unload":
        for b in reversed(bundles):
            rt.unload(b)
        assert vms.open == 0  # unload closes at once (no call is in flight)
    rt.close()
    assert vms.open == 0 and vms.closed_once()
    assert len(vms.states) == len(bundles)
    assert_nothing_left(rt, regs)


def test_unload_asks_only_bundles_that_name_it(backend: str, monkeypatch: pytest.MonkeyPatch, bundles: Path) -> None:
    """Finding dependents walks the dependency index, not every loaded bundle."""
    calls: list[str] = []
    real: Callable[..., bool] = luaplug.runtime.depends_on

    def counting(m: Any, *args: Any) -> bool:
        calls.append(m.name)
        return real(m, *args)

    monkeypatch.setattr(luaplug.runtime, "depends_on", counting)
    with luaplug.Runtime(backend) as rt:
        load_tiny(rt, 40)
        rt.load(bundles / "echo")
        rt.load(bundles / "depuser")  # a contract dependency on echo's iso.Echo@1
        calls.clear()
        assert rt.dependents("tiny7") == []
        rt.unload("tiny7")
        assert calls == []
        assert rt.dependents("echo") == ["depuser"]
        assert set(calls) == {"depuser"}
        with pytest.raises(luaplug.DependencyError):
            rt.unload("echo")
        rt.load(bundles / "echo_alt")  # a second provider of iso.Echo@1: echo is no longer the last
        assert rt.dependents("echo") == []
        rt.unload("echo")


def reload_many(backend: str, bundle: Path, reloads: int) -> None:
    rt = luaplug.Runtime(backend, hot_reload=True, collector=Collector())
    vms = VmCount(rt)
    rt.load(bundle)
    most_open = 0
    for _ in range(reloads):
        rt.reload("adder")
        most_open = max(most_open, vms.open)
    assert rt.contract("iso.Adder@1").default.dispatch(1) == 0  # the newest version serves
    assert len(vms.states) == reloads + 1
    # The serving VM plus at most one batch of superseded ones waits; none was closed twice.
    assert most_open <= RETIRE_BATCH
    assert all(n <= 1 for n in vms.closes.values())
    assert rt.collector.pending < RETIRE_BATCH
    rt.collector.collect()
    assert vms.open == 1
    rt.close()
    assert vms.open == 0 and vms.closed_once()
    assert rt.collector.pending == 0


def test_reloads_retire_old_vms_in_batches_and_leak_none(backend: str, copy_bundle: Callable[..., Path]) -> None:
    reload_many(backend, copy_bundle("adder"), 1_000)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LUAPLUG_SLOW_TESTS"), reason="set LUAPLUG_SLOW_TESTS=1 to run")
def test_ten_thousand_reloads_leak_no_vm(backend: str, copy_bundle: Callable[..., Path]) -> None:
    reload_many(backend, copy_bundle("adder"), 10_000)
