"""The guest SDK helpers side by side: ``luaplug/testing/bundles/sdktext`` (polyplugc 0.1.3-style glue
calling ``polyplug_abi``'s helpers on StringViews) with luaplug's SDK vendored, on the reference
runtime and on luaplug, gives the same bytes for every call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.testing import BUNDLES_DIR
from luaplug.testing._cdata import text_of

from .adapter import ReferenceRuntime, reference_available, vendored_copy

BUNDLES = BUNDLES_DIR

_REASON = reference_available()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

# (fn_id, text, arg): starts_with 0, ends_with 1, strip_prefix 2, split 3, split_default 4,
# to_str_guard 5, copy_via_host 6, guest_id 8 (7, log, writes to each host's own log sink)
CALLS = [
    *((fn, text, arg) for fn in (0, 1, 2) for text, arg in (
        (b"DECODED:a|b|1", b"DECODED:"), (b"a|b|1", b"DECODED:"), (b"abc", b""), (b"", b"x"),
        (b"report.lua", b".lua"), (b"\xff\xfe", b"\xff"), (b"a%b", b"a%"))),
    *((3, text, arg) for text, arg in (
        (b"name,value,42", b","), (b"a,,b,", b","), (b"a.b%c", b"."), (b"a::b", b"::"), (b"", b","),
        (b"abc", b""), (b"\xff,\x01", b","))),
    (4, b"a b  c", b""), (4, b"", b""),
    (5, b"abc,d", b""),
    (6, b"through the host", b""), (6, b"", b""),
    (8, b"pipeline.Decoder", b"1"), (8, b"iso.Counter", b"3"),
]  # fmt: skip


def _run(dispatch: Any, arena_host: Any) -> list[tuple[int, int, bytes]]:
    results = []
    for fn_id, text, arg in CALLS:
        keep = []
        args = ffi.new("StringView[2]")
        for i, data in enumerate((text, arg)):
            buf = ffi.new("uint8_t[]", data or b"\0")
            keep.append(buf)
            args[i].ptr, args[i].len = buf, len(data)
        out = ffi.new("StringView*")
        with luaplug.CallArena(512, host=arena_host) as arena:
            code = dispatch(fn_id, args, out, arena)
            results.append((fn_id, code, text_of(out) if out.len else b""))
    return results


def test_sdk_helpers_answer_alike(tmp_path: Path) -> None:
    with ReferenceRuntime() as ref:
        ref.load(vendored_copy(BUNDLES / "sdktext", tmp_path))
        contract = ref.contract("iso.SdkText@1")
        reference = _run(lambda f, a, o, ar: contract.dispatch(f, a, o, ar), ref.host_api_address)
    assert all(code == 0 for _, code, _ in reference), reference
    assert (2, 0, b"a|b|1") in reference  # 0.1.3's strip_prefix keeps a text without the prefix
    with luaplug.Runtime(luaplug.available_backends()[0]) as rt:
        rt.load(BUNDLES / "sdktext")
        default = rt.contract("iso.SdkText@1").default
        ours = _run(lambda f, a, o, ar: default.dispatch(f, a, o, ar), rt)
    assert ours == reference
