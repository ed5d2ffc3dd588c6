"""Runtime services on the reference runtime (polyplug 0.1.3): host contracts, dependencies,
several providers, lifecycle events, transactional loads.

The same bundles as ``luaplug/testing/test_host_contracts.py`` & co., vendored (spec §15). Where the
reference agrees with runtime-semantics the test asserts it; where it deviates, the test asserts
the spec and is a strict ``xfail`` naming the deviation (also in docs/differences.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import luaplug
from luaplug import AbiErrorCode, Event, Phase
from luaplug.abi import ffi
from luaplug.hostcontract import HostContract, host_spec
from luaplug.ids import guest_contract_id, host_contract_id
from luaplug.testing import BUNDLES_DIR

from .adapter import ReferenceRuntime, ReferenceRuntimeError, reference_available, vendored_copy

BUNDLES = BUNDLES_DIR
_REASON = reference_available()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

LEAKS_HOST_CONTRACTS = (
    "the reference keeps a host contract a bundle registered during a load that then failed "
    "(its load is not transactional); runtime-semantics: a failed load leaves nothing registered"
)
DUPLICATE_HOST_CONTRACT = (
    "the reference refuses a second host contract with the same id with Generic (1), not DuplicateProvider (7)"
)
IMPLICIT_CONTRACT_ID = (
    "the reference ignores a [[dependency]] without `contract_id` (no init restriction, no unload refusal, "
    "no reinit); runtime-semantics makes contract_id optional, luaplug derives it from contract@major(min_version)"
)


class Math:
    def add(self, a: int, b: int) -> int:
        return a + b

    def greet(self, who: str) -> str:
        return f"hello {who}"

    def boom(self) -> int:
        raise RuntimeError("kaput")

    def tally(self) -> int:
        return 0


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def ref(events: list[Event]) -> Iterator[ReferenceRuntime]:
    with ReferenceRuntime(hot_reload=True, on_event=events.append) as rt:
        yield rt


@pytest.fixture
def copy(tmp_path: Path) -> Callable[[str], Path]:
    made: dict[str, int] = {}

    def copy(name: str) -> Path:
        made[name] = made.get(name, 0) + 1
        root = tmp_path / f"{name}-{made[name]}"
        root.mkdir()
        return vendored_copy(BUNDLES / name, root)

    return copy


def u32(ref: ReferenceRuntime, contract: str, fn_id: int, arg: int = 0) -> int:
    out = ffi.new("uint32_t*")
    code = ref.contract(contract).dispatch(fn_id, ffi.new("uint32_t*", arg), out)
    assert code == 0
    return int(out[0])


def why(ref: ReferenceRuntime, min_version: int = 0) -> str:
    """``get_last_error`` as the guest reads it right after its ``get_host_contract`` call."""
    out = ffi.new("StringView*")
    with luaplug.CallArena(256, host=ref.host_api_address) as arena:
        assert ref.contract("svc.HostUser@1").dispatch(6, ffi.new("uint32_t*", min_version), out, arena) == 0
        return bytes(ffi.buffer(out.ptr, out.len)).decode() if out.len else ""


def math_contract(ref: ReferenceRuntime) -> HostContract:
    spec = host_spec("host.Math@1", BUNDLES / "hostuser" / "api.toml")
    return HostContract(spec, Math(), host_address=ref.host_api_address)


# -- host contracts -----------------------------------------------------------------------------


def test_a_guest_calls_a_luaplug_host_contract(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    hc = math_contract(ref)
    assert ref.register_host_contract(hc.address) == 0
    ref.load(copy("hostuser"))
    args = ffi.new("int32_t[2]", [40, 2])
    out = ffi.new("int32_t*")
    assert ref.contract("svc.HostUser@1").dispatch(1, args, out) == 0
    assert out[0] == 42
    data = b"ref"
    buf = ffi.new("uint8_t[]", data)
    sv = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
    res = ffi.new("StringView*")
    with luaplug.CallArena(128, host=ref.host_api_address) as arena:
        assert ref.contract("svc.HostUser@1").dispatch(2, sv, res, arena) == 0
        assert bytes(ffi.buffer(res.ptr, res.len)) == b"guest got: hello ref"
    assert u32(ref, "svc.HostUser@1", 3) == AbiErrorCode.HostContractCallFailed
    assert u32(ref, "svc.HostUser@1", 4) == 1  # a singleton's instance is cached
    assert u32(ref, "svc.HostUser@1", 5) == 4


MATH_ID = host_contract_id("host.Math", 1)


@pytest.mark.parametrize(
    ("min_version", "found"),
    [
        (0, True),
        ((1 << 16) | 0, True),
        ((1 << 16) | 2, True),
        ((1 << 16) | 3, False),
        ((2 << 16) | 0, False),
        (1, False),
    ],
)
def test_version_negotiation(ref: ReferenceRuntime, copy: Callable[[str], Path], min_version: int, found: bool) -> None:
    hc = math_contract(ref)
    assert ref.register_host_contract(hc.address) == 0
    ref.load(copy("hostuser"))
    assert u32(ref, "svc.HostUser@1", 0, min_version) == int(found)
    assert u32(ref, "svc.HostUser@1", 5, min_version) == (4 if found else 0)
    expected = "" if found else f"host contract not found: id={MATH_ID}, min_version={min_version}"
    assert why(ref, min_version) == expected


def test_host_contract_not_found(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    ref.load(copy("hostuser"))
    assert u32(ref, "svc.HostUser@1", 0) == 0
    assert why(ref) == f"host contract not found: id={MATH_ID}, min_version=0"


@pytest.mark.parametrize("min_version", [0, (1 << 16) | 2, (1 << 16) | 3, (2 << 16) | 0, 1])
@pytest.mark.parametrize("registered", [True, False], ids=["registered", "unknown"])
def test_luaplug_answers_get_host_contract_alike(
    ref: ReferenceRuntime, copy: Callable[[str], Path], min_version: int, registered: bool
) -> None:
    """The same instance-or-null and the same get_last_error text, from the same bundle."""
    if registered:
        hc = math_contract(ref)
        assert ref.register_host_contract(hc.address) == 0
    ref.load(copy("hostuser"))
    theirs = (u32(ref, "svc.HostUser@1", 0, min_version), why(ref, min_version))
    for backend in luaplug.available_backends():
        with luaplug.Runtime(backend) as rt:
            if registered:
                rt.provide("host.Math@1", Math(), api=BUNDLES / "hostuser" / "api.toml")
            rt.load(copy("hostuser"))
            out = ffi.new("uint32_t*")
            rt.contract("svc.HostUser@1").default.call(0, ffi.new("uint32_t*", min_version), out)
            sv = ffi.new("StringView*")
            with luaplug.CallArena(256, host=rt) as arena:
                rt.contract("svc.HostUser@1").default.call(6, ffi.new("uint32_t*", min_version), sv, arena)
                text = bytes(ffi.buffer(sv.ptr, sv.len)).decode() if sv.len else ""
            assert (int(out[0]), text) == theirs, backend


def test_a_failing_factory(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    """The reference gives a null instance and no text (luaplug gives a text: docs/differences.md)."""

    def factory() -> Math:
        raise RuntimeError("no math today")

    spec = host_spec("host.Math@1", BUNDLES / "hostuser" / "api.toml")
    hc = HostContract(spec, factory, host_address=ref.host_api_address, singleton=False)
    assert ref.register_host_contract(hc.address) == 0
    ref.load(copy("hostuser"))
    assert u32(ref, "svc.HostUser@1", 0) == 0
    assert why(ref) == ""


@pytest.mark.xfail(strict=True, reason=DUPLICATE_HOST_CONTRACT)
def test_duplicate_host_contracts_are_refused(ref: ReferenceRuntime) -> None:
    one, two = math_contract(ref), math_contract(ref)
    assert ref.register_host_contract(one.address) == 0
    assert ref.register_host_contract(two.address) == AbiErrorCode.DuplicateProvider


def test_a_guest_registers_a_host_contract(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    ref.load(copy("hostreg"))
    assert u32(ref, "svc.HostReg@1", 0) == 42
    host = ref.host
    assert host.resolve_host_contract_interface(host, host_contract_id("guest.Clock", 1), 0) != ffi.NULL


@pytest.mark.xfail(strict=True, reason=LEAKS_HOST_CONTRACTS)
def test_a_failed_load_leaves_no_host_contract(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    d = copy("hostreg")
    main = d / "main.lua"
    main.write_text(main.read_text("utf-8").replace("FAIL_AFTER_REGISTER = false", "FAIL_AFTER_REGISTER = true"))
    with pytest.raises(ReferenceRuntimeError):
        ref.load(d)
    host = ref.host
    assert host.resolve_host_contract_interface(host, host_contract_id("guest.Clock", 1), 0) == ffi.NULL


# -- dependencies -----------------------------------------------------------------------------


def test_undeclared_lookups_during_init(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    ref.load(copy("echo"))
    ref.load(copy("counter"))
    ref.load(copy("depuser"))
    assert u32(ref, "svc.DepUser@1", 0) == 1
    assert u32(ref, "svc.DepUser@1", 1) == 3


def test_unloading_a_provider_with_dependents(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    ref.load(copy("echo"))
    ref.load(copy("depuser"))
    with pytest.raises(ReferenceRuntimeError) as info:
        ref.unload("echo")
    assert info.value.message == (
        'cannot unload bundle `echo`: still-loaded bundles declared a dependency on it: ["depuser"]'
    )
    ref.unload("depuser")
    ref.unload("echo")


@pytest.mark.xfail(strict=True, reason=IMPLICIT_CONTRACT_ID)
def test_a_dependency_without_contract_id(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    d = copy("depuser")
    manifest = d / "manifest.toml"
    manifest.write_text(
        "".join(line for line in manifest.read_text("utf-8").splitlines(True) if "contract_id" not in line)
    )
    ref.load(copy("echo"))
    ref.load(d)
    with pytest.raises(ReferenceRuntimeError):
        ref.unload("echo")


def test_dependents_are_reloaded_after_their_provider(
    ref: ReferenceRuntime, copy: Callable[[str], Path], events: list[Event]
) -> None:
    ref.load(copy("echo"))
    ref.load(copy("consumer"))
    ref.load(copy("depuser"))
    ref.reload("echo")
    assert [(e.phase, e.bundle_name) for e in events] == [
        (Phase.Preparing, "echo"),
        (Phase.Preparing, "depuser"),
        (Phase.Reloaded, "depuser"),
        (Phase.Reloaded, "echo"),
    ]


# -- several providers, handles ----------------------------------------------------------------


def test_first_registered_wins_and_the_next_takes_over(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    ref.load(copy("echo"))
    ref.load(copy("echo_alt"))
    cid = guest_contract_id("iso.Echo", 1)
    host = ref.host
    first = host.find_guest_contract(host, cid, 1)

    def echo(text: bytes) -> bytes:
        buf = ffi.new("uint8_t[]", text)
        sv = ffi.new("StringView*", {"ptr": buf, "len": len(text)})
        out = ffi.new("StringView*")
        with luaplug.CallArena(64, host=ref.host_api_address) as arena:
            assert ref.contract("iso.Echo@1").dispatch(0, sv, out, arena) == 0
            return bytes(ffi.buffer(out.ptr, out.len))

    assert echo(b"a") == b"a"
    ref.unload("echo")
    assert host.resolve_guest_contract(host, first) == ffi.NULL
    assert echo(b"a") == b"alt:a"


def test_a_reload_keeps_the_handle(ref: ReferenceRuntime, copy: Callable[[str], Path]) -> None:
    ref.load(copy("echo"))
    host = ref.host
    first = host.find_guest_contract(host, guest_contract_id("iso.Echo", 1), 1)
    ref.reload("echo")
    assert host.resolve_guest_contract(host, first) != ffi.NULL


# -- events -------------------------------------------------------------------------------------


def test_reload_and_unload_events(ref: ReferenceRuntime, copy: Callable[[str], Path], events: list[Event]) -> None:
    ref.load(copy("counter"))
    assert events == []
    ref.reload("counter")
    ref.unload("counter")
    assert [(e.phase, e.bundle_name, e.reason) for e in events] == [
        (Phase.Preparing, "counter", None),
        (Phase.Reloaded, "counter", None),
        (Phase.Unloading, "counter", None),
    ]


def test_a_failed_reload_event(ref: ReferenceRuntime, copy: Callable[[str], Path], events: list[Event]) -> None:
    d = copy("counter")
    ref.load(d)
    (d / "main.lua").write_text("function polyplug_init() error('no way') end", "utf-8")
    with pytest.raises(ReferenceRuntimeError):
        ref.reload("counter")
    assert [e.phase for e in events] == [Phase.Preparing, Phase.Failed]
    assert "no way" in (events[1].reason or "")
