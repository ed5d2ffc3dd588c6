"""Shared pieces of the benchmark runner: paths, bundle copies, timing loops, RSS, the floor's Lua.

Everything here is import-light (no luaplug backend, no polyplug), so the subprocess
workers can use it without skewing what they measure.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Final

from luaplug.testing import BUNDLES_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tox envs run 3.11
    import tomli as tomllib

HERE: Final = Path(__file__).resolve().parent
INTEGRATION: Final = HERE.parent
SUITE_BUNDLES: Final = BUNDLES_DIR
BENCH_BUNDLES: Final = HERE / "bundles"
#: The typed declarations of the adder and greeter bundles (the typed-* cases).
TYPED_API: Final = BENCH_BUNDLES / "api.toml"

#: ``[function_count]`` entries for manifests that lack the table (the reference refuses them).
KNOWN_FUNCTION_COUNTS: Final[dict[str, int]] = {
    "iso.Adder@1": 3,
    "iso.Greeter@1": 2,
    "bench.SdkGreeter@1": 1,
    "iso.Echo@1": 1,
    "bench.PeerLoop@1": 1,
    "bench.Spin@1": 1,
}

#: C declarations the runner uses (luaplug's ABI ffi already knows ``StringView``).
PAIR: Final = "struct { int32_t a; int32_t b; } *"
SPIN_ARGS: Final = "struct { int32_t n; } *"
PEER_ARGS: Final = "struct { int32_t n; int32_t mode; } *"
PEER_RESULT: Final = "struct { double ns; int64_t sum; int32_t code; int32_t pad; } *"

#: The peer loop's modes (bundles/peerloop/main.lua).
PEER_CACHED: Final = 0
PEER_UNCACHED: Final = 1
PEER_IN_VM: Final = 2
PEER_GUEST_SIDE: Final = 3

#: Loads per window of the scale case (the first and the last of the N, the paired window).
PAIRED: Final = 100


def add_integration_to_path() -> None:
    """Make ``reference.adapter`` importable (``integration/`` on ``sys.path``)."""
    path = str(INTEGRATION)
    if path not in sys.path:
        sys.path.insert(0, path)


# -- bundle copies ---------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"manifest value {value!r} cannot be written back")


def _manifest_text(data: dict[str, Any]) -> str:
    """TOML for a manifest: top-level scalars and lists first, then the tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[{key}]"] + [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def bundle_copy(
    src: Path, root: Path, name: str | None = None, renames: dict[str, str] | None = None, sdk: Path | None = None
) -> Path:
    """A copy of bundle ``src`` as ``root/<name>`` that both luaplug and the reference load.

    :param name: the copy's bundle name (default: the original's); its ``id`` follows
    :param renames: contract names to change (``{"iso.Adder": "bench.Adder7"}``), in the
        manifest and in every quoted occurrence in ``main.lua``
    :param sdk: the guest SDK directory to vendor into the copy (the reference ships none,
        spec section 15); files of the bundle win
    :returns: the copy's directory

    The manifest gets a ``[function_count]`` table when it lacks one (from
    :data:`KNOWN_FUNCTION_COUNTS`), which the reference requires.
    """
    from luaplug.ids import bundle_id  # the ids module only: no backend is imported

    with (src / "manifest.toml").open("rb") as f:
        manifest: dict[str, Any] = tomllib.load(f)
    name = name or str(manifest["name"])
    renames = renames or {}
    dest = root / name
    shutil.copytree(src, dest)

    def rename(contract: str) -> str:
        base, sep, major = contract.rpartition("@")
        return f"{renames.get(base, base)}{sep}{major}"

    provides = [rename(c) for c in manifest.get("provides", [])]
    counts = manifest.get("function_count") or {c: KNOWN_FUNCTION_COUNTS[c] for c in manifest.get("provides", [])}
    manifest.update(name=name, id=bundle_id(name), provides=provides)
    manifest["function_count"] = {rename(c): int(n) for c, n in counts.items()}
    (dest / "manifest.toml").write_text(_manifest_text(manifest), "utf-8")
    if renames:
        main = dest / str(manifest.get("file", "main.lua"))
        text = main.read_text("utf-8")
        for old, new in renames.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        main.write_text(text, "utf-8")
    if sdk is not None:
        for module in sdk.glob("*.lua"):
            if not (dest / module.name).exists():
                shutil.copyfile(module, dest / module.name)
    return dest


# -- measuring ---------------------------------------------------------------------------------


def rss_kib() -> int | None:
    """The resident set size of this process in KiB (Linux ``/proc``), or ``None``."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def empty_loop(n: int) -> int:
    """Nanoseconds of ``n`` turns of an empty loop (the baseline the call loops subtract)."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        pass
    return perf_counter_ns() - t0


# The call loops: one per call shape, every argument a local, so the loop body is the call.


def loop0(n: int, f: Any) -> int:
    """``n`` calls ``f()``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f()
    return perf_counter_ns() - t0


def loop1(n: int, f: Any, a: Any) -> int:
    """``n`` calls ``f(a)``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(a)
    return perf_counter_ns() - t0


