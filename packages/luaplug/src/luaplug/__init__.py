"""luaplug: load Lua (LuaJIT) plugin bundles into isolated VMs and call their contracts.

Speaks the polyplug Lua guest protocol and C ABI; the engine comes from a
backend plugin (``luaplug-lupa``, ``luaplug-cffi``).
"""

from __future__ import annotations

# Every public name is imported on first access (PEP 562): ``import luaplug`` stays cheap
# and ``luaplug.Runtime(...)`` pulls in only what a runtime needs. The imports below are
# for type checkers and readers; ``TYPE_CHECKING`` is spelled out so that importing the
# package does not import ``typing``.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import abi, epoch, events, ids, manifest
    from ._version import __version__
    from .abi import AbiErrorCode, DispatchType, LogLevel
    from .arena import CallArena
    from .backends import available_backends, installed_backends
    from .config import Config
    from .contract import Contract, Instance
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
    from .loader import BundleLoader, ContractProvider
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
    "BundleLoader",
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


#: The module of each lazily imported name other than the exceptions of :mod:`luaplug.errors`
#: (mirrors the imports above; a test keeps them in step).
_FROM: dict[str, str] = {
    "__version__": "_version",
    "AbiErrorCode": "abi",
    "DispatchType": "abi",
    "LogLevel": "abi",
    "CallArena": "arena",
    "available_backends": "backends",
    "installed_backends": "backends",
    "Config": "config",
    "Contract": "contract",
    "Instance": "contract",
    "Event": "events",
    "Phase": "events",
    "HostContract": "hostcontract",
    "BundleLoader": "loader",
    "ContractProvider": "loader",
    "Manifest": "manifest",
    "Provider": "registry",
    "Bundle": "runtime",
    "Runtime": "runtime",
    "sdk_path": "sdk",
}
#: Submodules reachable as attributes without an import of their own, as when this
#: package imported them all up front (``abi``, ``epoch``, ``events``, ``ids`` and
#: ``manifest`` are public names besides).
_SUBMODULES: frozenset[str] = frozenset(
    {
        "abi",
        "arena",
        "backends",
        "config",
        "contract",
        "engine",
        "epoch",
        "errors",
        "events",
        "hookspecs",
        "hostapi",
        "hostcontract",
        "ids",
        "loader",
        "lualoader",
        "manifest",
        "pyinterface",
        "registry",
        "reentry",
        "runtime",
        "sdk",
        "sources",
    }
)


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all attribute

    def __getattr__(name: str) -> object:
        from importlib import import_module

        if name in _SUBMODULES:
            return import_module(f"{__name__}.{name}")  # importing binds it as an attribute too
        if name in _FROM:
            module = _FROM[name]
        elif name in __all__:
            module = "errors"  # every other public name is an exception
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # later lookups find it without this function
        return value

    def __dir__() -> list[str]:
        return sorted((set(globals()) - {"TYPE_CHECKING"}) | set(__all__))
