"""Soak runner (issue 8): load/unload cycles and hot reloads on one backend, with RSS figures.

    python integration/soak.py --backend lupa --cycles 10000 --reloads 10000

Each load/unload cycle loads the greeter bundle, makes one string call through a fresh
``CallArena`` and unloads it; each reload cycle reloads the counter bundle and calls it. RSS
(``VmRSS`` from ``/proc/self/status``) is read at the start, after a warm-up (allocator pools,
interned strings and cffi/lupa caches reach their steady size there) and at the end; the
growth that matters is the one after the warm-up. ``integration/test_soak.py`` runs a reduced
version of the same code.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass, field

import luaplug
from luaplug.abi import ffi
from luaplug.epoch import Collector
from luaplug.testing import BUNDLES_DIR

BUNDLES = BUNDLES_DIR
MIB = 1024 * 1024


def rss_bytes() -> int:
    """This process's resident set size (``VmRSS`` of ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class SoakReport:
    """RSS and reclamation figures of one soak run (bytes)."""

    backend: str
    cycles: int
    reloads: int
    warmup: int
    rss_start: int = 0
    rss_warm: int = 0
    rss_after_cycles: int = 0
    rss_end: int = 0
    seconds: float = 0.0
    live_states: int = 0
    pending: int = 0
    samples: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def growth(self) -> int:
        """RSS growth after the warm-up."""
        return self.rss_end - self.rss_warm

    @property
    def per_cycle(self) -> float:
        """Growth after the warm-up per cycle (load/unload and reload cycles together)."""
        return self.growth / max(self.cycles + self.reloads, 1)

    def lines(self) -> list[str]:
        """The report as text."""
        out = [
            f"backend {self.backend}: {self.cycles} load/unload cycles + {self.reloads} reloads "
            f"(after {self.warmup} + {self.warmup} warm-up) in {self.seconds:.1f} s",
            f"  RSS start         {self.rss_start / MIB:8.1f} MiB",
            f"  RSS after warm-up {self.rss_warm / MIB:8.1f} MiB",
            f"  RSS after cycles  {self.rss_after_cycles / MIB:8.1f} MiB",
            f"  RSS end           {self.rss_end / MIB:8.1f} MiB",
            f"  growth after warm-up {self.growth / MIB:+.2f} MiB, {self.per_cycle:+.1f} bytes per cycle",
            f"  live_states {self.live_states}, pending reclamations {self.pending}",
        ]
        out += [f"    {what:>7} {n:6d}: {rss / MIB:8.1f} MiB" for what, n, rss in self.samples]
        return out


def _settle(rt: luaplug.Runtime) -> int:
    """Collect Python garbage and deferred VMs; the RSS afterwards."""
    gc.collect()
    rt.collector.collect()
    return rss_bytes()


def _load_unload(rt: luaplug.Runtime, arg: object, out: object) -> None:
    """One cycle: load greeter, one string call through a fresh arena, unload."""
    rt.load(BUNDLES / "greeter")
    with luaplug.CallArena(64, host=rt) as arena:
        rt.contract("iso.Greeter@1").default.call(0, arg, out, arena)
    rt.unload("greeter")


def _reload(rt: luaplug.Runtime, out: object) -> None:
    """One reload of counter and one call into the new VM."""
    rt.reload("counter")
    rt.contract("iso.Counter@1").default.call(0, 0, out)


def soak(backend: str, cycles: int, reloads: int, warmup: int = 200, sample_every: int = 0) -> SoakReport:
    """Run the soak on ``backend`` in a runtime of its own (own epoch collector).

    :param sample_every: also record RSS every that many cycles (0: never)
    """
    report = SoakReport(backend, cycles, reloads, warmup)
    start = time.monotonic()
    with luaplug.Runtime(backend, hot_reload=True, collector=Collector()) as rt:
        report.rss_start = _settle(rt)
        name_buf = ffi.new("uint8_t[]", b"soak")
        arg = ffi.new("StringView*", {"ptr": name_buf, "len": 4})
        sv_out, i64 = ffi.new("StringView*"), ffi.new("int64_t*")
        rt.load(BUNDLES / "counter")
        for _ in range(warmup):
            _load_unload(rt, arg, sv_out)
            _reload(rt, i64)
        report.rss_warm = _settle(rt)
        for i in range(1, cycles + 1):
            _load_unload(rt, arg, sv_out)
            if sample_every and i % sample_every == 0:
                report.samples.append(("cycles", i, _settle(rt)))
        report.rss_after_cycles = _settle(rt)
        for i in range(1, reloads + 1):
            _reload(rt, i64)
            if sample_every and i % sample_every == 0:
                report.samples.append(("reloads", i, _settle(rt)))
        assert i64[0] == 1, "a reload must start from a fresh VM"
        rt.unload("counter")
        report.rss_end = _settle(rt)
        report.live_states = rt.loader.live_states
        report.pending = rt.collector.pending
    report.seconds = time.monotonic() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", default=None, help="backend name (default: the best available)")
    parser.add_argument("--cycles", type=int, default=10_000, help="load/unload cycles")
    parser.add_argument("--reloads", type=int, default=10_000, help="hot reloads")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up cycles of each kind")
    parser.add_argument("--sample-every", type=int, default=2_000, help="RSS sample interval (0: off)")
    args = parser.parse_args(argv)
    backend = args.backend or luaplug.available_backends()[0]
    report = soak(backend, args.cycles, args.reloads, args.warmup, args.sample_every)
    print("\n".join(report.lines()))
    return 0 if report.live_states == 0 and report.pending == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
