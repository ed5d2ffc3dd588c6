"""Spec §12: every ABI struct has exactly the reference layout."""

from __future__ import annotations

import re

import pytest

from luaplug.abi import AbiErrorCode, LogLevel, ffi

SIZES = {
    "StringView": 16,
    "Version": 12,
    "AbiError": 24,
    "VmLoaderData": 8,
    "GuestContractInstance": 16,
    "GuestContractHandle": 8,
    "Array": 24,
    "BundleInitContext": 24,
    "PluginDescriptor": 48,
    "VmDispatch": 16,
    "GuestContractInterface": 56,
    "HostApi": 184,
    "CallArena": 40,
    "ArenaOverflowBlock": 24,
    "HostContractInterface": 80,
    "NativeDispatch": 16,
    "Buffer": 24,
    "DependencyInfo": 24,
    "Ed25519PublicKey": 32,
    "ReloadPhase": 48,
    "RuntimeConfig": 72,
}

OFFSETS = [
    ("StringView", "len", 8),
    ("Version", "patch", 8),
    ("AbiError", "message", 8),
    ("GuestContractInstance", "contract_id", 8),
    ("GuestContractHandle", "generation", 4),
    ("Array", "align", 16),
    ("BundleInitContext", "bundle_path", 8),
    ("PluginDescriptor", "contract_name", 16),
    ("PluginDescriptor", "version", 32),
    ("VmDispatch", "loader_data", 8),
    ("GuestContractInterface", "contract_version", 8),
    ("GuestContractInterface", "dispatch_type", 20),
    ("GuestContractInterface", "create_instance", 24),
    ("GuestContractInterface", "destroy_instance", 32),
    ("GuestContractInterface", "dispatch", 40),
    ("CallArena", "end", 8),
    ("CallArena", "base", 16),
    ("CallArena", "host", 24),
    ("CallArena", "first_overflow", 32),
    ("ArenaOverflowBlock", "capacity", 8),
    ("ArenaOverflowBlock", "used", 16),
    ("HostContractInterface", "singleton", 20),
    ("HostContractInterface", "dispatch_type", 24),
    ("HostContractInterface", "runtime", 32),
    ("HostContractInterface", "user_data", 40),
    ("HostContractInterface", "create_instance", 48),
    ("HostContractInterface", "destroy_instance", 56),
    ("HostContractInterface", "dispatch", 64),
    ("NativeDispatch", "functions", 8),
    ("DependencyInfo", "bundle_id", 16),
    ("ReloadPhase", "bundle_name", 16),
    ("RuntimeConfig", "trusted_keys", 48),
]

HOSTAPI = [
    "runtime", "register_guest_contract", "alloc", "free", "find_guest_contract", "find_all_guest_contracts",
    "resolve_guest_contract", "get_host_contract", "resolve_host_contract_interface", "list_bundles",
    "get_dependencies", "load_bundle", "reload_bundle", "register_host_contract", "register_loader",
    "get_last_error", "get_error_len", "unload_bundle", "log", "create_guest_instance", "destroy_guest_instance",
    "revision_counter", "reserved",
]  # fmt: skip


@pytest.mark.parametrize(("name", "size"), SIZES.items())
def test_struct_sizes(name: str, size: int) -> None:
    assert ffi.sizeof(name) == size


@pytest.mark.parametrize(("struct", "field", "offset"), OFFSETS)
def test_field_offsets(struct: str, field: str, offset: int) -> None:
    assert ffi.offsetof(struct, field) == offset


def test_hostapi_fields_every_eight_bytes() -> None:
    assert [ffi.offsetof("HostApi", f) for f in HOSTAPI] == list(range(0, 184, 8))


def test_codes_and_levels() -> None:
    assert [int(c) for c in AbiErrorCode] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 101, 102]
    assert AbiErrorCode.ReentrantCall == 9 and AbiErrorCode.HostContractCallFailed == 102
    assert [int(level) for level in LogLevel] == [1, 2, 3, 4, 5]


def test_the_precompiled_ffi_matches_the_declarations() -> None:
    """luaplug._abi_ffi is generated (python -m luaplug._abi_build); it must declare exactly
    what abi.ABI_CDEF/LIBC_CDEF say, whichever cffi version generated it."""
    import cffi

    from luaplug import abi

    inline = cffi.FFI()
    inline.cdef(abi.ABI_CDEF + abi.LIBC_CDEF)
    names = sorted(set(re.findall(r"typedef struct (\w+)", abi.ABI_CDEF)))
    assert names, "no struct found in ABI_CDEF"
    for name in names:
        assert abi.core_ffi.sizeof(name) == inline.sizeof(name), name
        assert abi.core_ffi.alignof(name) == inline.alignof(name), name

        def layout(f: object, n: str = name) -> list[tuple[str, str, int]]:
            return [
                (field, t.type.cname.replace("struct ", "").replace("union ", ""), t.offset)
                for field, t in f.typeof(n).fields
            ]  # type: ignore[attr-defined]

        assert layout(abi.core_ffi) == layout(inline), name
    for fn in ("malloc", "free", "posix_memalign", "pthread_self"):
        assert fn in dir(abi.core_ffi.dlopen(None)), fn


def test_importing_luaplug_parses_no_c() -> None:
    """The import path stays free of pycparser (the precompiled FFI is what makes startup fast)."""
    import subprocess
    import sys

    code = "import sys, luaplug; r = luaplug.Runtime; print('pycparser' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_any_type_can_be_realized_first() -> None:
    """cffi aborts on some realization orders of this FFI unless ``HostApi`` comes first
    (``luaplug.abi`` sees to it): every type first, then every other, in a fresh process."""
    import subprocess
    import sys

    from luaplug.abi import core_ffi

    typedefs, structs, unions = core_ffi.list_types()
    names = [*typedefs, *(f"struct {n}" for n in structs), *(f"union {n}" for n in unions)]
    names += ["void(*)(VmLoaderData, const HostApi*, const void*, GuestContractInstance*)"]
    code = "import sys\nfrom luaplug.abi import core_ffi as f\nfor n in sys.argv[1:]:\n    f.typeof(n)\n"
    for first in names:
        proc = subprocess.run([sys.executable, "-c", code, first, *names], capture_output=True, text=True)
        assert proc.returncode == 0, (first, proc.stderr[-300:])
