"""The ``luaplug`` command: ``backends`` and ``demo`` (exit codes 0 ok, 1 failure, 2 usage)."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import backends as _backends
from .abi import ffi
from .arena import CallArena
from .errors import LuaplugError
from .runtime import Runtime

__all__ = ["main"]

_EXAMPLES = Path(__file__).resolve().parent / "examples"


def _cmd_backends(args: argparse.Namespace) -> int:
    found = _backends.installed_backends()
    if not found:
        print("no luaplug backend is installed (pip install luaplug-lupa or luaplug-cffi)")
        return 1
    for info in sorted(found.values(), key=lambda b: (-b.priority, b.name)):
        reason = info.probe()
        if reason is None:
            version = info.engine_class()().lua_version()
            print(f"{info.name:8s} available    {version}  {info.description}")
        else:
            print(f"{info.name:8s} unavailable  {reason}  ({info.install_hint})")
    return 0


def _demo_one(backend: str) -> None:
    print(f"== backend {backend}")
    with Runtime(backend) as rt, CallArena(256, host=rt) as arena:
        for bundle in sorted(p for p in _EXAMPLES.iterdir() if (p / "manifest.toml").is_file()):
            b = rt.load(bundle)
            print(f"   loaded {b.name}: {', '.join(rt.contracts())}")
        counter = rt.contract("demo.Counter@1").create_instance()
        out = ffi.new("int64_t*")
        for _ in range(3):
            counter.call(0, out=out)
        counter.destroy()
        print(f"   demo.Counter inc x3 -> {out[0]}")
        name = b"world"
        buf = ffi.new("char[]", name)
        sv_in = ffi.new("StringView*", {"ptr": ffi.cast("const uint8_t*", buf), "len": len(name)})
        sv_out = ffi.new("StringView*")
        rt.contract("demo.Greeter@1").default.call(0, args=sv_in, out=sv_out, arena=arena)
        text = ffi.string(ffi.cast("char*", sv_out.ptr), sv_out.len).decode()
        print(f"   demo.Greeter greet('world') -> {text!r}")


def _cmd_demo(args: argparse.Namespace) -> int:
    names = [args.backend] if args.backend else _backends.available_backends()
    if not names:
        print("no luaplug backend is available; installed:", ", ".join(_backends.installed_backends()) or "none")
        return 1
    for name in names:
        _demo_one(name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="luaplug", description="luaplug command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backends", help="list installed backends and their availability")
    p.set_defaults(func=_cmd_backends)
    p = sub.add_parser("demo", help="load the example bundles and call them on every available backend")
    p.add_argument("--backend", help="only this backend")
    p.set_defaults(func=_cmd_demo)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except LuaplugError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"luaplug: {exc}", file=sys.stderr)
        return 1
