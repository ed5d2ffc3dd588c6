"""The generated host caller (``host_contracts.lua``) over a raising Python host contract, on the
reference runtime (polyplug 0.1.3) and on luaplug: the guest gets the same ``nil, text, code``.

The ``filters`` bundles of ``luaplug/testing/bundles`` (glue generated at test time), vendored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _filters import Store, build_filters

import luaplug
from luaplug.abi import ffi
from luaplug.hostcontract import HostContract, host_spec

from .adapter import ReferenceRuntime, reference_available, vendored_copy

_REASON = reference_available()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

COMMANDS = ["abc", "get:nope", "put:k=v", "get:k", "assert:k"]


def apply(dispatch: Any, arena: luaplug.CallArena, text: str) -> str:
    data = text.encode()
    buf = ffi.new("uint8_t[]", data)
    sv = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
    out = ffi.new("StringView*")
    arena.reset()
    assert dispatch(0, sv, out, arena) == 0
    return bytes(ffi.buffer(out.ptr, out.len)).decode()


def test_the_same_failure_returns_on_both(tmp_path: Path) -> None:
    root = build_filters(tmp_path)
    api = root / "api.toml"
    with ReferenceRuntime() as ref:
        store = HostContract(host_spec("host.Store@1", api), Store(), host_address=ref.host_api_address)
        assert ref.register_host_contract(store.address) == 0
        vendored = tmp_path / "vendored"
        vendored.mkdir()
        ref.load(vendored_copy(root / "upper", vendored))
        with luaplug.CallArena(1024, host=ref.host_api_address) as arena:
            theirs = [apply(ref.contract("text.Filter@1").dispatch, arena, c) for c in COMMANDS]
    with luaplug.Runtime("lupa") as rt:
        rt.provide("host.Store@1", Store(), api=api)
        rt.load(root / "upper")
        with luaplug.CallArena(1024, host=rt) as arena:
            ours = [apply(rt.contract("text.Filter@1").default.dispatch, arena, c) for c in COMMANDS]
    assert (
        theirs
        == ours
        == [
            "ABC #1",
            "error 102: host.Store@1.get: KeyError: 'nope' (HostContractCallFailed)",
            "true",
            "got v",
            "got v",
        ]
    )
