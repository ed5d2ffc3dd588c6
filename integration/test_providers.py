"""Several providers of one contract; handle generations (runtime-semantics "Registry and handles")."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pytest
from _filters import Store, build_filters

import luaplug
from luaplug import ContractNotFoundError, Provider
from luaplug.abi import core_ffi as ffi
from luaplug.ids import bundle_id, guest_contract_id

ECHO_ID = guest_contract_id("iso.Echo", 1)
NULL_INDEX = 0xFFFFFFFF


def echo(rt: luaplug.Runtime, text: str) -> str:
    data = text.encode()
    buf = ffi.new("uint8_t[]", data or b"\0")
    sv = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
    out = ffi.new("StringView*")
    with luaplug.CallArena(128, host=rt) as arena:
        rt.contract("iso.Echo@1").default.call(0, sv, out, arena)
        return bytes(ffi.buffer(out.ptr, out.len)).decode()


def relay(rt: luaplug.Runtime, text: str) -> str:
    data = text.encode()
    buf = ffi.new("uint8_t[]", data or b"\0")
    sv = ffi.new("StringView*", {"ptr": buf, "len": len(data)})
    out = ffi.new("StringView*")
    with luaplug.CallArena(128, host=rt) as arena:
        rt.contract("iso.Consumer@1").default.call(0, sv, out, arena)
        return bytes(ffi.buffer(out.ptr, out.len)).decode()


def host(rt: luaplug.Runtime) -> Any:
    return ffi.cast("HostApi*", rt.host_api_address)


def test_first_registered_wins_and_the_next_takes_over(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "echo_alt")
    runtime.load(bundles / "consumer")
    assert runtime.contracts().count("iso.Echo@1") == 2
    assert echo(runtime, "a") == "a"
    assert relay(runtime, "b") == "echo: b"
    runtime.unload("echo")
    assert echo(runtime, "a") == "alt:a"
    assert relay(runtime, "b") == "echo: alt:b"
    runtime.load(bundles / "echo")  # registered after echo_alt now: echo_alt stays first
    assert relay(runtime, "c") == "echo: alt:c"


def test_min_major(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    h = host(runtime)
    assert h.find_guest_contract(h, ECHO_ID, 0).index != NULL_INDEX
    assert h.find_guest_contract(h, ECHO_ID, 1).index != NULL_INDEX
    assert h.find_guest_contract(h, ECHO_ID, 2).index == NULL_INDEX


def test_handles_go_stale_on_unload_and_follow_reloads(runtime: luaplug.Runtime, bundles: Path) -> None:
    h = host(runtime)
    runtime.load(bundles / "echo")
    first = h.find_guest_contract(h, ECHO_ID, 1)
    runtime.reload("echo")
    assert h.resolve_guest_contract(h, first) != ffi.NULL  # same generation, new interface
    assert h.find_guest_contract(h, ECHO_ID, 1).generation == first.generation
    runtime.unload("echo")
    assert h.resolve_guest_contract(h, first) == ffi.NULL
    runtime.load(bundles / "echo")
    second = h.find_guest_contract(h, ECHO_ID, 1)
    assert (second.index, second.generation) != (first.index, first.generation)
    assert h.resolve_guest_contract(h, first) == ffi.NULL  # a reused slot does not revive old handles
    assert h.resolve_guest_contract(h, second) != ffi.NULL


def test_each_providers_handle_is_its_own(runtime: luaplug.Runtime, bundles: Path) -> None:
    h = host(runtime)
    runtime.load(bundles / "echo")
    runtime.load(bundles / "echo_alt")
    first = h.find_guest_contract(h, ECHO_ID, 1)
    runtime.unload("echo")
    assert h.resolve_guest_contract(h, first) == ffi.NULL
    alt = h.find_guest_contract(h, ECHO_ID, 1)
    assert alt.index != NULL_INDEX and h.resolve_guest_contract(h, alt) != ffi.NULL


# -- choosing among providers: providers(), contract(bundle=), bind(bundle=) -----------------------


def shadow_lines(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name == "luaplug.runtime" and "shadowed" in r.getMessage()]


@pytest.fixture
def filters(runtime: luaplug.Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Path:
    """``upper`` then ``tally`` loaded (both provide text.Filter@1), host.Store@1 served."""
    root = build_filters(tmp_path)
    runtime.provide("host.Store@1", Store(), api=root / "api.toml")
    with caplog.at_level(logging.INFO, logger="luaplug.runtime"):
        runtime.load(root / "upper")
        runtime.load(root / "tally")
    return root


def test_providers_lists_every_provider_in_load_order(runtime: luaplug.Runtime, filters: Path) -> None:
    found = runtime.providers("text.Filter@1")
    assert [(p.bundle, p.plugin) for p in found] == [("upper", "upper"), ("tally", "tally")]
    assert found == ["text.Filter@1", "text.Filter@1"]
    assert [(p.contract_name, p.major) for p in found] == [("text.Filter", 1)] * 2
    assert found[1].bundle_id == bundle_id("tally")  # the generated manifest's id
    assert runtime.providers("text.Filter", 1) == found
    assert runtime.providers("text.Filter@2") == []
    assert runtime.providers("no.Such@1") == []


def test_contracts_names_bundles_and_plugins(runtime: luaplug.Runtime, filters: Path) -> None:
    listed = runtime.contracts()
    assert listed.count("text.Filter@1") == 2  # still the "name@major" strings
    assert all(isinstance(p, str) and isinstance(p, Provider) for p in listed)
    assert sorted((p.bundle, p.plugin) for p in listed if p == "text.Filter@1") == [
        ("tally", "tally"),
        ("upper", "upper"),
    ]


def test_one_info_line_names_the_shadowed_provider(
    runtime: luaplug.Runtime, filters: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loading = caplog.get_records("setup")
    (line,) = shadow_lines(loading)
    assert line == (
        "contract text.Filter@1 of bundle tally (plugin tally) is shadowed by bundle upper (plugin upper), "
        "loaded first; reach it with bundle='tally'"
    )
    assert [r.levelno for r in loading if "shadowed" in r.getMessage()] == [logging.INFO]
    with caplog.at_level(logging.INFO, logger="luaplug.runtime"):
        runtime.reload("tally")  # still the same provider: no new line
        runtime.reload("upper")
    assert shadow_lines(caplog.records) == []


def test_the_first_provider_alone_logs_nothing(
    runtime: luaplug.Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = build_filters(tmp_path)
    with caplog.at_level(logging.INFO, logger="luaplug.runtime"):
        runtime.load(root / "upper")
    assert shadow_lines(caplog.records) == []


def test_contract_and_bind_pick_a_bundle(runtime: luaplug.Runtime, filters: Path) -> None:
    api = filters / "api.toml"
    assert runtime.contract("text.Filter@1").plugin_name == "upper"
    assert runtime.contract("text.Filter@1", bundle="tally").plugin_name == "tally"
    assert runtime.contract("text.Filter", 1, bundle="upper").plugin_name == "upper"
    with runtime.bind(api, "text.Filter@1") as first, runtime.bind(api, "text.Filter@1", bundle="tally") as second:
        assert first.apply("a") == "A #1"
        assert second.apply("b") == "tally:1:b"
        assert second.apply("c") == "tally:2:c"
    bundle = runtime.reload("tally")  # a Bundle works as well as its name, and reloads are followed
    with runtime.bind(api, "text.Filter@1", bundle=bundle, instance=False) as again:
        assert again.apply("d") == "tally:3:d"


def test_a_bundle_that_does_not_provide_it(runtime: luaplug.Runtime, filters: Path, bundles: Path) -> None:
    with pytest.raises(ContractNotFoundError) as info:
        runtime.contract("text.Filter@1", bundle="nope")
    assert str(info.value) == "bundle 'nope' does not provide contract text.Filter@1 (its providers: 'upper', 'tally')"
    assert (info.value.bundle, info.value.providers) == ("nope", ["upper", "tally"])
    with pytest.raises(ContractNotFoundError, match="its providers: 'upper', 'tally'"):
        runtime.bind(filters / "api.toml", "text.Filter@1", bundle="echo")
    with pytest.raises(ContractNotFoundError) as info:
        runtime.contract("iso.Echo@1", bundle="upper")
    assert str(info.value) == "bundle 'upper' does not provide contract iso.Echo@1 (its providers: none)"
    runtime.load(bundles / "echo")
    with pytest.raises(ContractNotFoundError, match=r"its providers: 'echo'\)$"):
        runtime.contract("iso.Echo@1", bundle="upper")


def test_unloading_the_first_promotes_the_next(runtime: luaplug.Runtime, filters: Path) -> None:
    chosen = runtime.contract("text.Filter@1", bundle="tally")
    runtime.unload("upper")
    assert [p.bundle for p in runtime.providers("text.Filter@1")] == ["tally"]
    assert runtime.contract("text.Filter@1").plugin_name == "tally"
    assert chosen.plugin_name == "tally"  # the chosen handle is the tally provider's own
    runtime.unload("tally")
    assert runtime.providers("text.Filter@1") == []
    with pytest.raises(ContractNotFoundError):
        chosen.default  # noqa: B018


def test_provider_is_a_read_only_picklable_string() -> None:
    p = Provider("text.Filter", 1, bundle="upper", plugin="up", bundle_id=7)
    assert p == "text.Filter@1" and hash(p) == hash("text.Filter@1") and str(p) == "text.Filter@1"
    assert repr(p) == "Provider('text.Filter@1', bundle='upper', plugin='up')"
    again = pickle.loads(pickle.dumps(p))
    assert (again, again.bundle, again.plugin, again.bundle_id) == (p, "upper", "up", 7)
    with pytest.raises(AttributeError):
        p.bundle = "x"  # type: ignore[misc]
