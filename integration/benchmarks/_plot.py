"""Pictures of one run: per-call cost per contender, and cost against the number of bundles.

matplotlib is a dependency of ``tox -e bench`` only; :func:`write_plots` reports its absence
instead of failing, so the runner works without it.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from _report import Metric

#: The per-call rows drawn, in order (those the run measured).
CALL_ROWS = (
    "noop",
    "add",
    "greet",
    "sdk-greet",
    "typed-noop",
    "typed-add",
    "typed-greet",
    "peer",
    "peer-guest",
    "peer-resolve",
)
#: The scale quantities drawn against N: (kind, axis label).
SCALE_PANELS = (
    ("load", "load, ms per bundle"),
    ("call", "dispatch(0), ns"),
    ("mem", "RSS, KiB per bundle"),
    ("close", "rt.close(), s"),
)
#: One colour per contender, stable across pictures.
COLOURS = {"cffi": "#1f77b4", "lupa": "#2ca02c", "reference": "#d62728", "floor": "#7f7f7f"}


def machine() -> str:
    """One line naming the machine: CPU model, CPU count, OS and Python."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = ".".join(map(str, sys.version_info[:3]))
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, CPython {py}"


def _calls(plt: Any, metrics: dict[str, Metric], contenders: list[str], title: str, path: Path) -> bool:
    rows = [k for k in CALL_ROWS if k in metrics and metrics[k].samples]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) * max(2, len(contenders)) / 2 + 1.6), dpi=100)
    height = 0.8 / len(contenders)
    for j, c in enumerate(contenders):
        ys, xs = [], []
        for i, key in enumerate(rows):
            if c == "floor" and not metrics[key].floor_ratio:
                continue  # the floor does other work there (the peer rows: an add inside the VM)
            value = metrics[key].median(c)
            if value is not None and value > 0:
                ys.append(i + (j - (len(contenders) - 1) / 2) * height)
                xs.append(value)
        ax.barh(ys, xs, height=height, label=c, color=COLOURS.get(c))
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ns per call (median, log scale; shorter is cheaper)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _scale(plt: Any, metrics: dict[str, Metric], contenders: list[str], title: str, path: Path) -> bool:
    counts = sorted({int(k.split("@")[1]) for k in metrics if k.startswith("scale-load@") and metrics[k].samples})
    if not counts:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(8, 6), dpi=100)
    for ax, (kind, label) in zip(axes.flat, SCALE_PANELS, strict=True):
        for c in contenders:
            points = [(n, metrics[f"scale-{kind}@{n}"].median(c)) for n in counts if f"scale-{kind}@{n}" in metrics]
            shown = [(n, v) for n, v in points if v is not None]
            if shown:
                ax.plot(*zip(*shown, strict=True), marker="o", label=c, color=COLOURS.get(c))
        ax.set_xscale("log")
        if kind == "close":
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("bundles loaded (N)")
        ax.set_title(label, fontsize=9)
        ax.grid(which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_plots(metrics: dict[str, Metric], contenders: list[str], directory: Path) -> list[Path] | str:
    """Draw the run into ``directory``; the files written, or why nothing was drawn."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (tox -e bench installs it)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    where = machine()
    written = []
    calls = directory / "calls.png"
    if _calls(plt, metrics, contenders, f"Per-call cost, medians of one run\n{where}", calls):
        written.append(calls)
    scale = directory / "scale.png"
    luaplug = [c for c in contenders if c not in ("reference", "floor")]
    if _scale(plt, metrics, luaplug, f"Cost against the number of bundles, one run\n{where}", scale):
        written.append(scale)
    return written
