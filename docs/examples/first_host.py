"""The tutorial's host: load the bundle, bind its contract, call it."""

from __future__ import annotations

import sys
from pathlib import Path

import luaplug

HERE = Path(__file__).resolve().parent


def main(backend: str | None = None) -> None:
    with luaplug.Runtime(backend) as rt:  # None: LUAPLUG_BACKEND, luaplug.toml, or the best available
        bundle = rt.load(HERE / "hello")
        print(f"loaded {bundle.name} on {rt.backend_name}: {', '.join(rt.contracts())}")

        with rt.bind(HERE / "hello" / "api.toml", "hello.Greeter@1") as greeter:
            print(greeter.greet("world"))
            print(greeter.greet("Lua"))
            print(f"greeted {greeter.greeted()} times")

        try:
            with rt.bind(HERE / "hello" / "api.toml", "hello.Greeter@1") as greeter:
                greeter.greet(42)  # wrong type: refused before anything runs
        except TypeError as exc:
            print(f"TypeError: {exc}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
