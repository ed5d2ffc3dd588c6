"""Cost of a typed ``add(2, 3)`` through ``Runtime.bind`` on every available backend.

Run: ``python integration/benchmarks/typed_add.py`` (in a tox env with both backends).
Prints the per-call time of the typed proxy next to the raw ``Instance.call`` it wraps.
"""

from __future__ import annotations

import timeit

import luaplug
from luaplug.abi import ffi
from luaplug.testing import BUNDLES_DIR

BUNDLE = BUNDLES_DIR / "typed_calc"


def per_call(fn: object, n: int = 200_000) -> float:
    """Best of 7 runs, in nanoseconds per call."""
    return min(timeit.repeat(fn, number=n, repeat=7)) / n * 1e9  # type: ignore[arg-type]


def measure(rt: luaplug.Runtime) -> str:
    """One line of figures for the runtime's backend."""
    with rt.bind(BUNDLE / "api.toml", "typed.Calc@1") as calc, luaplug.CallArena(256, host=rt) as arena:
        args = ffi.new("struct { int32_t a; int32_t b; } *", {"a": 2, "b": 3})
        out = ffi.new("int32_t*")
        a, o = int(ffi.cast("uintptr_t", args)), int(ffi.cast("uintptr_t", out))
        raw = calc.instance.call
        add, greet, noop = calc.add, calc.greet, calc.noop
        return (
            f"{rt.backend_name:5s} typed add(2, 3): {per_call(lambda: add(2, 3)):5.0f} ns   "
            f"raw Instance.call: {per_call(lambda: raw(0, a, o, arena)):5.0f} ns   "
            f"typed noop(): {per_call(noop):5.0f} ns   "
            f"typed greet('world'): {per_call(lambda: greet('world')):5.0f} ns"
        )


def main() -> None:
    for backend in luaplug.available_backends():
        with luaplug.Runtime(backend, config=luaplug.Config()) as rt:
            rt.load(BUNDLE)
            print(measure(rt))


if __name__ == "__main__":
    main()
