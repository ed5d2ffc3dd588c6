"""Subprocess side of the ``load`` case: one fresh process per contender and repeat.

``python _worker.py load CONTENDER ROOT COUNT SDK`` creates a runtime (``CONTENDER`` is a
luaplug backend name, ``reference`` or ``floor``), loads ``ROOT/adder000`` as a warm-up,
then ``ROOT/adder001`` .. ``ROOT/adder<COUNT>`` timing each load, and prints one JSON object:
``{"load_ms": [...], "rss_before_kib": int, "rss_after_kib": int}`` (RSS after a
``gc.collect()``, ``null`` where ``/proc`` is missing).
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from _common import add_integration_to_path, floor_load, rss_kib


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


def main(argv: list[str]) -> int:
    """Entry point; see the module docstring."""
    if len(argv) != 5 or argv[0] != "load":
        print("usage: _worker.py load CONTENDER ROOT COUNT SDK", file=sys.stderr)
        return 2
    _, contender, root, count, sdk = argv
    print(json.dumps(load_case(contender, Path(root), int(count), Path(sdk))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
