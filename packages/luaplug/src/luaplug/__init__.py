"""luaplug: load Lua (LuaJIT) plugin bundles into isolated VMs and call their contracts.

Speaks the polyplug Lua guest protocol and C ABI; the engine comes from a
backend plugin (``luaplug-lupa``, ``luaplug-cffi``).
"""

from __future__ import annotations

# Plain re-exports. The optional parts (``luaplug.typed``, ``luaplug.cli``, the TOML reader,
# ``importlib.metadata``) are imported by the functions that use them, on first use.
from . import abi, epoch, events, ids, manifest
from ._version import __version__
from .abi import AbiErrorCode, DispatchType, LogLevel
from .arena import CallArena
from .backend.discovery import available_backends, installed_backends
from .config import Config
from .contract import Contract, ContractProvider, Instance
from .errors import (
    ApiSpecError,
    BackendNotFoundError,
    BackendUnavailableError,
    CapabilityError,
    ConfigError,
    ContractNotFoundError,
    DependencyError,
    DispatchError,
    DispatchLimitError,
    DispatchMemoryError,
    DuplicateProvider,
    HotReloadDisabled,
    InitFailed,
    InitLimitError,
    InitMemoryError,
    InstructionLimitError,
    InvalidSourceEncoding,
    LoadError,
    LuaError,
    LuaMemoryError,
    LuaplugError,
    LuaSyntaxError,
    ManifestError,
    ManifestMissingFile,
    RuntimeClosedError,
)
from .events import Event, Phase
from .hostcontract import HostContract
from .manifest import Manifest
from .registry import Provider
from .runtime import Bundle, Runtime
from .sdk import sdk_path

__all__ = [
    "DispatchLimitError",
    "DispatchMemoryError",
    "InitLimitError",
    "InitMemoryError",
    "InstructionLimitError",
    "AbiErrorCode",
    "ApiSpecError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "CapabilityError",
    "Bundle",
    "CallArena",
    "Config",
    "ConfigError",
    "Contract",
    "ContractNotFoundError",
    "ContractProvider",
    "DependencyError",
    "DispatchError",
    "DispatchType",
    "DuplicateProvider",
    "Event",
    "HostContract",
    "HotReloadDisabled",
    "InitFailed",
    "Instance",
    "InvalidSourceEncoding",
    "LoadError",
    "LogLevel",
    "LuaError",
    "LuaMemoryError",
    "LuaSyntaxError",
    "LuaplugError",
    "Manifest",
    "ManifestError",
    "ManifestMissingFile",
    "Phase",
    "Provider",
    "Runtime",
    "RuntimeClosedError",
    "__version__",
    "abi",
    "available_backends",
    "epoch",
    "events",
    "ids",
    "installed_backends",
    "manifest",
    "sdk_path",
]
