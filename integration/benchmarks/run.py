"""Benchmarks: luaplug on each backend, side by side with the reference runtime and the floor.

Run ``python integration/benchmarks/run.py [--quick] [--json out.json] [--plots DIR] [--backend NAME] [--case NAME]``
(or ``tox -e bench -- --quick``; ``tox -e bench -- --case greet,sdk-greet`` measures those
cases alone). Contenders, in one process run:

- every available luaplug backend (or the ``--backend`` ones);
- ``reference``: polyplug 0.1.3 through its own host API and ``dispatch.vm.call``
  (``integration/reference/adapter.py``), when installed; else its column is skipped;
- ``floor``: a direct lupa call of a cached Lua function with the same 5 arguments.

The ``scale`` case runs luaplug's backends alone: 1 to 10,000 distinct tiny bundles in one runtime
(``--quick``: up to 1,000), three fresh processes per backend and count (``--quick``: one;
``_worker.py scale``), each one sample; its rows are the medians of the samples.

Each repeat measures every case on every contender, the contenders interleaved (their order
rotates per repeat); the table gives the median and the best repeat, and cost ratios to the
reference and to the floor (contender's cost / other's cost: below 1 is cheaper). Call
loops subtract an empty-loop baseline. Missed targets are reported, never an exit status:
the runner exits 0 unless it crashes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from time import perf_counter_ns
from typing import Any, TypeVar

from _common import (
    BENCH_BUNDLES,
    PAIRED,
    PEER_CACHED,
    PEER_UNCACHED,
    SUITE_BUNDLES,
    add_integration_to_path,
    bundle_copy,
    empty_loop,
    scale_bundles,
)
from _contenders import (
    SPIN_ROUNDS,
    BenchBundles,
    Contender,
    FloorContender,
    LuaplugContender,
    ReferenceContender,
    Worker,
)
from _plot import write_plots
from _procs import child_env, load_sample, scale_sample, start_sample
from _report import FLOOR, REFERENCE, Metric, document, evaluate_targets, scale_targets, table

import luaplug

T = TypeVar("T")


class Plan:
    """Sizes of one run (``--quick`` shrinks the repeats and the thread loops).

    :ivar repeats: repeats of every in-process case
    :ivar proc_repeats: repeats of the subprocess cases (start, load)
    """

    def __init__(self, quick: bool, repeats: int | None) -> None:
        self.quick = quick
        self.repeats = repeats or (3 if quick else 9)
        self.proc_repeats = min(self.repeats, 2 if quick else 5)
        self.calls = 10_000 if quick else 30_000  # per sample of noop/add/greet
        self.peer_calls = 10_000 if quick else 50_000
        self.peer_uncached_calls = 2_000 if quick else 10_000
        self.reloads = 3 if quick else 7  # per repeat; the sample is their median
        self.load_count = 100
        self.thread_calls = {"spin": 1_500 if quick else 12_000, "add": 20_000 if quick else 80_000}
        #: bundle counts of the scale case (fresh processes per backend, one sample each)
        self.scale_counts: tuple[int, ...] = (1, 10, 100, 1_000) if quick else (1, 10, 100, 1_000, 10_000)
        self.scale_calls = 5_000 if quick else 20_000  # per call loop and per storm thread
        #: processes per backend and count: one sample is at the mercy of a slow spell of the
        #: machine during its first or last 100 loads (the rows are medians over the samples)
        self.scale_samples = 1 if quick else 3


def scale_metrics(counts: tuple[int, ...]) -> list[Metric]:
    """The rows of the scale case, one per quantity and bundle count."""
    kinds = [
        ("load", "ms/load", False, "scale-load@N: median load of N distinct tiny bundles into one runtime (GC off)"),
        ("flat", "last/first", False, "scale-flat@N: median of the last 100 loads over the first 100's"),
        (
            "pair",
            "last/fresh",
            False,
            "scale-pair@N: the last 100 loads over 100 loads into a fresh runtime, the two interleaved one by one",
        ),
        ("mem", "KiB/bundle", False, "scale-mem@N: RSS growth per bundle"),
        ("call", "ns/call", False, "scale-call@N: dispatch(0) on the last bundle loaded, N loaded"),
        (
            "callpair",
            "N/fresh",
            False,
            "scale-callpair@N: that call over one on a bundle of the fresh runtime (<= 100 loaded), alternated",
        ),
        ("storm", "kcalls/s", True, "scale-storm@N: 4 threads calling round-robin over all N bundles"),
        ("close", "s", False, "scale-close@N: rt.close() with N bundles loaded"),
        ("unload", "s", False, "scale-unload@N: unloading all N one by one (newest first)"),
    ]
    out = []
    for kind, unit, higher, note in kinds:
        for i, n in enumerate(counts):
            if kind in ("flat", "pair", "callpair") and n < 200:
                continue  # the windows would overlap (and the worker makes no fresh runtime)
            last = i == len(counts) - 1
            out.append(Metric(f"scale-{kind}@{n}", unit, higher_better=higher, ratios=False, note=note if last else ""))
    return out


def make_metrics(scale_counts: tuple[int, ...] = ()) -> dict[str, Metric]:
    """Every row group of the table, in print order."""
    ms = [
        Metric("noop", "ns/call", note="noop: Instance.dispatch(1) of iso.Adder@1 (a no-op handler)"),
        Metric("add", "ns/call", note="add: typed add(40, 2) through an arg-pack struct and an out slot"),
        Metric("greet", "ns/call", note="greet: arena.reset() + greet('world') -> StringView in the arena"),
        Metric(
            "sdk-greet",
            "ns/call",
            note="sdk-greet: the same greet written with the guest SDK (abi.to_str, guest.alloc_string_arena)",
        ),
        Metric(
            "typed-noop",
            "ns/call",
            floor_ratio=False,
            note="typed-noop: noop() with Python values: luaplug's typed proxy (Runtime.bind); reference: its natural"
            " path, a ctypes caller shaped like polyplugc's generated ones",
        ),
        Metric("typed-add", "ns/call", floor_ratio=False, note="typed-add: add(40, 2) -> 42, the same two paths"),
        Metric(
            "typed-greet",
            "ns/call",
            floor_ratio=False,
            note="typed-greet: greet('world') -> 'hello, world' (str in, str out), the same two paths",
        ),
        Metric(
            "peer",
            "ns/call",
            floor_ratio=False,
            note="peer: Lua guest -> iso.Adder@1 add via dispatch.vm.call (iface cached)",
        ),
        Metric(
            "peer-resolve",
            "ns/call",
            floor_ratio=False,
            note="peer-resolve: find + resolve + create + call + destroy per call",
        ),
        Metric(
            "peer-guest",
            "ns/call",
            ratios=False,
            note="peer-guest: the guest's share of a cached peer call: the same dispatch.vm.call with a null"
            " loader_data, refused at once by the callee (luaplug only)",
        ),
        Metric("load", "ms/bundle", note="load: one bundle load in a fresh runtime (median of 100)"),
        Metric("memory", "KiB/bundle", note="memory: RSS growth per loaded bundle over 100 bundles"),
        Metric("reload", "ms", note="reload: hot reload of an edited bundle"),
        Metric("start", "ms", note="start: fresh process, import + create a runtime"),
        Metric("start+load", "ms", note="start+load: start, then load one bundle (lazy costs show here)"),
        Metric("threads-1t", "kcalls/s", higher_better=True),
        Metric("threads-2t", "kcalls/s", higher_better=True),
        Metric(
            "threads",
            "2T/1T",
            higher_better=True,
            ratios=False,
            note=f"threads: spin ({SPIN_ROUNDS} rounds of Lua arithmetic per call), two bundles, one per thread",
        ),
        Metric("threads-add-1t", "kcalls/s", higher_better=True),
        Metric("threads-add-2t", "kcalls/s", higher_better=True),
        Metric("threads-add", "2T/1T", higher_better=True, ratios=False, note="threads-add: the same with add calls"),
        *scale_metrics(scale_counts),
    ]
    return {m.key: m for m in ms}


#: The cases ``--case`` selects, each with the metrics (table rows) it fills, in run order.
CASES: dict[str, tuple[str, ...]] = {
    "noop": ("noop",),
    "add": ("add",),
    "greet": ("greet",),
    "sdk-greet": ("sdk-greet",),
    "typed-noop": ("typed-noop",),
    "typed-add": ("typed-add",),
    "typed-greet": ("typed-greet",),
    "peer": ("peer", "peer-resolve", "peer-guest"),
    "reload": ("reload",),
    "threads": ("threads-1t", "threads-2t", "threads"),
    "threads-add": ("threads-add-1t", "threads-add-2t", "threads-add"),
    "start": ("start", "start+load"),
    "load": ("load", "memory"),
    # Its rows depend on the bundle counts (Plan.scale_counts): see scale_metrics.
    "scale": (),
}
#: The call cases: one contender method each (``sdk-greet`` -> ``sdk_greet``); a method that
#: returns ``None`` (the floor's typed cases) leaves the contender out of that row.
CALL_CASES: tuple[str, ...] = ("noop", "add", "greet", "sdk-greet", "typed-noop", "typed-add", "typed-greet")


def prepare_bundles(work: Path) -> tuple[BenchBundles, Path, dict[str, Path]]:
    """Copies of the bundles (vendored SDK, ``[function_count]``), shared by every contender.

    :returns: the call-case bundles, the root of the 101 load copies, one reload copy per contender name
    """
    sdk = luaplug.sdk_path()
    root = work / "bundles"
    root.mkdir()
    bundles = BenchBundles(
        sdk=sdk,
        adder=bundle_copy(SUITE_BUNDLES / "adder", root, sdk=sdk),
        adder2=bundle_copy(SUITE_BUNDLES / "adder", root, "adder2", {"iso.Adder": "bench.Adder2"}, sdk),
        greeter=bundle_copy(SUITE_BUNDLES / "greeter", root, sdk=sdk),
        sdkgreet=bundle_copy(BENCH_BUNDLES / "sdkgreet", root, sdk=sdk),
        peerloop=bundle_copy(BENCH_BUNDLES / "peerloop", root, sdk=sdk),
        spin=bundle_copy(BENCH_BUNDLES / "spin", root, sdk=sdk),
        spin2=bundle_copy(BENCH_BUNDLES / "spin", root, "spin2", {"bench.Spin": "bench.Spin2"}, sdk),
    )
    loads = work / "load"
    loads.mkdir()
    for i in range(101):
        bundle_copy(SUITE_BUNDLES / "adder", loads, f"adder{i:03d}", {"iso.Adder": f"bench.Adder{i:03d}"}, sdk)
    reload_dirs: dict[str, Path] = {}
    for name in [*luaplug.available_backends(), REFERENCE, FLOOR]:
        (work / f"reload-{name}").mkdir()
        reload_dirs[name] = bundle_copy(
            SUITE_BUNDLES / "adder", work / f"reload-{name}", "reloadme", {"iso.Adder": "bench.Reload"}, sdk
        )
    return bundles, loads, reload_dirs


def reference_reason() -> str | None:
    """``None`` when the reference can run here, else why its column is skipped."""
    add_integration_to_path()
    try:
        from reference.adapter import reference_available
    except ImportError as exc:  # the adapter itself needs only luaplug; be safe anyway
        return f"the reference adapter does not import: {exc}"
    return reference_available()


def timed(fn: Callable[[], T]) -> T:
    """Run a timing loop with the cyclic GC collected beforehand and off during it."""
    gc.collect()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


def thread_rates(workers: tuple[Worker, Worker], calls: int) -> tuple[float, float]:
    """calls/s of ``workers[0]`` alone, and of both at once in two threads."""
    one = calls * 1e9 / timed(partial(workers[0], calls))
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def run(w: Worker) -> None:
        try:
            barrier.wait()
            w(calls)
        except BaseException as exc:  # re-raised by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    gc.collect()
    gc.disable()
    try:
        for t in threads:
            t.start()
        barrier.wait()
        t0 = perf_counter_ns()
        for t in threads:
            t.join()
        elapsed = perf_counter_ns() - t0
    finally:
        gc.enable()
    if errors:
        raise errors[0]
    return one, 2 * calls * 1e9 / elapsed


def call_case(c: Contender, case: str) -> Callable[[int], int | None]:
    """Contender ``c``'s loop of call case ``case`` (it returns ``None`` when ``c`` has no such path)."""
    fn: Callable[[int], int | None] = getattr(c, case.replace("-", "_"))
    return fn


