"""The interface a luaplug backend is written against, and the only luaplug package it imports.

A backend supplies an :class:`Engine` (one per runtime) whose :class:`EngineState` objects are
isolated LuaJIT VMs, and registers a :class:`BackendInfo` through the ``luaplug`` entry-point group
with a :data:`hookimpl`-marked ``luaplug_register_backends`` function. Everything else — manifests,
the prelude, the loader, the registry, the HostApi — is the core's.
"""

from __future__ import annotations

from luaplug.abi import DispatchType
from luaplug.abi import core_ffi as abi_ffi
from luaplug.backends import BackendInfo, BackendRegistry
from luaplug.engine import (
    CAP_MEMORY_LIMIT,
    CAP_NESTED_SAME_BUNDLE,
    CAP_PARALLEL_STATES,
    CAP_REFUSES_BYTECODE,
    DEFAULT_OPTIONS,
    Engine,
    EngineState,
    StateOptions,
    prelude_source,
)
from luaplug.errors import MEMORY_TEXT, LuaError, LuaMemoryError, LuaplugError, LuaSyntaxError
from luaplug.hookspecs import hookimpl
from luaplug.loader import ContractProvider, FastCall
from luaplug.lualoader import set_wait_graph
from luaplug.pyinterface import PythonBackedContract, python_interface

__all__ = [
    "CAP_MEMORY_LIMIT",
    "CAP_NESTED_SAME_BUNDLE",
    "CAP_PARALLEL_STATES",
    "CAP_REFUSES_BYTECODE",
    "DEFAULT_OPTIONS",
    "MEMORY_TEXT",
    "BackendInfo",
    "BackendRegistry",
    "ContractProvider",
    "DispatchType",
    "Engine",
    "EngineState",
    "FastCall",
    "LuaError",
    "LuaMemoryError",
    "LuaSyntaxError",
    "LuaplugError",
    "PythonBackedContract",
    "StateOptions",
    "abi_ffi",
    "hookimpl",
    "prelude_source",
    "python_interface",
    "set_wait_graph",
]
