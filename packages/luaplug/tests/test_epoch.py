"""Epoch reclamation: deferred functions wait for every pin active at defer time."""

from __future__ import annotations

import logging
import threading

import pytest

from luaplug import epoch


def test_runs_at_once_without_pins() -> None:
    c = epoch.Collector()
    ran: list[int] = []
    c.defer(lambda: ran.append(1))
    assert ran == [1]
    assert c.pending == 0


def test_waits_for_pins_active_at_defer_time() -> None:
    c = epoch.Collector()
    ran: list[str] = []
    g1 = c.pin()
    c.defer(lambda: ran.append("a"))
    g2 = c.pin()  # taken after the defer: must not hold it back
    assert ran == [] and c.pending == 1
    g2.release()
    c.collect()
    assert ran == []
    g1.release()
    assert c.collect() == 1
    assert ran == ["a"]
    assert c.collect() == 0 and ran == ["a"]  # exactly once


def test_pins_of_other_threads_count() -> None:
    c = epoch.Collector()
    pinned, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def reader() -> None:
        with c.pin():
            pinned.set()
            release.wait(10)

    t = threading.Thread(target=reader)
    t.start()
    pinned.wait(10)
    c.defer(lambda: ran.append(1))
    assert ran == []
    release.set()
    t.join()
    c.collect()
    assert ran == [1]


def test_busy_extra_pin() -> None:
    c = epoch.Collector()
    state = {"busy": True}
    ran: list[int] = []
    c.defer(lambda: ran.append(1), busy=lambda: state["busy"])
    assert ran == []
    state["busy"] = False
    c.collect()
    assert ran == [1]


def test_garbage_stays_bounded_under_continuous_pins() -> None:
    c = epoch.Collector()
    ran: list[int] = []
    guard = c.pin()
    for i in range(1000):
        c.defer(lambda i=i: ran.append(i))
        guard.release()
        guard = c.pin()  # a new pin after every defer: old buckets drain
        c.collect()
        assert c.pending <= 1
    guard.release()
    c.collect()
    assert sorted(ran) == list(range(1000))


def test_failing_deferred_function_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    c = epoch.Collector()
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("x")

    with caplog.at_level(logging.ERROR, logger="luaplug.epoch"):
        c.defer(boom)
        c.defer(lambda: ran.append(1))  # the next reclamation still runs
    assert c.pending == 0
    assert ran == [1]
    records = [r for r in caplog.records if r.name == "luaplug.epoch"]
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.ERROR, "deferred reclamation failed")]
    exc_info = records[0].exc_info
    assert exc_info is not None and isinstance(exc_info[1], RuntimeError) and str(exc_info[1]) == "x"


def test_module_level_default() -> None:
    ran: list[int] = []
    with epoch.pin():
        epoch.defer(lambda: ran.append(1))
        assert ran == []
    epoch.collect()
    assert ran == [1]


def test_release_empties_keepalives_once_pins_are_gone() -> None:
    c = epoch.Collector()
    first: list[object] = [object()]
    second: list[object] = [object(), object()]
    g = c.pin()
    c.release([first, second])
    assert len(first) == 1 and len(second) == 2  # a pinned call may still use them
    g.release()
    c.collect()
    assert first == [] and second == []
    c.release([])  # nothing to release: nothing deferred
    assert c.pending == 0


def test_a_batched_release_waits_for_its_batch_and_for_every_pin() -> None:
    c = epoch.Collector()
    kept = [[object()] for _ in range(epoch.RETIRE_BATCH)]
    c.release([kept[0]], batched=True)
    assert kept[0] and c.pending == 1  # nothing pinned, still not at once: it waits for a batch
    g = c.pin()
    c.collect()  # the batch is deferred behind the pin
    assert kept[0]
    g.release()
    c.collect()
    assert kept[0] == [] and c.pending == 0
    for keep in kept[1:]:
        c.release([keep], batched=True)
    assert all(kept[1:])
    c.release([[object()]], batched=True)  # a full batch is deferred, and runs when nothing is pinned
    assert all(k == [] for k in kept[1:]) and c.pending == 0


def test_retired_functions_run_in_batches() -> None:
    c = epoch.Collector()
    ran: list[int] = []
    for i in range(epoch.RETIRE_BATCH - 1):
        c.retire(lambda i=i: ran.append(i))
    assert ran == [] and c.pending == epoch.RETIRE_BATCH - 1
    c.retire(lambda: ran.append(-1))  # fills the batch: deferred, and with nothing pinned, run
    assert len(ran) == epoch.RETIRE_BATCH and c.pending == 0
    c.retire(lambda: ran.append(99))
    assert c.collect() == 1  # collect defers a partial batch too
    assert ran[-1] == 99 and c.pending == 0


def test_a_retired_function_waits_for_pins_active_at_retire_time() -> None:
    c = epoch.Collector()
    ran: list[str] = []
    g1 = c.pin()
    c.retire(lambda: ran.append("a"))
    assert c.pinned == 1
    c.defer(lambda: None)  # rotates the bucket g1 sits in before the batch is deferred
    g2 = c.pin()
    c.collect()  # the batch is deferred now, behind g1 (older) and g2 (newer)
    assert ran == []
    g1.release()
    c.collect()
    assert ran == []  # g2 was taken before the batch was deferred: it waits for it too
    g2.release()
    assert c.collect() == 1 and ran == ["a"]


def test_retired_busy_entries_wait_one_by_one() -> None:
    c = epoch.Collector()
    busy = {"a": True, "b": False}
    ran: list[str] = []
    c.retire(lambda: ran.append("a"), busy=lambda: busy["a"])
    c.retire(lambda: ran.append("b"), busy=lambda: busy["b"])
    assert c.collect() == 1 and ran == ["b"]
    assert c.pending == 1
    busy["a"] = False
    assert c.collect() == 1 and ran == ["b", "a"]