def measure(
    contenders: list[Contender], plan: Plan, loads: Path, bundles: BenchBundles, work: Path, cases: list[str]
) -> dict[str, Metric]:
    """Every repeat of every case in ``cases``, contenders interleaved (the order rotates per repeat)."""
    metrics = make_metrics(plan.scale_counts if "scale" in cases else ())
    env = child_env(work / "pycache")
    workloads = [w for w, case in (("spin", "threads"), ("add", "threads-add")) if case in cases]
    workers = {(c.name, w): (c.worker(w, 0), c.worker(w, 1)) for c in contenders for w in workloads}
    for c in contenders:  # warm-up: JIT traces, caches, byte code for the children
        c.check()
        for case in CALL_CASES:
            if case in cases:
                call_case(c, case)(2000)
        if "peer" in cases:
            c.peer(1000, PEER_CACHED)
        for w in workloads:
            workers[(c.name, w)][0](100)
        if "start" in cases:
            start_sample(c.name, bundles.adder, env)
    for rep in range(plan.repeats):
        k = rep % len(contenders)
        order = contenders[k:] + contenders[:k]
        print(f"  repeat {rep + 1}/{plan.repeats}", file=sys.stderr, flush=True)
        n = plan.calls
        base = min(empty_loop(n) for _ in range(3))
        for case in CALL_CASES:
            if case not in cases:
                continue
            for c in order:
                elapsed = timed(partial(call_case(c, case), n))
                if elapsed is not None:
                    metrics[case].add(c.name, max(elapsed - base, 0) / n)
        if "peer" in cases:
            for c in order:
                metrics["peer"].add(c.name, c.peer(plan.peer_calls, PEER_CACHED))
                metrics["peer-resolve"].add(c.name, c.peer(plan.peer_uncached_calls, PEER_UNCACHED))
                guest_side = c.peer_guest_side(plan.peer_calls)
                if guest_side is not None:
                    metrics["peer-guest"].add(c.name, guest_side)
        if "reload" in cases:
            for c in order:
                metrics["reload"].add(c.name, statistics.median(c.reload() for _ in range(plan.reloads)))
        for workload, prefix in (("spin", "threads"), ("add", "threads-add")):
            if prefix not in cases:
                continue
            for c in order:
                one, two = thread_rates(workers[(c.name, workload)], plan.thread_calls[workload])
                metrics[f"{prefix}-1t"].add(c.name, one / 1e3)
                metrics[f"{prefix}-2t"].add(c.name, two / 1e3)
                metrics[prefix].add(c.name, two / one)
        if rep < plan.proc_repeats and "start" in cases:
            for c in order:
                start, with_load = start_sample(c.name, bundles.adder, env)
                metrics["start"].add(c.name, start)
                metrics["start+load"].add(c.name, with_load)
        if rep < plan.proc_repeats and "load" in cases:
            for c in order:
                result = load_sample(c.name, loads, plan.load_count, bundles.sdk, env)
                metrics["load"].add(c.name, statistics.median(result["load_ms"]))
                before, after = result["rss_before_kib"], result["rss_after_kib"]
                if before is not None and after is not None:
                    metrics["memory"].add(c.name, (after - before) / plan.load_count)
    if "scale" in cases:
        measure_scale(contenders, plan, work, env, metrics)
    return metrics


