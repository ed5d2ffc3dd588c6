"""The ``luaplug`` command.

Subcommands: ``backends``, ``demo``, ``new NAME --contract C@M``, ``inspect BUNDLE``,
``call BUNDLE CONTRACT FN [ARGS...]``, ``check [--strict] BUNDLE``, ``codegen --bundle
bundle.toml --out DIR`` (alias ``generate``, polyplugc's files) or ``codegen API --plugin NAME
--out DIR`` (single-file glue). ``--backend`` and ``--config`` work everywhere (``codegen`` and
``new`` run no Lua and ignore them). Exit codes: 0 ok,
1 failure, 2 usage. Errors are one line on stderr; ``-v`` adds the traceback and debug logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .abi import core_ffi as ffi
from .arena import CallArena
from .backend import discovery as _backends
from .config import Config, resolve_config
from .errors import ApiSpecError, LuaplugError
from .manifest import unregistered_provides
from .runtime import Bundle, Runtime
from .typed import ApiSpec, TypeSpec, load_api
from .typed.bundletoml import load_bundle_toml
from .typed.glue import generate_api_glue, generate_glue, write_glue
from .typed.luagen import write_lua
from .typed.types import StructType, python_name

__all__ = ["main"]

_EXAMPLES = Path(__file__).resolve().parent / "examples"
_API_FILE = "api.toml"


class UsageError(Exception):
    """A bad command line (exit code 2)."""


# -- helpers ----------------------------------------------------------------------


def _runtime(args: argparse.Namespace, backend: str | None = None) -> Runtime:
    return Runtime(backend or args.backend, config=args.config_obj)


def _api_for(args: argparse.Namespace, bundle: Path, *, required: bool) -> ApiSpec | None:
    if args.api:
        return load_api(args.api)
    guess = (bundle if bundle.is_dir() else bundle.parent) / _API_FILE
    if guess.is_file():
        return load_api(guess)
    if required:
        raise UsageError(f"no --api given and no {_API_FILE} next to the bundle")
    return None


def parse_value(t: TypeSpec, text: str) -> Any:
    """A command-line word as a value of type ``t``.

    :raises ValueError: the word is not such a value
    """
    if t.kind == "string":
        return text
    if t.kind == "bytes":
        return text.encode("utf-8")
    if isinstance(t, StructType):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{t.name} is given as a JSON object ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{t.name} is given as a JSON object, not {text!r}")
        return {k: _json_field(t, k, v) for k, v in data.items()}
    if t.kind == "bool":
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a bool (true/false)")
    if t.kind == "float":
        return float(text)
    if t.kind == "enum":
        members = t.python.__members__
        if text in members:
            return members[text]
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError(f"{text!r} is not a {t.name} (valid: {', '.join(members)}, or a number)") from None
    return int(text, 0)


def _json_field(t: StructType, name: str, value: Any) -> Any:
    """A JSON field value as the struct field wants it (enum names, nested objects, text for bytes)."""
    ftype = next((f.type for f in t.fields if f.name == name), None)
    if ftype is None:
        return value  # the proxy names the unknown field
    if isinstance(ftype, StructType) and isinstance(value, dict):
        return {k: _json_field(ftype, k, v) for k, v in value.items()}
    if isinstance(value, str) and ftype.kind in ("enum", "int", "float", "bool", "bytes"):
        return parse_value(ftype, value)
    return value


def format_value(value: Any) -> str:
    """A result as the command prints it (``true``/``false``, enum names, raw strings, structs as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.IntEnum):
        return f"{value.name} ({int(value)})"
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.dumps(_plain(value), ensure_ascii=False)
    return str(value)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.IntEnum):
        return value.name
    if isinstance(value, bytes):
        return format_value(value)
    return value


def _load(rt: Runtime, bundle: Path, args: argparse.Namespace) -> Bundle:
    """Load ``bundle`` with the command line's limits (the runtime's defaults where none is given)."""
    return rt.load(
        bundle,
        untrusted=getattr(args, "untrusted", False),
        memory_limit=getattr(args, "memory_limit", None),
        instruction_limit=getattr(args, "instruction_limit", None),
    )


