"""The interface a luaplug backend is written against, and the only luaplug package it imports.

A backend supplies an :class:`Engine` (one per runtime) whose :class:`EngineState` objects are
isolated LuaJIT VMs, and registers a :class:`BackendInfo` through the ``luaplug`` entry-point group
with a :data:`hookimpl`-marked ``luaplug_register_backends`` function. Everything else — manifests,
the prelude, the loader, the registry, the HostApi — is the core's.
"""

from __future__ import annotations

import os

from luaplug.abi import DispatchType
from luaplug.abi import core_ffi as abi_ffi
from luaplug.backend.discovery import BackendInfo, BackendRegistry, hookimpl, register_backends
from luaplug.backend.engine import (
    CAP_MEMORY_LIMIT,
    CAP_NESTED_SAME_BUNDLE,
    CAP_PARALLEL_STATES,
    CAP_REFUSES_BYTECODE,
    DEFAULT_OPTIONS,
    NO_NATIVE_ENTRY,
    ContractProvider,
    Engine,
    EngineState,
    FastCall,
    StateOptions,
    lua_errors,
    native_entries,
    prelude_source,
)
from luaplug.backend.interface import PythonBackedContract, peer_interface, python_interface, vm_interface
from luaplug.backend.loader import set_wait_graph
from luaplug.backend.native import GuardedEngine, import_native, prelude_code
from luaplug.contract import log_call_failure, log_create_failure
from luaplug.errors import MEMORY_TEXT, LuaError, LuaMemoryError, LuaplugError, LuaSyntaxError, map_errors
from luaplug.hostapi import NativeLookups, NativePeers, set_native_peers

__all__ = [
    "CAP_MEMORY_LIMIT",
    "CAP_NESTED_SAME_BUNDLE",
    "CAP_PARALLEL_STATES",
    "CAP_REFUSES_BYTECODE",
    "DEFAULT_OPTIONS",
    "MEMORY_TEXT",
    "NO_NATIVE_ENTRY",
    "BackendInfo",
    "BackendRegistry",
    "ContractProvider",
    "DispatchType",
    "Engine",
    "EngineState",
    "FastCall",
    "GuardedEngine",
    "LuaError",
    "LuaMemoryError",
    "LuaSyntaxError",
    "LuaplugError",
    "NativeLookups",
    "NativePeers",
    "PythonBackedContract",
    "StateOptions",
    "abi_ffi",
    "get_include",
    "hookimpl",
    "import_native",
    "log_call_failure",
    "log_create_failure",
    "lua_errors",
    "map_errors",
    "native_entries",
    "peer_interface",
    "prelude_code",
    "prelude_source",
    "python_interface",
    "register_backends",
    "vm_interface",
    "set_wait_graph",
    "set_native_peers",
]


def get_include() -> str:
    """The directory of ``luaplug_entry.h``, the per-instance native entry a backend's C extension
    compiles (its protocol is documented in the header)."""
    return os.path.dirname(os.path.abspath(__file__))
