"""Subprocess side of the ``load`` and ``scale`` cases: one fresh process per contender and repeat.

``python _worker.py load CONTENDER ROOT COUNT SDK`` creates a runtime (``CONTENDER`` is a
luaplug backend name, ``reference`` or ``floor``), loads ``ROOT/adder000`` as a warm-up,
then ``ROOT/adder001`` .. ``ROOT/adder<COUNT>`` timing each load, and prints one JSON object:
``{"load_ms": [...], "rss_before_kib": int, "rss_after_kib": int}`` (RSS after a
``gc.collect()``, ``null`` where ``/proc`` is missing).

``python _worker.py scale BACKEND ROOT N CALLS`` loads the N distinct bundles ``ROOT/s00000``
.. (and from N = 200 the next 100, see :func:`scale_case`) into luaplug runtimes and prints one
JSON object.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from _common import PAIRED, add_integration_to_path, floor_load, rss_kib


def _loader(contender: str, sdk: Path) -> tuple[Any, Callable[[Path], object]]:
    """``(runtime, load)`` for ``contender``; ``load(dir)`` loads one bundle directory."""
    if contender == "reference":
        add_integration_to_path()
        from reference.adapter import ReferenceRuntime

        ref = ReferenceRuntime()
        return ref, ref.load
    if contender == "floor":
        vms: list[Any] = []  # every bundle keeps its own LuaRuntime alive
        return vms, lambda d: vms.append(floor_load(sdk, d))
    import luaplug

    rt = luaplug.Runtime(contender)
    return rt, rt.load


def load_case(contender: str, root: Path, count: int, sdk: Path) -> dict[str, Any]:
    """Load ``count`` distinct bundles in a fresh runtime; per-load ms and RSS before/after."""
    runtime, load = _loader(contender, sdk)
    load(root / "adder000")  # warm-up: lazy imports, the first VM
    gc.collect()
    before = rss_kib()
    times: list[float] = []
    for i in range(1, count + 1):
        d = root / f"adder{i:03d}"
        t0 = perf_counter_ns()
        load(d)
        times.append((perf_counter_ns() - t0) / 1e6)
    gc.collect()
    after = rss_kib()
    del runtime  # the process exits right after; nothing to close
    return {"load_ms": times, "rss_before_kib": before, "rss_after_kib": after}


def _call_ns(dispatches: list[Callable[..., int]], calls: int) -> list[float]:
    """ns per ``dispatch(0)`` of each of ``dispatches``: the best of three rounds, each round a
    loop of ``calls`` calls per dispatch, one after the other (the cyclic GC off)."""
    best: list[int | None] = [None] * len(dispatches)
    for _ in range(3):
        for i, dispatch in enumerate(dispatches):
            t0 = perf_counter_ns()
            for _ in range(calls):
                dispatch(0)
            elapsed = perf_counter_ns() - t0
            b = best[i]
            best[i] = elapsed if b is None else min(b, elapsed)
    return [b / calls for b in best if b is not None]


def _storm(dispatches: list[Callable[..., int]], calls: int, threads: int = 4) -> float:
    """calls/s of ``threads`` threads each making ``calls`` calls, spread round-robin over every bundle."""
    n = len(dispatches)
    plans = [[dispatches[(k + threads * j) % n] for j in range(calls)] for k in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def run(plan: list[Callable[[int], int]]) -> None:
        barrier.wait()
        for d in plan:
            d(0)

    workers = [threading.Thread(target=run, args=(plan,)) for plan in plans]
    for t in workers:
        t.start()
    barrier.wait()
    t0 = perf_counter_ns()
    for t in workers:
        t.join()
    return threads * calls * 1e9 / (perf_counter_ns() - t0)


def scale_case(backend: str, root: Path, n: int, calls: int) -> dict[str, Any]:
    """N distinct bundles in one runtime of ``backend``.

    Loads are timed one by one with the cyclic GC off (as every timing loop of the runner;
    its full collections cost an amortized constant per object and land in whichever
    window they happen to fall); RSS is read after a collection. From N = 200 each of the
    last 100 loads is followed by a load of ``ROOT/s<N>`` .. ``ROOT/s<N+99>`` into a fresh
    runtime (``fresh_ms``: the same loads as the first 100, made at the time of the last 100;
    its bundles count in the RSS per bundle). Then: a call's cost on the last bundle loaded
    (and, alternating with it, on the fresh runtime's last: ``fresh_call_ns``; the fresh runtime
    is closed next), a 4-thread call storm over all N, ``rt.close()``; and in a
    second runtime loading them again, unloading all N one by one (newest first).
    """
    import luaplug

    k = min(PAIRED, n)
    dirs = [root / f"s{i:05d}" for i in range(n)]
    # Bundles no other runtime of this process loads: the fresh runtime's share of the paired window.
    spare = [root / f"s{i:05d}" for i in range(n, n + k)] if n >= 2 * PAIRED else []
    rt = luaplug.Runtime(backend)
    rt.load(root / "warm")  # lazy imports, the first VM
    rt.unload("warm")
    fresh_rt = luaplug.Runtime(backend) if spare else None
    gc.collect()
    before = rss_kib()
    times: list[float] = []
    fresh: list[float] = []
    gc.disable()
    try:
        for i, d in enumerate(dirs):
            t0 = perf_counter_ns()
            rt.load(d)
            times.append((perf_counter_ns() - t0) / 1e6)
            j = i - (n - len(spare))
            if fresh_rt is not None and j >= 0:
                # The paired window: each of the last loads is followed by one into a runtime
                # holding j bundles, so both halves see the same spell of the machine.
                t0 = perf_counter_ns()
                fresh_rt.load(spare[j])
                fresh.append((perf_counter_ns() - t0) / 1e6)
    finally:
        gc.enable()
    gc.collect()
    after = rss_kib()  # both runtimes' bundles are resident
    dispatches = [rt.contract(f"scale.S{i}@1").default.dispatch for i in range(n)]
    paired = [] if fresh_rt is None else [fresh_rt.contract(f"scale.S{n + len(spare) - 1}@1").default.dispatch]
    gc.collect()
    gc.disable()
    try:
        call_ns, *fresh_call = _call_ns([dispatches[-1], *paired], calls)
        paired.clear()
        if fresh_rt is not None:
            fresh_rt.close()
        storm = _storm(dispatches, calls)
    finally:
        gc.enable()
    del dispatches
    gc.collect()  # the instances the storm used: they no longer hold their VMs
    t0 = perf_counter_ns()
    rt.close()
    close_s = (perf_counter_ns() - t0) / 1e9
    rt = luaplug.Runtime(backend)
    for d in dirs:
        rt.load(d)
    names = [d.name for d in reversed(dirs)]
    t0 = perf_counter_ns()
    for name in names:
        rt.unload(name)
    unload_s = (perf_counter_ns() - t0) / 1e9
    rt.close()
    return {
        "load_ms": statistics.median(times),
        "first_ms": statistics.median(times[:k]),
        "last_ms": statistics.median(times[-k:]),
        "fresh_ms": statistics.median(fresh) if fresh else None,
        "kib_per_bundle": None if before is None or after is None else (after - before) / (n + len(spare)),
        "call_ns": call_ns,
        "fresh_call_ns": fresh_call[0] if fresh_call else None,
        "storm_calls_s": storm,
        "close_s": close_s,
        "unload_s": unload_s,
    }


def main(argv: list[str]) -> int:
    """Entry point; see the module docstring."""
    if len(argv) == 5 and argv[0] == "scale":
        _, backend, root, n, calls = argv
        print(json.dumps(scale_case(backend, Path(root), int(n), int(calls))))
        return 0
    if len(argv) != 5 or argv[0] != "load":
        print("usage: _worker.py load CONTENDER ROOT COUNT SDK | scale BACKEND ROOT N CALLS", file=sys.stderr)
        return 2
    _, contender, root, count, sdk = argv
    print(json.dumps(load_case(contender, Path(root), int(count), Path(sdk))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