def describe(rt: Runtime, bundle: Path, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """What :func:`luaplug inspect <main>` reports: the manifest and the registered contracts.

    The load runs the bundle's chunk and ``polyplug_init`` (with ``args``' limits, if any).
    """
    b = _load(rt, bundle, args) if args is not None else rt.load(bundle)
    m = b.manifest
    contracts = []
    for reg in rt.registry.providers():
        if reg.bundle_id != b.id:
            continue
        count = reg.provider.function_count if reg.provider is not None else -1
        contracts.append(
            {
                "contract": f"{reg.contract_name}@{reg.major}",
                "plugin": reg.plugin_name,
                "functions": count,
                "id": f"{reg.contract_id:#018x}",
            }
        )
    return {
        "name": m.name,
        "id": f"{m.id:#018x}",
        "version": ".".join(map(str, m.version)),
        "loader": m.loader,
        "file": m.file,
        "provides": [f"{p.name}@{p.major}" for p in m.provides],
        "function_count": dict(m.function_count),
        "contracts": sorted(contracts, key=lambda c: str(c["contract"])),
        "unregistered": unregistered_provides(m, rt.registry.of_bundle(b.id)),
    }


# -- commands ---------------------------------------------------------------------


def _cmd_backends(args: argparse.Namespace) -> int:
    found = _backends.installed_backends()
    if not found:
        print("no luaplug backend is installed (pip install luaplug-lupa or luaplug-cffi)")
        return 1
    if args.backend and args.backend not in found:
        _backends.get_backend(args.backend)  # raises, saying whether the name is disabled
    for info in sorted(found.values(), key=lambda b: (-b.priority, b.name)):
        if args.backend and info.name != args.backend:
            continue
        reason = info.probe()
        if reason is None:
            version = info.engine_class()().lua_version()
            print(f"{info.name:8s} available    {version}  {info.description}")
        else:
            print(f"{info.name:8s} unavailable  {reason}  ({info.install_hint})")
    return 0


def _demo_one(backend: str, config: Config) -> None:
    print(f"== backend {backend}")
    with Runtime(backend, config=config) as rt, CallArena(256, host=rt) as arena:
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
        _demo_one(name, args.config_obj)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    api = _api_for(args, bundle, required=False)
    with _runtime(args) as rt:
        info = describe(rt, bundle, args)
        print(f"bundle    {info['name']}  id {info['id']}  version {info['version']}")
        print(f"loader    {info['loader']}  file {info['file']}")
        print(f"backend   {rt.backend_name}  {rt.engine.lua_version()}")
        if info["provides"]:
            print(f"provides  {', '.join(info['provides'])}")
        for key, n in info["function_count"].items():
            print(f"declares  {key}: {n} functions")
        for c in info["contracts"]:
            print(f"contract  {c['contract']}  plugin {c['plugin']}  functions {c['functions']}  id {c['id']}")
            spec = None
            if api is not None:
                try:
                    spec = api.contract(c["contract"])
                except LuaplugError:
                    spec = None
            if spec is not None:
                for i, fn in enumerate(spec.functions):
                    print(f"    {i:3d}  {fn.signature()}")
    return 0


def _cmd_call(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    api = _api_for(args, bundle, required=True)
    assert api is not None
    spec = api.contract(args.contract)
    try:
        _, fn = spec.function_named(args.function)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    if len(args.args) != len(fn.params):
        raise UsageError(f"{fn.signature()} takes {len(fn.params)} argument(s), {len(args.args)} given")
    values = []
    for p, word in zip(fn.params, args.args, strict=True):
        try:
            values.append(parse_value(p.type, word))
        except ValueError as exc:
            raise UsageError(f"argument {p.name} ({p.type.name}): {exc}") from None
    with _runtime(args) as rt:
        _load(rt, bundle, args)
        with rt.bind(api, spec.key, instance=not args.default) as proxy:
            method = getattr(proxy, python_name(fn.name))
            try:
                result = method(*values)
            except (TypeError, OverflowError) as exc:  # raised before the call: a bad argument
                raise UsageError(str(exc)) from None
    if fn.returns is not None:
        print(format_value(result))
    return 0


class _SkipAuthoringReports(logging.Filter):
    """Drops the records ``luaplug check`` prints as its own ``warning`` lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "luaplug_authoring", False)


_AUTHORING_LOGGERS = ("luaplug.manifest", "luaplug.typed", "luaplug.runtime")


def _cmd_check(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    names = [args.backend] if args.backend else _backends.available_backends()
    if not names:
        print("no luaplug backend is available")
        return 1
    quiet = _SkipAuthoringReports()
    for logger in _AUTHORING_LOGGERS:
        logging.getLogger(logger).addFilter(quiet)
    try:
        warnings = _authoring_warnings(args, bundle)
        results: dict[str, dict[str, Any] | str] = {}
        for name in names:
            try:
                with _runtime(args, name) as rt:
                    results[name] = describe(rt, bundle, args)
            except LuaplugError as exc:
                results[name] = f"load failed: {exc}"
    finally:
        for logger in _AUTHORING_LOGGERS:
            logging.getLogger(logger).removeFilter(quiet)
    for res in results.values():
        if not isinstance(res, str):
            warnings += [w for w in res["unregistered"] if w not in warnings]
    for text in warnings:
        print(f"warning  {text}")
    ok = not (args.strict and warnings)
    for name, res in results.items():
        if isinstance(res, str):
            ok = False
            print(f"{name:8s} {res.splitlines()[0]}")
        else:
            summary = ", ".join(f"{c['contract']} ({c['functions']} functions)" for c in res["contracts"])
            print(f"{name:8s} loaded {res['name']}: {summary}")
    failures = {r for r in results.values() if isinstance(r, str)}
    if len(failures) > 1:
        print("differs  the load errors are not the same text")
    loaded = {n: r for n, r in results.items() if not isinstance(r, str)}
    if len(loaded) > 1:
        first_name, first = next(iter(loaded.items()))
        for name, res in loaded.items():
            for key in first:
                if res[key] != first[key]:
                    ok = False
                    print(f"differs  {key}: {first_name} {first[key]!r} vs {name} {res[key]!r}")
    if args.strict and warnings:
        print(f"strict   {len(warnings)} warning(s) count as errors")
    elif ok:
        print(f"same on {', '.join(names)}" if len(names) > 1 else f"ok on {names[0]} (the only backend checked)")
    return 0 if ok else 1


def _authoring_warnings(args: argparse.Namespace, bundle: Path) -> list[str]:
    """The unknown keys of the bundle's manifest and api.toml (``--api``, else ``BUNDLE/api.toml``)."""
    from .manifest import load as load_manifest

    out: list[str] = []
    try:
        out += load_manifest(bundle).warnings
    except LuaplugError:
        return out  # every backend's load reports the manifest error
    try:
        api = _api_for(args, bundle, required=False)
    except ApiSpecError as exc:  # the bundle itself may still load: reported, not fatal
        return [*out, f"invalid api.toml: {exc}"]
    if api is not None:
        out += api.warnings
    return out


def _cmd_codegen(args: argparse.Namespace) -> int:
    if args.lang not in ("lua", "python"):
        raise UsageError(f"unsupported --lang {args.lang!r} (supported: lua, python)")
    api_path = args.api or args.api_option
    if args.api and args.api_option:
        raise UsageError("give the api.toml once (API_TOML or --api)")
    if args.lang == "python":
        # the typed module for Python hosts: OUT/contracts.py (luaplug.typed.pygen)
        from .typed.pygen import write_python

        if not api_path or args.bundle or args.plugin is not None or args.contract:
            raise UsageError("--lang python takes an api.toml alone (API_TOML or --api)")
        print(f"wrote {write_python(load_api(api_path), args.out)}")
        return 0
    if args.bundle and api_path:
        raise UsageError("give --bundle or an api.toml, not both")
    if args.plugin is not None:
        # luaplug's single-file glue: contracts.lua with the author's own polyplug_init
        if not api_path:
            raise UsageError("--plugin needs an api.toml (API_TOML or --api)")
        written = [write_lua(load_api(api_path), args.plugin, args.out, args.contract or None)]
    elif args.contract:
        raise UsageError("--contract selects contracts for --plugin glue; with --bundle, [[plugin]] implements does")
    elif args.bundle:
        written = write_glue(generate_glue(load_bundle_toml(args.bundle)), args.out)
    elif api_path:
        written = write_glue(generate_api_glue(load_api(api_path)), args.out)
    else:
        raise UsageError("give --bundle BUNDLE_TOML (or an api.toml)")
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_new(args: argparse.Namespace) -> int:
    from .scaffold import new_bundle

    out = args.out if args.out is not None else args.name
    for path in new_bundle(args.name, args.contract, out, args.api):
        print(f"wrote {path}")
    print(f"load it with: luaplug inspect {out}")
    return 0


# -- the parser -------------------------------------------------------------------


def _count(text: str) -> int:
    """A non-negative integer option value (any Python literal base)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="tracebacks, debug")
    common.add_argument("--backend", default=argparse.SUPPRESS, metavar="NAME", help="use this backend")
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH", help="luaplug.toml / pyproject.toml")
    parser = argparse.ArgumentParser(prog="luaplug", description="load and call Lua (LuaJIT) plugin bundles")
    parser.add_argument("--version", action="version", version=f"luaplug {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--backend", metavar="NAME", help="use this backend (default: configuration, best available)")
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: found from the current dir up)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every command that runs bundle code takes the limits of Runtime.load.
    limits = argparse.ArgumentParser(add_help=False)
    limits.add_argument(
        "--untrusted", action="store_true", help="run the bundle in untrusted mode (no os, io, debug, C modules...)"
    )
    limits.add_argument("--memory-limit", type=_count, metavar="BYTES", help="memory cap of the bundle VM (0: none)")
    limits.add_argument(
        "--instruction-limit", type=_count, metavar="N", help="VM instructions per entry into the bundle (0: none)"
    )

    def add(
        name: str,
        help: str,
        func: Any,
        *,
        runs_bundle: bool = False,
        aliases: Sequence[str] = (),
        examples: Sequence[str] = (),
    ) -> argparse.ArgumentParser:
        parents = [common, limits] if runs_bundle else [common]
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            parents=parents,
            aliases=list(aliases),
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    bundle_help = "the bundle: its directory (holding manifest.toml), or a file in it"
    add(
        "backends",
        "list installed backends: availability, why not, LuaJIT version",
        _cmd_backends,
        examples=["luaplug backends", "luaplug backends --backend cffi"],
    )
    add(
        "demo",
        "load the example bundles and call them on every available backend",
        _cmd_demo,
        examples=["luaplug demo", "luaplug demo --backend lupa"],
    )
    p = add(
        "new",
        "write a new bundle that loads as written (with typed glue when an api.toml is given)",
        _cmd_new,
        examples=[
            "luaplug new upper --contract text.Filter@1 --out plugins/upper",
            "luaplug new upper --contract text.Filter@1 --api api.toml --out plugins/upper",
        ],
    )
    p.add_argument("name", metavar="NAME", help="the bundle name (also its plugin name)")
    p.add_argument("--contract", required=True, metavar="NAME@MAJOR", help="the guest contract it provides")
    p.add_argument("--api", metavar="API_TOML", help="declares the contract: write glue and one method per function")
    p.add_argument("-o", "--out", metavar="DIR", help="the bundle directory to write (default: ./NAME)")
    p = add(
        "inspect",
        "load a bundle (running its code and polyplug_init) and show its manifest and contracts",
        _cmd_inspect,
        runs_bundle=True,
        examples=["luaplug inspect plugins/upper", "luaplug inspect plugins/upper --api api.toml"],
    )
    p.add_argument("bundle", metavar="BUNDLE", help=bundle_help)
    p.add_argument("--api", metavar="API_TOML", help="show function signatures (default: BUNDLE/api.toml if any)")
    p = add(
        "call",
        "make one typed call and print the result",
        _cmd_call,
        runs_bundle=True,
        examples=[
            "luaplug call plugins/upper text.Filter@1 apply 'hello'",
            "luaplug call plugins/calc typed.Calc@1 next_color Red --api api.toml",
        ],
    )
    p.add_argument("bundle", metavar="BUNDLE", help=bundle_help)
    p.add_argument("contract", metavar="CONTRACT", help="name@major (or the name alone)")
    p.add_argument("function", metavar="FN", help="the function's name as the api.toml declares it")
    p.add_argument(
        "args",
        metavar="ARGS",
        nargs="*",
        help="the arguments, converted per the declared types (enums by name or number, structs as JSON)",
    )
    p.add_argument("--api", metavar="API_TOML", help="the contract declaration (default: BUNDLE/api.toml)")
    p.add_argument("--default", action="store_true", help="call the default impl instead of a fresh instance")
    p = add(
        "check",
        "load a bundle on every available backend and report differences, unknown keys and unregistered provides",
        _cmd_check,
        runs_bundle=True,
        examples=["luaplug check plugins/upper", "luaplug check --strict plugins/upper"],
    )
    p.add_argument("bundle", metavar="BUNDLE", help=bundle_help)
    p.add_argument("--api", metavar="API_TOML", help="also check this api.toml (default: BUNDLE/api.toml if any)")
    p.add_argument(
        "--strict", action="store_true", help="unknown keys and unregistered `provides` entries are errors (exit 1)"
    )
    p = add(
        "codegen",
        "generate guest glue (polyplugc's files and API, or --plugin single-file glue)",
        _cmd_codegen,
        aliases=["generate"],  # polyplugc's name for it
        examples=[
            "luaplug codegen --bundle bundle.toml --out .",
            "luaplug codegen api.toml --plugin upper --out plugins/upper",
            "luaplug codegen api.toml --lang python --out myapp  # myapp/contracts.py",
        ],
    )
    p.add_argument("api", metavar="API_TOML", nargs="?", help="an api.toml (same as --api)")
    p.add_argument("--bundle", metavar="BUNDLE_TOML", help="an authoring bundle.toml: manifest.toml + guest/*.lua")
    p.add_argument("--api", dest="api_option", metavar="API_TOML", help="an api.toml alone: guest/*.lua, no plugins")
    p.add_argument("-l", "--lang", default="lua", help="target language: lua, or python (a typed module)")
    p.add_argument("--plugin", metavar="NAME", help="luaplug's single-file glue for plugin NAME: OUT/contracts.lua")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--contract", action="append", metavar="NAME@MAJOR", help="--plugin glue: only these contracts")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 usage)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        args.config_obj = resolve_config(args.config)
        return int(args.func(args))
    except UsageError as exc:
        print(f"luaplug {args.command}: {exc}", file=sys.stderr)
        return 2
    except (LuaplugError, OSError, ValueError) as exc:
        if args.verbose:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "" if args.verbose else " (-v for details)"
        print(f"luaplug: {first}{hint}", file=sys.stderr)
        return 1
