"""Results: per-metric samples, the table, the targets and the JSON document."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Final

REFERENCE: Final = "reference"
FLOOR: Final = "floor"

#: Floor bounds of the call cases, per backend (issue 6).
FLOOR_BOUNDS: Final[dict[str, float]] = {"cffi": 1.2, "lupa": 1.5}
#: Bound of a greet written with the guest SDK over the plain-ffi greet, per backend (issue 16).
SDK_BOUND: Final = 1.3
#: A cached peer call over the Python host's call into the same contract (issue 20).
PEER_HOST_BOUND: Final = 1.5
#: Bounds of the typed proxy over the raw dispatch of the same function, per call case (issue 20).
TYPED_RAW_BOUNDS: Final[dict[str, float]] = {"noop": 1.5, "add": 1.5, "greet": 2.0}
#: How much faster than the reference's natural path the typed proxy is to be, per backend (issue 20).
TYPED_REF_FACTORS: Final[dict[str, float]] = {"cffi": 3.0, "lupa": 2.0}


@dataclass
class Metric:
    """One row group of the table: a measured quantity with samples per contender.

    :ivar key: short name (``noop``, ``threads-2t`` ...)
    :ivar unit: printed unit
    :ivar higher_better: rates (calls/s, scaling) are better higher
    :ivar ratios: whether cost ratios to the reference and the floor make sense
    :ivar floor_ratio: whether the cost ratio to the floor makes sense (the floor may do other work)
    :ivar note: one line printed under the table
    """

    key: str
    unit: str
    higher_better: bool = False
    ratios: bool = True
    floor_ratio: bool = True
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, contender: str, value: float) -> None:
        """Record one repeat's value."""
        self.samples.setdefault(contender, []).append(value)

    def median(self, contender: str) -> float | None:
        """The median over repeats, or ``None`` when the contender has no samples."""
        values = self.samples.get(contender)
        return statistics.median(values) if values else None

    def best(self, contender: str) -> float | None:
        """The best repeat: the minimum, or the maximum for rates."""
        values = self.samples.get(contender)
        if not values:
            return None
        return max(values) if self.higher_better else min(values)

    def cost_ratio(self, contender: str, other: str) -> float | None:
        """Cost of ``contender`` over cost of ``other`` on the medians (< 1: cheaper)."""
        if not self.ratios or (other == FLOOR and not self.floor_ratio):
            return None
        mine, theirs = self.median(contender), self.median(other)
        if mine is None or theirs is None or mine <= 0 or theirs <= 0:
            return None
        return theirs / mine if self.higher_better else mine / theirs


@dataclass
class Target:
    """One target of issue 6 for one contender; ``ok`` is ``None`` when it cannot be judged."""

    metric: str
    contender: str
    text: str
    measured: str
    ok: bool | None

    @property
    def verdict(self) -> str:
        """``pass``, ``MISS`` or ``n/a``."""
        return "n/a" if self.ok is None else ("pass" if self.ok else "MISS")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def judge(value: float | None, high: float | None, low: float | None) -> bool | None:
    """``high >= low``, or ``None`` when ``value`` (what is judged) is missing."""
    if value is None or high is None or low is None:
        return None
    return high >= low


def evaluate_targets(metrics: dict[str, Metric], backends: list[str]) -> list[Target]:
    """The targets of issue 6 for every luaplug backend, judged on medians."""
    out: list[Target] = []

    def faster(metric: str, backend: str, factor: float) -> None:
        m = metrics[metric]
        r = m.cost_ratio(backend, REFERENCE)
        speed = None if r is None else 1 / r
        shown = "-" if speed is None else f"{speed:.2f}x"
        floor = m.cost_ratio(FLOOR, REFERENCE)
        if backend == "lupa" and speed is not None and floor is not None and 1 / floor < factor:
            # lupa calls Lua through at least the floor's path (a lupa call): say when that alone misses.
            shown += f"; the floor itself: {1 / floor:.2f}x"
        out.append(Target(metric, backend, f">={factor:g}x faster than reference", shown, judge(speed, speed, factor)))

    def over(metric: str, base: str, backend: str, bound: float) -> None:
        # Two rows of one contender: e.g. the typed proxy's noop over the raw noop.
        mine, theirs = metrics[metric].median(backend), metrics[base].median(backend)
        r = None if mine is None or theirs is None or theirs <= 0 else mine / theirs
        shown = "-" if r is None else f"{r:.2f}x"
        out.append(Target(metric, backend, f"<={bound:g}x {base}", shown, judge(r, bound, r)))

    def at_most(metric: str, backend: str, other: str, factor: float, text: str) -> None:
        r = metrics[metric].cost_ratio(backend, other)
        out.append(Target(metric, backend, text, "-" if r is None else f"{r:.2f}x", judge(r, factor, r)))

    def peer_share(backend: str) -> None:
        # The callee's share of a cached peer call (the call less the guest's own FFI call) over
        # the Python host's add into the same contract: what luaplug adds to a peer call.
        peer, guest, add = (metrics[k].median(backend) for k in ("peer", "peer-guest", "add"))
        r = None if peer is None or guest is None or add is None or add <= 0 else (peer - guest) / add
        shown = "-" if r is None else f"{r:.2f}x"
        text = f"less peer-guest <={PEER_HOST_BOUND:g}x add"
        out.append(Target("peer", backend, text, shown, judge(r, PEER_HOST_BOUND, r)))

    for b in backends:
        for case in ("noop", "add", "greet"):
            faster(case, b, 3.0)
            bound = FLOOR_BOUNDS.get(b)
            if bound is not None:
                at_most(case, b, FLOOR, bound, f"<={bound:g}x the floor")
        over("sdk-greet", "greet", b, SDK_BOUND)
        for case, bound in TYPED_RAW_BOUNDS.items():
            over(f"typed-{case}", case, b, bound)
            factor = TYPED_REF_FACTORS.get(b)
            if factor is not None:
                faster(f"typed-{case}", b, factor)
        at_most("peer", b, REFERENCE, 1.0, "no slower than reference")
        over("peer", "add", b, PEER_HOST_BOUND)
        peer_share(b)
        at_most("peer-resolve", b, REFERENCE, 1.0, "no slower than reference")
        at_most("load", b, REFERENCE, 1.0, "no slower than reference")
        at_most("memory", b, REFERENCE, 1.0, "no more than reference")
        at_most("reload", b, REFERENCE, 1.0, "no slower than reference")
        at_most("start", b, REFERENCE, 1.0, "no slower than reference")
        scaling = metrics["threads"].median(b)
        shown = "-" if scaling is None else f"{scaling:.2f}"
        out.append(Target("threads", b, "2T/1T >= 1.7", shown, judge(scaling, scaling, 1.7)))
    return out