def measure_scale(
    contenders: list[Contender], plan: Plan, work: Path, env: dict[str, str], metrics: dict[str, Metric]
) -> None:
    """The scale case: ``plan.scale_samples`` fresh processes per luaplug backend and bundle
    count (backends interleaved), one sample each."""
    root = scale_bundles(work / "scale", max(plan.scale_counts) + PAIRED)
    for n in plan.scale_counts:
        print(f"  scale: {n} bundles", file=sys.stderr, flush=True)
        for c in [c for _ in range(plan.scale_samples) for c in contenders]:
            if not isinstance(c, LuaplugContender):
                continue
            r = scale_sample(c.name, root, n, plan.scale_calls, env)
            metrics[f"scale-load@{n}"].add(c.name, r["load_ms"])
            if f"scale-flat@{n}" in metrics:
                metrics[f"scale-flat@{n}"].add(c.name, r["last_ms"] / r["first_ms"])
            if r["fresh_ms"] and f"scale-pair@{n}" in metrics:
                metrics[f"scale-pair@{n}"].add(c.name, r["last_ms"] / r["fresh_ms"])
            if r["fresh_call_ns"] and f"scale-callpair@{n}" in metrics:
                metrics[f"scale-callpair@{n}"].add(c.name, r["call_ns"] / r["fresh_call_ns"])
            if r["kib_per_bundle"] is not None:
                metrics[f"scale-mem@{n}"].add(c.name, r["kib_per_bundle"])
            metrics[f"scale-call@{n}"].add(c.name, r["call_ns"])
            metrics[f"scale-storm@{n}"].add(c.name, r["storm_calls_s"] / 1e3)
            metrics[f"scale-close@{n}"].add(c.name, r["close_s"])
            metrics[f"scale-unload@{n}"].add(c.name, r["unload_s"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="few repeats (CI: keeps the runner from rotting)")
    p.add_argument("--json", metavar="PATH", type=Path, help="also write the results as JSON to PATH")
    p.add_argument(
        "--plots",
        metavar="DIR",
        type=Path,
        default=Path(tempfile.gettempdir()) / "luaplug-bench",
        help="draw the run into DIR/calls.png and DIR/scale.png (needs matplotlib; default: %(default)s)",
    )
    p.add_argument("--no-plots", action="store_true", help="draw nothing")
    p.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="measure luaplug backend NAME only (repeatable or comma separated; default: every available one)",
    )
    p.add_argument("--repeats", type=int, metavar="N", help="repeats of every case (default: 9, --quick: 3)")
    p.add_argument("--no-reference", action="store_true", help="leave the reference runtime out")
    p.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run case NAME only (repeatable or comma separated; default: all of {', '.join(CASES)})",
    )
    return p.parse_args(argv)


