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

    def _host_list_bundles(self) -> list[int]:
        return []

    def _host_find_all(self, contract_id: int, min_major: int) -> list[tuple[int, int]]:
        return [(3, 7), (0xFFFFFFFE, 1)] if contract_id == 42 else []

    def _host_dependencies(self) -> list[tuple[int, int, int]]:
        return [(0xFEDCBA9876543210, 3, 0x0123456789ABCDEF), (1, 0, 0)]

    def _host_load_bundle(self, path: str) -> tuple[int, str]:
        return AbiErrorCode.Generic, f"no bundle at {path}"

    def _host_reload_bundle(self, path: str) -> tuple[int, str]:
        return AbiErrorCode.ReentrantCall, f"{path} is running"

    def _host_unload_bundle(self, bundle: int) -> tuple[int, str]:
        return AbiErrorCode.Generic, f"cannot unload {bundle}"


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
    assert err.code == AbiErrorCode.InvalidPointer and err.message.len > 0
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


def test_arrays_are_host_memory_in_the_abi_layouts(host: HostApi) -> None:
    s = host.struct
    handles = s.find_all_guest_contracts(s, 42, 1)
    assert (handles.len, handles.align) == (2, 4)
    items = ffi.cast("GuestContractHandle*", handles.items)
    assert [(items[i].index, items[i].generation) for i in range(2)] == [(3, 7), (0xFFFFFFFE, 1)]
    s.free(s, ffi.cast("uint8_t*", handles.items), 16, 4)
    none = s.find_all_guest_contracts(s, 7, 1)
    assert (none.items, none.len, none.align) == (ffi.NULL, 0, 4)
    # DependencyInfo (polyplug-abi 0.1.3): contract_id u64 @0, min_version u32 @8, bundle_id u64 @16; 24 bytes
    deps = s.get_dependencies(s)
    assert (deps.len, deps.align) == (2, 8)
    raw = ffi.cast("uint8_t*", deps.items)
    assert ffi.cast("uint64_t*", raw)[0] == 0xFEDCBA9876543210
    assert ffi.cast("uint32_t*", raw + 8)[0] == 3
    assert ffi.cast("uint64_t*", raw + 16)[0] == 0x0123456789ABCDEF
    assert ffi.cast("uint64_t*", raw + 24)[0] == 1
    s.free(s, raw, 48, 8)
    empty = s.list_bundles(s)
    assert (empty.items, empty.len, empty.align) == (ffi.NULL, 0, 8)


def test_bundle_operations_report_through_get_last_error(host: HostApi) -> None:
    s = host.struct
    err = ffi.new("AbiError*")

    def last_error() -> bytes:
        n = s.get_error_len(s)
        buf = ffi.new("uint8_t[]", n + 1)
        return bytes(ffi.buffer(buf, s.get_last_error(s, buf, n)))

    path = "bündel".encode()
    s.load_bundle(s, path, len(path), err)
    assert (err.code, last_error()) == (AbiErrorCode.Generic, "no bundle at bündel".encode())
    s.reload_bundle(s, path, len(path), err)
    assert (err.code, last_error()) == (AbiErrorCode.ReentrantCall, "bündel is running".encode())
    assert err.message.len > 0
    s.unload_bundle(s, 99, err)
    assert (err.code, last_error()) == (AbiErrorCode.Generic, b"cannot unload 99")
    s.load_bundle(s, b"\xff\xfe", 2, err)
    assert err.code == AbiErrorCode.Generic
    assert last_error().startswith(b"load_bundle: the bundle path is not valid UTF-8")
    s.reload_bundle(s, ffi.NULL, 3, err)
    assert (err.code, last_error()) == (AbiErrorCode.InvalidPointer, b"null path pointer in reload_bundle")
    s.load_bundle(s, path, len(path), ffi.NULL)  # no AbiError to fill: allowed
    s.register_loader(s, ffi.cast("void*", 16), err)
    assert err.code == AbiErrorCode.Generic
    assert last_error() == b"register_loader: luaplug runs its own Lua loader only; loaders cannot be registered"
