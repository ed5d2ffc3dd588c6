"""The garbage collector around a load: loading may collect less often, but what a bundle
sees afterwards is LuaJIT's usual collector, and garbage made while loading stays bounded."""

from __future__ import annotations

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.backend import CAP_MEMORY_LIMIT

MiB = 1024 * 1024

# Records, while its chunk runs, the collector's pause and the largest heap seen while
# it makes `GARBAGE` KiB of short-lived strings; fn 0 writes the pause now (percent),
# fn 1 the chunk-time pause, fn 2 the chunk-time peak heap (KiB).
PROBE = """
local ffi = require("ffi")
local function pause()
  local p = collectgarbage("setpause", 100)
  collectgarbage("setpause", p)
  return p
end
local at_load = pause()
local peak, ring = 0, {}
for i = 1, GARBAGE do
  ring[i % 8] = string.rep("g", 1024) .. i  -- stored: the JIT cannot drop the allocation
  if i % 64 == 0 then peak = math.max(peak, collectgarbage("count")) end
end
OWN_PAUSE
local function put(out, v) ffi.cast("int64_t*", out)[0] = v end
function polyplug_init()
  return { ["gc.Probe"] = { factory = function() return {} end, functions = {
    [0] = function(_, _, out) put(out, pause()) end,
    [1] = function(_, _, out) put(out, at_load) end,
    [2] = function(_, _, out) put(out, math.floor(peak)) end,
  } } }, { code = 0 }
end
"""


def probe(rt: luaplug.Runtime, *, garbage: int = 0, own_pause: int | None = None, **load: object) -> list[int]:
    """Load PROBE and read its three figures."""
    src = PROBE.replace("GARBAGE", str(garbage)).replace(
        "OWN_PAUSE", "" if own_pause is None else f'collectgarbage("setpause", {own_pause})'
    )
    rt.load_code(src, "probe", **load)  # type: ignore[arg-type]
    inst = rt.contract("gc.Probe@1").default
    out = ffi.new("int64_t*")
    figures = []
    for fn in range(3):
        inst.call(fn, 0, out)
        figures.append(int(out[0]))
    rt.unload("probe")
    return figures


def test_a_loaded_bundle_has_the_usual_pause(backend: str) -> None:
    with luaplug.Runtime(backend) as rt:
        now, _, _ = probe(rt)
    assert now == 200  # LuaJIT's default


@pytest.mark.requires(CAP_MEMORY_LIMIT)
def test_a_capped_bundle_has_the_usual_pause(backend: str) -> None:
    with luaplug.Runtime(backend) as rt:
        capped_now, capped_at_load, _ = probe(rt, memory_limit=64 * MiB)
    assert capped_now == 200
    assert capped_at_load == 200  # a capped state collects as usual even while loading


def test_a_pause_the_bundle_chose_while_loading_is_kept(backend: str) -> None:
    with luaplug.Runtime(backend) as rt:
        now, _, _ = probe(rt, own_pause=150)
    assert now == 150


def test_garbage_made_while_loading_is_collected(backend: str) -> None:
    with luaplug.Runtime(backend) as rt:
        _, _, peak_kib = probe(rt, garbage=64 * 1024)  # 64 MiB of garbage in 1 KiB strings
    assert 0 < peak_kib < 16 * 1024
