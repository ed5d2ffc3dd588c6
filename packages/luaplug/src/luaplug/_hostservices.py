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
from .ids import guest_contract_id, split_contract_name
from .registry import Registration

if TYPE_CHECKING:
    from ._hosttable import HostContractTable
    from .hostapi import HostApi
    from .registry import Registry

__all__ = ["HostApiServices"]


class HostApiServices:
    """The ``_host_*`` services of a runtime (see :class:`luaplug.hostapi.HostServices`)."""

    registry: Registry
    host_api: HostApi
    _host_contracts: HostContractTable

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
            # Outside a load nothing owns it: it stays for the runtime's life.
            try:
                self._host_contracts.add(guest_entry(iface, 0, "<guest>"))
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

    def _host_resolve(self, index: int, generation: int) -> Any:
        reg = self.registry.resolve(index, generation)
        if reg is None:
            return ffi.NULL
        scope = init_scope.scope
        if scope is not None and reg.contract_id not in scope.declared:
            # A handle is no way around the find rule: during init a bundle reaches only the
            # contracts it declared, whatever handle it made up.
            return ffi.NULL
        return reg.iface

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
        name, given = split_contract_name(display)
        major = int(desc.version.major) if given is None else given
        if not name or guest_contract_id(name, major) != iface.contract_id:
            return AbiErrorCode.Generic, "contract id does not match the descriptor's name"
        reg = Registration(
            contract_id=int(iface.contract_id),
            contract_name=name,
            major=major,
            plugin_name=plugin,
            bundle_id=0,
            bundle_name="<host>",
            iface=Registration.copy_interface(iface),
        )
        try:
            self.registry.commit([reg])
        except DuplicateProvider as exc:
            self.host_api.set_last_error(str(exc))
            return AbiErrorCode.DuplicateProvider, str(exc)
        self.host_api.bump_revision()
        return AbiErrorCode.Ok, ""
