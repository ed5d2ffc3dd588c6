"""What a runtime's ``HostApi`` callbacks ask of it (:class:`luaplug.hostapi.HostServices`).

A mixin of :class:`luaplug.Runtime`: these methods run inside C callbacks from
bundle code, answer with codes (never raise into C) and take only the locks of
the registry and the host-contract table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._deps import init_scope
from .abi import AbiErrorCode
from .abi import core_ffi as ffi
from .errors import DuplicateProvider
from .ids import guest_contract_id
from .registry import Registration

if TYPE_CHECKING:
    from ._hosttable import HostContractTable
    from .hostapi import HostApi
    from .lualoader import LuaLoader
    from .registry import Registry
    from .runtime import Bundle

__all__ = ["HostApiServices"]


class HostApiServices:
    """The ``_host_*`` services of a runtime (see :class:`luaplug.hostapi.HostServices`)."""

    registry: Registry
    host_api: HostApi
    _host_contracts: HostContractTable
    _bundles: dict[str, Bundle]
    _loaders: dict[str, LuaLoader]
    #: Contracts a bundle's init registered through the HostApi, by bundle id: owned by that
    #: bundle once its load commits (Runtime._commit), withdrawn if it fails.
    _init_aliases: dict[int, list[Registration]]

    def _owner(self) -> tuple[int, str] | str:
        """Who owns what the HostApi registers now: ``(bundle id, name)`` of the one bundle
        whose Lua code runs on this thread, ``(0, "<guest>")`` when none does, or why no owner
        can be told (a nested peer call runs several bundles on this thread).

        Everything a bundle registers points into its VM, so it goes when the bundle goes."""
        running = [
            (b.id, b.name)
            for b in list(self._bundles.values())
            if (loader := self._loaders.get(b.backend)) is not None and loader.running_here(b.id)
        ]
        if len(running) > 1:
            return "a registration from a nested peer call (several bundles run on this thread) is refused"
        return running[0] if running else (0, "<guest>")

    def _host_find(self, contract_id: int, min_major: int) -> tuple[int, int] | None:
        scope = init_scope.scope
        if scope is not None and contract_id not in scope.declared:
            return None  # an undeclared lookup during init (runtime-semantics "Dependencies")
        return self.registry.find(contract_id, min_major)

    def _host_get_host_contract(self, contract_id: int, min_version: int) -> tuple[int, int]:
        code, entry = self._host_contracts.find(contract_id, min_version)
        if entry is None:
            return code, 0
        data = self._host_contracts.instance(entry)
        if not data and entry.owner == 0 and entry.keepalive:
            from .hostcontract import HostContract  # already imported: it made every entry

            if isinstance(entry.keepalive[0], HostContract):
                return AbiErrorCode.HostContractCallFailed, 0
        return AbiErrorCode.Ok, data

    def _host_resolve_host_contract(self, contract_id: int, min_version: int) -> Any:
        _code, entry = self._host_contracts.find(contract_id, min_version)
        return ffi.NULL if entry is None else entry.iface

    def _host_register_host_contract(self, iface: Any) -> tuple[int, str]:
        if iface.create_instance == ffi.NULL or iface.destroy_instance == ffi.NULL:
            return AbiErrorCode.InvalidPointer, "null function pointer"
        from .hostcontract import guest_entry  # not imported by a runtime that serves no host contract

        scope = init_scope.scope
        if scope is None:
            # Outside a load: owned by the bundle running on this thread (none: the runtime).
            owner = self._owner()
            if isinstance(owner, str):
                self.host_api.set_last_error(owner)
                return AbiErrorCode.Generic, owner
            try:
                self._host_contracts.add(guest_entry(iface, owner[0], owner[1]))
            except DuplicateProvider as exc:
                self.host_api.set_last_error(exc.error)
                return AbiErrorCode.DuplicateProvider, exc.error
            return AbiErrorCode.Ok, ""
        entry = guest_entry(iface, scope.manifest.id, scope.manifest.name)
        text = self._host_contracts.stage(entry, replacing=scope.replacing)
        if text is not None:
            self.host_api.set_last_error(text)
            return AbiErrorCode.DuplicateProvider, text
        return AbiErrorCode.Ok, ""

    def _served_by(self, iface: Any) -> tuple[int, str] | None:
        """``(bundle id, name)`` of the loaded bundle whose contract has this dispatch target."""
        vm = iface.dispatch.vm
        for reg in self.registry.providers():
            own = reg.iface.dispatch.vm
            if reg.bundle_id and own.loader_data.data == vm.loader_data.data and own.call == vm.call:
                return reg.bundle_id, reg.bundle_name
        return None

    def _host_resolve(self, index: int, generation: int) -> Any:
        reg = self.registry.resolve(index, generation)
        return ffi.NULL if reg is None else reg.iface

    def _host_register(self, desc: Any, iface: Any) -> tuple[int, str]:
        if (
            iface.create_instance == ffi.NULL
            or iface.destroy_instance == ffi.NULL
            or iface.dispatch.vm.call == ffi.NULL
        ):
            return AbiErrorCode.InvalidPointer, "null function pointer"
        try:
            display = ffi.string(ffi.cast("char*", desc.contract_name.ptr), desc.contract_name.len).decode("utf-8")
            plugin = ffi.string(ffi.cast("char*", desc.name.ptr), desc.name.len).decode("utf-8")
        except UnicodeDecodeError:
            return AbiErrorCode.Generic, "descriptor names must be UTF-8"
        name, _, ver = display.partition("@")
        major = int(ver) if ver.isdigit() else int(desc.version.major)
        if not name or guest_contract_id(name, major) != iface.contract_id:
            return AbiErrorCode.Generic, "contract id does not match the descriptor's name"
        scope = init_scope.scope
        # The interface points into a bundle's VM: the registration goes with that bundle. An
        # interface a loaded bundle serves is that bundle's; any other is the registering
        # bundle's (during init: once its load commits, see _init_aliases).
        served = self._served_by(iface)
        owner = served or ((0, "<host>") if scope is not None else self._owner())
        if isinstance(owner, str):
            self.host_api.set_last_error(owner)
            return AbiErrorCode.Generic, owner
        reg = Registration(
            contract_id=int(iface.contract_id),
            contract_name=name,
            major=major,
            plugin_name=plugin,
            bundle_id=owner[0],
            bundle_name=owner[1] if owner[0] else "<host>",
            iface=Registration.copy_interface(iface),
        )
        try:
            self.registry.commit([reg])
        except DuplicateProvider as exc:
            self.host_api.set_last_error(str(exc))
            return AbiErrorCode.DuplicateProvider, str(exc)
        if scope is not None and served is None:
            self._init_aliases.setdefault(scope.manifest.id, []).append(reg)
        self.host_api.bump_revision()
        return AbiErrorCode.Ok, ""