def loop2(n: int, f: Any, a: Any, b: Any) -> int:
    """``n`` calls ``f(a, b)``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(a, b)
    return perf_counter_ns() - t0


def loop3(n: int, f: Any, a: Any, b: Any, c: Any) -> int:
    """``n`` calls ``f(a, b, c)``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(a, b, c)
    return perf_counter_ns() - t0


def loop4_reset(n: int, reset: Any, f: Any, a: Any, b: Any, c: Any, d: Any) -> int:
    """``n`` times ``reset(); f(a, b, c, d)``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        reset()
        f(a, b, c, d)
    return perf_counter_ns() - t0


def loop5(n: int, f: Any, a: Any, b: Any, c: Any, d: Any, e: Any) -> int:
    """``n`` calls ``f(a, b, c, d, e)``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(a, b, c, d, e)
    return perf_counter_ns() - t0


def loop5_reset(n: int, reset: Any, f: Any, a: Any, b: Any, c: Any, d: Any, e: Any) -> int:
    """``n`` times ``reset(); f(a, b, c, d, e)``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        reset()
        f(a, b, c, d, e)
    return perf_counter_ns() - t0


def loop7(n: int, f: Any, a: Any, b: Any, c: Any, d: Any, e: Any, g: Any, h: Any) -> int:
    """``n`` calls ``f(a, b, c, d, e, g, h)``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        f(a, b, c, d, e, g, h)
    return perf_counter_ns() - t0


def loop7_reset(n: int, reset: Any, f: Any, a: Any, b: Any, c: Any, d: Any, e: Any, g: Any, h: Any) -> int:
    """``n`` times ``reset(); f(a, b, c, d, e, g, h)``; elapsed ns."""
    r = range(n)
    t0 = perf_counter_ns()
    for _ in r:
        reset()
        f(a, b, c, d, e, g, h)
    return perf_counter_ns() - t0


# -- the floor: plain lupa ------------------------------------------------------------------------

#: Lua run once per floor runtime: ``load_bundle(source, name)`` runs a bundle's chunk and
#: ``polyplug_init`` the way a loader does and returns its first contract's functions and a
#: factory-made impl; ``bump`` is the cheapest ``arena_alloc`` (an inline ``CallArena`` bump).
FLOOR_PRELUDE: Final = """
local ffi = require("ffi")
local arena_p = ffi.typeof("struct { uint8_t* cur; uint8_t* stop; uint8_t* base; const void* host; void* first; } *")
local uintptr_t = ffi.typeof("uintptr_t")
local function bump(size, arena)
  local a = ffi.cast(arena_p, arena)
  local p = a.cur
  if p + size > a.stop then return 0 end
  a.cur = p + size
  return tonumber(ffi.cast(uintptr_t, p))
end
local function load_bundle(source, name)
  local chunk = assert(loadstring(source, name))
  chunk()
  local regs = polyplug_init(0, 0)
  polyplug_init = nil
  local _, entry = next(regs)
  return entry.functions, entry.factory(0)
end
return load_bundle, bump
"""


def floor_runtime(sdk: Path) -> tuple[Any, Any, Any]:
    """A fresh ``lupa.luajit21.LuaRuntime()`` with the SDK on ``package.path``.

    :returns: ``(runtime, load_bundle, bump)`` (see :data:`FLOOR_PRELUDE`)
    """
    import lupa.luajit21

    lua = lupa.luajit21.LuaRuntime()
    lua.globals().package.path = f"{sdk}/?.lua;" + str(lua.globals().package.path)
    load_bundle, bump = lua.execute(FLOOR_PRELUDE)
    return lua, load_bundle, bump


def floor_load(sdk: Path, bundle_dir: Path) -> tuple[Any, Any, Any]:
    """Load a bundle the cheapest way: a new LuaRuntime, its chunk, ``polyplug_init``.

    :returns: ``(runtime, functions, impl)``
    """
    lua, load_bundle, _bump = floor_runtime(sdk)
    source = (bundle_dir / "main.lua").read_text("utf-8")
    functions, impl = load_bundle(source, "main.lua")
    return lua, functions, impl


# -- the scale case's bundles ------------------------------------------------------------------

_SCALE_MAIN = """\
function polyplug_init(_host, _ctx)
  local c = {{ factory = function() return {{}} end, functions = {{ [0] = function() end }} }}
  return {{ ["{contract}"] = c }}, {{ code = 0 }}
end
"""


def scale_bundles(root: Path, count: int) -> Path:
    """``root/warm`` and ``count`` tiny distinct bundles ``root/s00000`` .. (bundle ``sNNNNN``
    provides ``scale.SN@1``, one no-op function); returns ``root``."""
    from luaplug.ids import bundle_id

    root.mkdir(parents=True, exist_ok=True)
    for i in range(-1, count):
        name = "warm" if i < 0 else f"s{i:05d}"
        contract = "scale.Warm" if i < 0 else f"scale.S{i}"
        d = root / name
        if d.exists():
            continue
        d.mkdir()
        manifest = {
            "name": name,
            "id": bundle_id(name),
            "loader": "lua",
            "file": "main.lua",
            "version": "1.0.0",
            "provides": [f"{contract}@1"],
            "function_count": {f"{contract}@1": 1},
        }
        (d / "manifest.toml").write_text(_manifest_text(manifest), "utf-8")
        (d / "main.lua").write_text(_SCALE_MAIN.format(contract=contract), "utf-8")
    return root
