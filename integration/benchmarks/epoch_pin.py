"""Cost of a no-op epoch pin/unpin (run: python integration/benchmarks/epoch_pin.py)."""

from __future__ import annotations

import timeit

from luaplug import epoch


def main() -> None:
    c = epoch.Collector()
    n = 1_000_000
    base = min(timeit.repeat("pass", number=n, repeat=5)) / n
    guard = min(timeit.repeat("c.pin().release()", globals={"c": c}, number=n, repeat=5)) / n
    raw = min(timeit.repeat("b = c._bucket; b.append(None); b.pop()", globals={"c": c}, number=n, repeat=5)) / n
    print(f"pin()+release(): {(guard - base) * 1e9:.0f} ns   bucket append/pop: {(raw - base) * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