#: Bounds of the scale case (issue 20), judged at its largest bundle count.
SCALE_FLAT: Final = 1.2
SCALE_KIB: Final = 90.0
SCALE_CLOSE_S: Final = 2.0


def scale_targets(metrics: dict[str, Metric], backends: list[str], counts: tuple[int, ...]) -> list[Target]:
    """The scale targets of issue 20 for every luaplug backend, at the largest count measured."""
    out: list[Target] = []
    if not counts:
        return out
    n = max(counts)

    def bound(key: str, b: str, limit: float, text: str, value: float | None = None) -> None:
        m = metrics.get(key)
        v = value if value is not None else (None if m is None else m.median(b))
        out.append(Target(key, b, text, "-" if v is None else _fmt(v), judge(v, limit, v)))

    for b in backends:
        bound(f"scale-flat@{n}", b, SCALE_FLAT, f"last 100 loads <={SCALE_FLAT:g}x the first 100")
        bound(f"scale-pair@{n}", b, SCALE_FLAT, f"last 100 loads <={SCALE_FLAT:g}x 100 into a fresh runtime")
        one, many = metrics[f"scale-call@{min(counts)}"].median(b), metrics[f"scale-call@{n}"].median(b)
        r = None if one is None or many is None or one <= 0 else many / one
        out.append(
            Target(
                f"scale-call@{n}", b, f"<={SCALE_FLAT:g}x with {min(counts)} loaded", _ratio(r), judge(r, SCALE_FLAT, r)
            )
        )
        bound(f"scale-callpair@{n}", b, SCALE_FLAT, f"<={SCALE_FLAT:g}x a call in a fresh runtime")
        bound(f"scale-mem@{n}", b, SCALE_KIB, f"<={SCALE_KIB:g} KiB/bundle")
        bound(f"scale-close@{n}", b, SCALE_CLOSE_S, f"<{SCALE_CLOSE_S:g} s")
        bound(f"scale-unload@{n}", b, SCALE_CLOSE_S, f"<{SCALE_CLOSE_S:g} s")
    return out


def table(metrics: list[Metric], contenders: list[str], targets: list[Target]) -> str:
    """The printed table: one row per metric and contender, targets beside their row."""
    by_row: dict[tuple[str, str], list[str]] = {}
    for t in targets:
        by_row.setdefault((t.metric, t.contender), []).append(f"{t.text}: {t.verdict} ({t.measured})")
    header = ("case", "unit", "contender", "median", "best", "x ref", "x floor", "targets")
    rows: list[tuple[str, ...]] = []
    for m in metrics:
        first = True
        for c in contenders:
            if c not in m.samples:
                continue
            rows.append(
                (
                    m.key if first else "",
                    m.unit if first else "",
                    c,
                    _fmt(m.median(c)),
                    _fmt(m.best(c)),
                    _ratio(m.cost_ratio(c, REFERENCE)),
                    _ratio(m.cost_ratio(c, FLOOR)),
                    "; ".join(by_row.get((m.key, c), [])),
                )
            )
            first = False
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    right = {3, 4, 5, 6}

    def line(r: tuple[str, ...]) -> str:
        cells = [r[i].rjust(w) if i in right else r[i].ljust(w) for i, w in enumerate(widths)]
        return ("  ".join(cells) + "  " + r[-1]).rstrip()

    out = [line(header), "-" * (sum(widths) + 2 * len(widths) + 7)]
    previous = ""
    for r in rows:
        if r[0] and previous:
            out.append("")
        out.append(line(r))
        previous = r[0] or previous
    return "\n".join(out)


def document(metrics: list[Metric], targets: list[Target], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: metadata, every sample with its summary, every target."""
    return {
        "meta": meta,
        "metrics": [
            {
                "case": m.key,
                "unit": m.unit,
                "higher_is_better": m.higher_better,
                "note": m.note,
                "contenders": {
                    c: {
                        "samples": values,
                        "median": m.median(c),
                        "best": m.best(c),
                        "cost_vs_reference": m.cost_ratio(c, REFERENCE),
                        "cost_vs_floor": m.cost_ratio(c, FLOOR),
                    }
                    for c, values in m.samples.items()
                },
            }
            for m in metrics
        ],
        "targets": [
            {"case": t.metric, "contender": t.contender, "target": t.text, "measured": t.measured, "verdict": t.verdict}
            for t in targets
        ],
    }
