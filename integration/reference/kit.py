"""The reference runtime (polyplug 0.1.3) as one more runtime of the conformance kit.

:class:`KitRuntime` gives the kit's ``protocol`` cases the part of :class:`luaplug.Runtime` they
use (:mod:`luaplug.testing.hooks`), over :class:`ReferenceRuntime`; the ``conftest.py`` beside
it registers it as ``--luaplug-backend reference``. Bundles are loaded from vendored copies (the
wheels ship no Lua SDK) under a directory of the runtime's own; a reload copies the original again.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.ids import bundle_id

from .adapter import Address, ReferenceContract, ReferenceRuntime, ReferenceRuntimeError, vendored_copy

__all__ = ["KitContract", "KitInstance", "KitRuntime"]

_HOT_RELOAD_DISABLED = "hot-reload is disabled in runtime config"


def _luaplug_error(exc: ReferenceRuntimeError, bundle: str) -> luaplug.LuaplugError:
    """The luaplug error for a refusal of the reference (its text kept)."""
    if exc.message == _HOT_RELOAD_DISABLED:
        return luaplug.HotReloadDisabled()
    if exc.bundle is not None:
        return luaplug.InitFailed(bundle, exc.error, file=exc.bundle if exc.bundle != bundle else None)
    return luaplug.LoadError(bundle, exc.message)


class _HostApi:
    """What a :class:`luaplug.CallArena` reads of its host's ``HostApi``: the address."""

    def __init__(self, address: int) -> None:
        self.address = address


class KitRuntime:
    """A hot-reloading (or not) reference runtime with luaplug's names for the protocol operations."""

    #: The capabilities of luaplug's names the reference is known to have (its own suite shows
    #: a nested call into another contract of the same bundle working).
    capabilities: frozenset[str] = frozenset({"nested_same_bundle_calls"})

    def __init__(self, hot_reload: bool = False) -> None:
        self._ref = ReferenceRuntime(hot_reload=hot_reload)
        self._dir = Path(tempfile.mkdtemp(prefix="luaplug-kit-reference-"))
        self._sources: dict[str, Path] = {}
        self._copies: dict[str, Path] = {}
        self._loads = itertools.count()
        self.host_api = _HostApi(self._ref.host_api_address)

    @property
    def host_api_address(self) -> int:
        return self._ref.host_api_address

    @property
    def revision(self) -> int:
        return self._ref.revision

    def load(self, path: str | Path) -> str:
        source = Path(path)
        copy = vendored_copy(source, self._dir / str(next(self._loads)))
        name = _manifest(source)["name"]
        try:
            self._ref.load(copy)
        except ReferenceRuntimeError as exc:
            raise _luaplug_error(exc, name) from exc
        self._sources[name], self._copies[name] = source, copy
        return str(name)

    def load_code(self, source: str, name: str) -> str:
        """``source`` as bundle ``name``, from a bundle directory whose entry file is named ``name``:
        the reference names the chunk after the entry file, as luaplug names an in-memory bundle's."""
        d = self._dir / f"code{next(self._loads)}" / name
        d.mkdir(parents=True)
        manifest = f'name = "{name}"\nid = {bundle_id(name)}\nloader = "lua"\nfile = "{name}"\nversion = "1.0.0"\n'
        (d / "manifest.toml").write_text(manifest, "utf-8")
        (d / name).write_text(source, "utf-8")
        return self.load(d)

    def reload(self, name: str) -> None:
        copy = self._copies[name]
        shutil.rmtree(copy)
        vendored_copy(self._sources[name], copy.parent)
        try:
            self._ref.reload(name)
        except ReferenceRuntimeError as exc:
            raise _luaplug_error(exc, name) from exc

    def unload(self, name: str) -> None:
        try:
            self._ref.unload(name)
        except ReferenceRuntimeError as exc:
            raise _luaplug_error(exc, name) from exc
        self._sources.pop(name, None)
        self._copies.pop(name, None)

    def contract(self, name: str) -> KitContract:
        try:
            found = self._ref.contract(name)
        except ReferenceRuntimeError as exc:
            contract, _, major = name.rpartition("@")
            raise luaplug.ContractNotFoundError(contract, int(major)) from exc
        return KitContract(found, lambda: self._function_count(name))

    def _function_count(self, name: str) -> int:
        """The count of the manifest's ``[function_count]`` table, which the reference checked at load."""
        for source in self._sources.values():
            count = _manifest(source).get("function_count", {}).get(name)
            if count is not None:
                return int(count)
        raise LookupError(f"no [function_count] entry for {name}")

    def close(self) -> None:
        self._ref.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> KitRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _manifest(path: Path) -> dict[str, Any]:
    with (path / "manifest.toml").open("rb") as f:
        return tomllib.load(f)


class KitContract:
    """A contract of a :class:`KitRuntime`: its default impl, its instances and its C interface."""

    def __init__(self, contract: ReferenceContract, function_count: Callable[[], int]) -> None:
        self._contract = contract
        self._function_count = function_count

    @property
    def function_count(self) -> int:
        return self._function_count()

    @property
    def name(self) -> str:
        return self._contract.name

    @property
    def default(self) -> KitInstance:
        return KitInstance(self._contract, 0)

    @property
    def interface_address(self) -> int:
        return int(ffi.cast("uintptr_t", self._contract.resolve()))

    def create_instance(self) -> KitInstance:
        instance = self._contract.create_instance()
        if instance == 0:
            raise luaplug.LuaplugError(f"contract {self.name}: the factory failed")
        return KitInstance(self._contract, instance)


class KitInstance:
    """An instance (``id`` 0: the default impl) called through ``dispatch.vm.call``."""

    def __init__(self, contract: ReferenceContract, instance: int) -> None:
        self._contract = contract
        self.id = instance

    def dispatch(self, fn_id: int, args: Address = 0, out: Address = 0, arena: Address = 0) -> int:
        """The call's ``AbiError`` code; ``StaleHandle`` once the contract's handle resolves to null."""
        try:
            return self._contract.dispatch(fn_id, args, out, arena, self.id)
        except ReferenceRuntimeError as exc:
            if exc.message.endswith("the handle is stale"):
                return AbiErrorCode.StaleHandle
            raise

    def call(self, fn_id: int, args: Address = 0, out: Address = 0, arena: Address = 0) -> None:
        code = self.dispatch(fn_id, args, out, arena)
        if code != AbiErrorCode.Ok:
            raise luaplug.DispatchError(code, contract=self._contract.name, fn_id=fn_id)

    def destroy(self) -> None:
        if self.id:
            self._contract.destroy_instance(self.id)