def chosen_cases(requested: list[str]) -> list[str]:
    """The cases to run, in run order.

    :raises SystemExit: an unknown case name (usage error, status 2)
    """
    names = {n.strip() for raw in requested for n in raw.split(",") if n.strip()}
    if not names:
        return list(CASES)
    unknown = sorted(names - CASES.keys())
    if unknown:
        print(f"usage error: no case named {', '.join(unknown)} (cases: {', '.join(CASES)})", file=sys.stderr)
        raise SystemExit(2)
    return [c for c in CASES if c in names]


def chosen_backends(requested: list[str]) -> list[str]:
    """The luaplug backends to measure.

    :raises SystemExit: an unknown or unusable backend name (usage error, status 2)
    """
    available = luaplug.available_backends()
    names = [n.strip() for raw in requested for n in raw.split(",") if n.strip()]
    if not names:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        print(
            f"usage error: no usable luaplug backend named {', '.join(unknown)} (available: {available})",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table and the targets; 0 unless something crashed."""
    args = parse_args(argv)
    plan = Plan(args.quick, args.repeats)
    backends = chosen_backends(args.backend)
    cases = chosen_cases(args.case)
    started = time.time()
    t0 = time.perf_counter()
    notes: list[str] = []
    ref_reason = "left out (--no-reference)" if args.no_reference else reference_reason()
    with tempfile.TemporaryDirectory(prefix="luaplug-bench-") as tmp:
        work = Path(tmp)
        bundles, loads, reload_dirs = prepare_bundles(work)
        contenders: list[Contender] = [LuaplugContender(b, bundles, reload_dirs[b]) for b in backends]
        if ref_reason is None:
            try:
                contenders.append(ReferenceContender(bundles, reload_dirs[REFERENCE]))
            except (RuntimeError, OSError) as exc:  # the reference is optional; say why it is missing
                ref_reason = f"the reference runtime failed to start: {exc}"
        if ref_reason is not None:
            notes.append(f"reference column skipped: {ref_reason}")
        contenders.append(FloorContender(bundles, reload_dirs[FLOOR]))
        print(
            f"luaplug benchmarks: {', '.join(c.name for c in contenders)}; {plan.repeats} repeats"
            f"{' (quick)' if plan.quick else ''}",
            file=sys.stderr,
            flush=True,
        )
        try:
            metrics = measure(contenders, plan, loads, bundles, work, cases)
        finally:
            for c in contenders:
                c.close()
    names = [c.name for c in contenders]
    measured = {key for case in cases for key in CASES[case]}
    if "scale" in cases:
        measured |= {m.key for m in scale_metrics(plan.scale_counts)}
    targets = [t for t in evaluate_targets(metrics, backends) if t.metric in measured]
    if "scale" in cases:
        targets += scale_targets(metrics, backends, plan.scale_counts)
    print(table(list(metrics.values()), names, targets))
    print()
    for m in metrics.values():
        if m.note and m.key in measured:
            print(f"  {m.note}")
    print(f"  {os.cpu_count()} CPUs; the threads rows need 2 idle ones to mean much")
    print("  best = min over repeats (max for rates); x ref / x floor = cost ratio of medians (<1: cheaper)")
    for note in notes:
        print(f"  note: {note}")
    judged = [t for t in targets if t.ok is not None]
    missed = [t for t in judged if not t.ok]
    print(f"\ntargets: {len(judged) - len(missed)} pass, {len(missed)} miss, {len(targets) - len(judged)} n/a")
    for t in missed:
        print(f"  MISS {t.contender} {t.metric}: {t.text} (measured {t.measured})")
    if not args.no_plots:
        drawn = write_plots({k: m for k, m in metrics.items() if k in measured}, names, args.plots)
        if isinstance(drawn, str):
            print(f"\nplots skipped: {drawn}")
        elif drawn:
            print(f"\nplots: {', '.join(map(str, drawn))}")
    duration = time.perf_counter() - t0
    print(f"\n({duration:.1f} s)")
    if args.json is not None:
        meta: dict[str, Any] = {
            "started": started,
            "duration_s": duration,
            "quick": plan.quick,
            "repeats": plan.repeats,
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "backends": backends,
            "cases": cases,
            "contenders": names,
            "reference": "polyplug 0.1.3" if ref_reason is None else None,
            "notes": notes,
        }
        rows = [m for m in metrics.values() if m.key in measured]
        args.json.write_text(json.dumps(document(rows, targets, meta), indent=2) + "\n", "utf-8")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
