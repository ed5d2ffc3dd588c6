"""HostApi bundle operations called by guests, on the reference runtime (polyplug 0.1.3) and on
luaplug side by side: the same ``hostops`` bundle (``luaplug/testing/bundles/hostops``), vendored
(spec §15), runs the same commands on both.

Where the reference deviates from the spec or from luaplug, the test says which (strict
``xfail`` for a reference deviation from the spec, an explicit two-sided assertion for a
difference luaplug makes on purpose); docs/differences.md lists them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _hostops import Reply, ops_bundle, parse

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.ids import bundle_id, guest_contract_id
from luaplug.testing import BUNDLES_DIR

from .adapter import ReferenceRuntime, reference_available, vendored_copy

BUNDLES = BUNDLES_DIR
_REASON = reference_available()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

HOSTOPS = "ops.HostOps@1"
PEER = "ops.Peer@1"
ECHO_ID = guest_contract_id("iso.Echo", 1)
OPS_ID = bundle_id("hostops")

LISTS_UNLOADED = "the reference's list_bundles keeps listing a bundle after it was unloaded"
UNLOAD_UNKNOWN = (
    "the reference's unload_bundle of an unknown bundle id fails (code 1, 'bundle not found for contract: "
    "bundle=0x<id> contract='); spec §10: a no-op"
)
DEPS_FIRST_LOAD = (
    "the reference's get_dependencies answers an empty array during a bundle's first load (it looks the "
    "caller up among the bundles already loaded); it answers only during a reload"
)
DEPS_FIELDS = (
    'the reference\'s DependencyInfo.min_version is min_version parsed as an integer (0 for any "x.y.z"), '
    "and contract_id is 0 unless declared; luaplug answers the major and derives the id"
)
DEPENDENCIES = f"""[[dependency]]
kind = "contract"
contract = "iso.Echo"
min_version = "1.0.0"
contract_id = {ECHO_ID}
[[dependency]]
kind = "contract"
contract = "iso.Counter"
min_version = "2.1.0"
"""
EXPECTED_DEPS = [(ECHO_ID, 1, 0), (guest_contract_id("iso.Counter", 2), 2, 0)]


class Side:
    """One runtime (the reference, or luaplug on lupa) and the bundle copies it loads."""

    def __init__(self, name: str, rt: Any, root: Path) -> None:
        self.name = name
        self.rt = rt
        self.root = root
        self.host_address: int = rt.host_api_address

    def copy(self, bundle: str) -> Path:
        """A vendored copy of ``luaplug/testing/bundles/<bundle>`` for this side."""
        root = self.root / f"{bundle}-{len(list(self.root.iterdir()))}"
        root.mkdir()
        return vendored_copy(BUNDLES / bundle, root)

    def ops(self, name: str = "hostops", extra: str = "") -> Path:
        """A vendored ``hostops`` copy named ``name``."""
        tmp = self.root / f"src-{name}-{len(list(self.root.iterdir()))}"
        made = ops_bundle(tmp, name, extra)
        root = self.root / f"{name}-{len(list(self.root.iterdir()))}"
        root.mkdir()
        return vendored_copy(made, root)

    def load(self, path: Path) -> None:
        self.rt.load(path)

    def raw(self, contract: str, command: str) -> str:
        data = command.encode("utf-8")
        buf = ffi.new("uint8_t[]", data + b"\0")
        sv = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
        res = ffi.new("StringView*")
        with luaplug.CallArena(4096, host=self.host_address) as arena:
            if isinstance(self.rt, ReferenceRuntime):
                assert self.rt.contract(contract).dispatch(0, sv, res, arena) == 0
            else:
                self.rt.contract(contract).default.call(0, sv, res, arena)
            return bytes(ffi.buffer(res.ptr, res.len)).decode("utf-8")

    def run(self, contract: str, command: str) -> Reply:
        return parse(self.raw(contract, command))

    def find(self, name: str, major: int) -> tuple[int, int] | None:
        if isinstance(self.rt, ReferenceRuntime):
            return self.rt.find(name, major)
        return self.rt.registry.find(guest_contract_id(name, major), major)  # type: ignore[no-any-return]


@pytest.fixture
def ref(tmp_path: Path) -> Iterator[Side]:
    root = tmp_path / "ref"
    root.mkdir()
    with ReferenceRuntime(hot_reload=True) as rt:
        yield Side("reference", rt, root)


@pytest.fixture
def lp(tmp_path: Path) -> Iterator[Side]:
    root = tmp_path / "luaplug"
    root.mkdir()
    with luaplug.Runtime("lupa", hot_reload=True) as rt:
        yield Side("luaplug", rt, root)


@pytest.fixture
def both(ref: Side, lp: Side) -> list[Side]:
    """The reference and luaplug, each with ``hostops`` loaded."""
    for side in (ref, lp):
        side.load(side.ops())
    return [ref, lp]


Sides = list[Side]


# -- the same answers on both -------------------------------------------------------------------


def test_list_bundles_and_find_all(both: Sides) -> None:
    for side in both:
        side.load(side.copy("echo"))
        side.load(side.copy("echo_alt"))
        listed = side.run(HOSTOPS, "list")
        assert (listed.code, listed.length, listed.align) == (0, 3, 8), side.name
        assert sorted(listed.items) == sorted([(OPS_ID,), (bundle_id("echo"),), (bundle_id("echo_alt"),)])
        found = side.run(HOSTOPS, f"findall {ECHO_ID} 1")
        assert (found.code, found.length, found.align) == (0, 2, 4), side.name
        assert found.items[0] == side.find("iso.Echo", 1)  # first registered first
        assert side.run(HOSTOPS, f"findall {ECHO_ID} 2").fields == ("0", "4", ""), side.name
        assert side.run(HOSTOPS, "deps").fields == ("0", "8", ""), side.name  # outside init


def test_a_guest_loads_reloads_and_unloads_another_bundle(both: Sides) -> None:
    for side in both:
        echo = side.copy("echo")
        assert side.run(HOSTOPS, f"load {echo}") == parse("0|"), side.name
        assert side.raw(HOSTOPS, "call iso.Echo@1 hi") == "hi", side.name
        main = echo / "main.lua"
        main.write_text(main.read_text("utf-8").replace("local s = ", 'local s = "v2:" .. '), "utf-8")
        handle = side.find("iso.Echo", 1)
        assert side.run(HOSTOPS, f"reload {echo / 'manifest.toml'}") == parse("0|"), side.name
        assert side.raw(HOSTOPS, "call iso.Echo@1 hi") == "v2:hi", side.name
        assert side.find("iso.Echo", 1) == handle, side.name
        assert side.run(HOSTOPS, f"unload {bundle_id('echo')}") == parse("0|"), side.name
        assert side.find("iso.Echo", 1) is None, side.name
        assert side.run(HOSTOPS, f"reload {echo}") == parse("0|"), side.name  # not loaded: loads it
        assert side.find("iso.Echo", 1) is not None, side.name


def test_bad_requests_get_the_same_codes(both: Sides, tmp_path: Path) -> None:
    for side in both:
        missing = side.run(HOSTOPS, f"load {tmp_path / 'nothing-here'}")
        assert missing.code == AbiErrorCode.Generic, side.name
        assert missing.text.startswith("manifest parse error for "), side.name
        assert side.run(HOSTOPS, "loadhex ff2c78").code == AbiErrorCode.Generic, side.name
        assert side.run(HOSTOPS, "reloadhex ff2c78").code == AbiErrorCode.Generic, side.name
        assert side.run(HOSTOPS, "loadnull") == parse("8|null path pointer in load_bundle"), side.name
        assert side.run(HOSTOPS, "reloadnull") == parse("8|null path pointer in reload_bundle"), side.name
        assert side.run(HOSTOPS, f"noerr {tmp_path / 'nothing-here'}") == parse("0|done"), side.name
        echo = side.copy("echo")
        side.load(echo)
        assert side.run(HOSTOPS, f"load {echo}").code == AbiErrorCode.Generic, side.name  # already loaded
        err = ffi.new("AbiError*")
        host = ffi.cast("const HostApi*", side.host_address)
        host.register_loader(host, ffi.NULL, err)
        assert err.code == AbiErrorCode.InvalidPointer, side.name


def test_reload_needs_hot_reload(tmp_path: Path) -> None:
    replies = []
    for rt in (ReferenceRuntime(hot_reload=False), luaplug.Runtime("lupa")):
        with rt:
            side = Side("", rt, tmp_path / str(len(replies)))
            side.root.mkdir()
            side.load(side.ops())
            replies.append(side.run(HOSTOPS, f"reload {side.copy('echo')}"))
    assert replies[0] == replies[1] == parse("1|hot-reload is disabled in runtime config")


# -- what luaplug does differently on purpose -----------------------------------------------------


def test_a_bundle_on_the_call_stack_is_unloaded_by_the_reference_and_kept_by_luaplug(ref: Side, lp: Side) -> None:
    for side in (ref, lp):
        side.load(side.ops())
        side.load(side.ops("hostops_peer"))
    via_peer = f"call {PEER} unload {OPS_ID}"
    assert ref.run(HOSTOPS, via_peer) == parse("0|")
    assert ref.find("ops.HostOps", 1) is None
    assert lp.run(HOSTOPS, via_peer).code == AbiErrorCode.ReentrantCall
    assert lp.run(HOSTOPS, "unloadself").code == AbiErrorCode.ReentrantCall
    assert lp.find("ops.HostOps", 1) is not None


# -- reference deviations -----------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason=LISTS_UNLOADED)
def test_list_bundles_after_an_unload(both: Sides) -> None:
    ref = both[0]
    ref.load(ref.copy("echo"))
    ref.rt.unload("echo")
    assert ref.run(HOSTOPS, "list").items == [(OPS_ID,)]


@pytest.mark.xfail(strict=True, reason=UNLOAD_UNKNOWN)
def test_unloading_an_unknown_bundle_id(both: Sides) -> None:
    assert both[0].run(HOSTOPS, "unload 12345") == parse("0|")


@pytest.mark.xfail(strict=True, reason=DEPS_FIRST_LOAD)
def test_get_dependencies_during_a_first_load(ref: Side) -> None:
    ref.load(ref.ops(extra=DEPENDENCIES))
    assert ref.run(HOSTOPS, "deps_init").length == 2


@pytest.mark.xfail(strict=True, reason=DEPS_FIELDS)
def test_get_dependencies_during_a_reload(ref: Side) -> None:
    ref.load(ref.ops(extra=DEPENDENCIES))
    ref.rt.reload("hostops")
    reply = ref.run(HOSTOPS, "deps_init")
    assert reply.length == 2  # answered during the reload
    assert reply.items == EXPECTED_DEPS


def test_luaplug_answers_the_dependencies_during_every_init(lp: Side) -> None:
    lp.load(lp.ops(extra=DEPENDENCIES))
    assert lp.run(HOSTOPS, "deps_init").items == EXPECTED_DEPS
    lp.rt.reload("hostops")
    assert lp.run(HOSTOPS, "deps_init").items == EXPECTED_DEPS
