"""A reduced soak (issue 8; the full one is ``python integration/soak.py``): 1,500 load/unload
cycles and 1,500 reloads per backend keep RSS bounded and reclaim every VM (spec §10: "A
load/unload loop must keep memory bounded").

The bound: a bundle VM costs about 100 KiB of RSS (spec §15 measured 120 KiB on the reference;
here, keeping every superseded VM alive instead of reclaiming it makes this run grow by about
300 MiB on both backends), so a leak of even a tenth of a VM per cycle would add some 30 MiB.
A leak-free run stays within about 1 MiB after the warm-up (allocator fragmentation, Python
caches). 32 MiB lies far above that noise and an order of magnitude below a VM leak.
"""

from __future__ import annotations

from soak import MIB, soak

BOUND = 32 * MIB


def test_load_unload_and_reload_cycles_keep_rss_bounded(backend: str) -> None:
    report = soak(backend, cycles=1500, reloads=1500, warmup=200)
    print("\n".join(report.lines()))
    assert report.live_states == 0
    assert report.pending == 0
    assert report.growth < BOUND, f"RSS grew by {report.growth / MIB:.1f} MiB after the warm-up"
