"""The C HostApi: every pointer callable from C, failures as codes, never a crash."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from luaplug.abi import NULL_HANDLE_INDEX, AbiErrorCode
from luaplug.abi import core_ffi as ffi
from luaplug.hostapi import HostApi, default_host


class _Services:
    def __init__(self) -> None:
        self.iface = ffi.new("GuestContractInterface*")

    def _host_find(self, contract_id: int, min_major: int) -> tuple[int, int] | None:
        return (3, 7) if contract_id == 42 else None

    def _host_resolve(self, index: int, generation: int) -> Any:
        return self.iface if (index, generation) == (3, 7) else ffi.NULL

    def _host_register(self, desc: Any, iface: Any) -> tuple[int, str]:
        return AbiErrorCode.DuplicateProvider, "dup"

    def _host_get_host_contract(self, contract_id: int, min_version: int) -> tuple[int, int]:
        return AbiErrorCode.HostContractNotFound, 0

    def _host_resolve_host_contract(self, contract_id: int, min_version: int) -> Any:
        return ffi.NULL

    def _host_register_host_contract(self, iface: Any) -> tuple[int, str]:
        return AbiErrorCode.DuplicateProvider, "dup"


@pytest.fixture
def host() -> HostApi:
    return HostApi(_Services())


def test_alloc_and_free(host: HostApi) -> None:
    s = host.struct
    p = s.alloc(s, 64, 8)
    assert p != ffi.NULL and int(ffi.cast("uintptr_t", p)) % 8 == 0
    ffi.memmove(p, b"x" * 64, 64)
    s.free(s, p, 64, 8)
    big = s.alloc(s, 128, 64)
    assert int(ffi.cast("uintptr_t", big)) % 64 == 0
    s.free(s, big, 128, 64)
    assert s.alloc(s, 8, 3) == ffi.NULL


def test_find_and_resolve(host: HostApi) -> None:
    s = host.struct
    h = s.find_guest_contract(s, 42, 1)
    assert (h.index, h.generation) == (3, 7)
    assert s.resolve_guest_contract(s, h) == host.services.iface  # type: ignore[union-attr]
    miss = s.find_guest_contract(s, 41, 0)
    assert miss.index == NULL_HANDLE_INDEX
    assert s.resolve_guest_contract(s, miss) == ffi.NULL


def test_revision_counter_points_at_live_memory(host: HostApi) -> None:
    s = host.struct
    rev = s.revision_counter(s)
    assert rev[0] == 0
    host.bump_revision()
    assert rev[0] == 1


def test_log_maps_levels_and_keeps_scope(host: HostApi, caplog: pytest.LogCaptureFixture) -> None:
    s = host.struct
    scope, msg = b"guest.demo", "héllo".encode()
    sv_scope = ffi.new("StringView*", {"ptr": ffi.from_buffer(scope), "len": len(scope)})
    sv_msg = ffi.new("StringView*", {"ptr": ffi.from_buffer(msg), "len": len(msg)})
    with caplog.at_level(1, logger="luaplug.guest"):
        for level in (1, 2, 3, 4, 5):
            s.log(s, level, sv_scope[0], sv_msg[0])
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG, 5]
    assert all(r.scope == "guest.demo" and r.getMessage() == "[guest.demo] héllo" for r in caplog.records)  # type: ignore[attr-defined]


def test_unsupported_functions_fail_with_codes(host: HostApi) -> None:
    s = host.struct
    err = ffi.new("AbiError*")
    s.load_bundle(s, ffi.NULL, 0, err)
    assert err.code == AbiErrorCode.Generic and err.message.len > 0
    s.unload_bundle(s, 1, err)
    assert err.code == AbiErrorCode.Generic
    assert s.get_host_contract(s, 1, 0).data == ffi.NULL
    assert s.get_error_len(s) == len("host contract not found: id=1, min_version=0")
    assert s.resolve_host_contract_interface(s, 1, 0) == ffi.NULL
    assert s.list_bundles(s).len == 0
    desc = ffi.new("PluginDescriptor*")
    iface = ffi.new("GuestContractInterface*")
    s.register_guest_contract(s, desc, iface, err)
    assert err.code == AbiErrorCode.DuplicateProvider
    s.register_guest_contract(s, ffi.NULL, iface, err)
    assert err.code == AbiErrorCode.InvalidPointer


def test_default_host_has_no_runtime() -> None:
    s = default_host().struct
    assert s.runtime == ffi.NULL
    assert s.find_guest_contract(s, 42, 0).index == NULL_HANDLE_INDEX
    assert s.revision_counter(s) == ffi.NULL
    p = s.alloc(s, 16, 8)
    assert p != ffi.NULL
    s.free(s, p, 16, 8)


def test_detached_host_fails_cleanly(host: HostApi) -> None:
    host.detach()
    s = host.struct
    assert s.find_guest_contract(s, 42, 0).index == NULL_HANDLE_INDEX


def test_last_error_roundtrip(host: HostApi) -> None:
    host.set_last_error("bad thing")
    s = host.struct
    assert s.get_error_len(s) == 9
    buf = ffi.new("uint8_t[4]")
    assert s.get_last_error(s, buf, 4) == 4
    assert bytes(buf) == b"bad "
