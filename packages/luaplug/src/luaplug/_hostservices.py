"""What a runtime's ``HostApi`` callbacks ask of it (:class:`luaplug.hostapi.HostServices`).

A mixin of :class:`luaplug.Runtime`: these methods run inside C callbacks from
bundle code and answer with codes (never raise into C). Lookups take only the
locks of the registry and the host-contract table. The bundle operations
(``load_bundle``, ``reload_bundle``, ``unload_bundle``) take the runtime lock
like the Python API, with a bounded wait (see :meth:`HostApiServices._guest_op`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import reentry
from ._deps import DependencyIndex, depends_on, init_scope
from .abi import AbiErrorCode
from .abi import core_ffi as ffi
from .errors import DuplicateProvider, HotReloadDisabled, LuaplugError, RuntimeClosedError
from .events import deferring, emit
from .ids import bundle_id, guest_contract_id, split_contract_name
from .registry import Registration

if TYPE_CHECKING:
    from .events import EventHub
    from .hostapi import HostApi
    from .hostcontract import HostContractTable
    from .lualoader import LuaLoader
    from .manifest import Dependency, Manifest
    from .registry import Registry
    from .runtime import Bundle

__all__ = ["GUEST_LOCK_WAIT", "HostApiServices", "dependency_info"]

_log: Final = logging.getLogger("luaplug.hostapi")

#: Seconds a bundle operation from a guest waits for the runtime lock before it fails.
#: The guest's VM stays held meanwhile; a load on another thread whose init calls into
#: that VM would wait for it forever, so the wait must end.
GUEST_LOCK_WAIT: Final = 5.0


class _Refused(Exception):
    """A bundle operation a guest asked for, refused with ``code`` and ``text``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def dependency_info(d: Dependency) -> tuple[int, int, int]:
    """``(contract_id, min_version, bundle_id)`` of one ``[[dependency]]`` (a ``DependencyInfo``).

    ``contract_id`` is the declared one, else ``guest_contract_id(contract, major)`` when a
    contract is named, else 0; ``min_version`` is the major of ``min_version`` (what
    ``find_guest_contract`` takes); ``bundle_id`` is the declared one, else that of the named
    bundle, else 0.
    """
    major = d.min_version[0]
    cid = d.contract_id
    if cid is None:
        cid = guest_contract_id(d.contract, major or 1) if d.contract else 0
    bid = d.bundle_id
    if bid is None:
        bid = bundle_id(d.bundle) if d.bundle else 0
    return cid, major, bid


class HostApiServices:
    """The ``_host_*`` services of a runtime (see :class:`luaplug.hostapi.HostServices`)."""

    registry: Registry
    host_api: HostApi
    hot_reload: bool
    _host_contracts: HostContractTable
    _bundles: dict[str, Bundle]
    _dep_index: DependencyIndex
    _loaders: dict[str, LuaLoader]
    _loading: dict[int, str]
    _lock: threading.RLock
    _events: EventHub
    #: seconds a guest's bundle operation waits for the runtime lock (:data:`GUEST_LOCK_WAIT`)
    _guest_lock_wait: float = GUEST_LOCK_WAIT
    #: Contracts a bundle's init registered through the HostApi, by bundle id: owned by that
    #: bundle once its load commits (Runtime._commit), withdrawn if it fails.
    _init_aliases: dict[int, list[Registration]]

    if TYPE_CHECKING:  # provided by Runtime

        def load(self, path: str) -> Bundle: ...

        def unload(self, bundle: str) -> None: ...

        def _reload_locked(self, old: Bundle, done: set[str], manifest: Manifest | None = None) -> Bundle: ...

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

    # -- introspection ------------------------------------------------------------

    def _host_list_bundles(self) -> list[int]:
        return [b.id for b in tuple(self._bundles.values())]

    def _host_find_all(self, contract_id: int, min_major: int) -> list[tuple[int, int]]:
        scope = init_scope.scope
        if scope is not None and contract_id not in scope.declared:
            return []  # an undeclared lookup during init, as _host_find
        return self.registry.find_all(contract_id, min_major)

    def _host_dependencies(self) -> list[tuple[int, int, int]]:
        scope = init_scope.scope
        if scope is None:
            return []  # only a bundle whose polyplug_init runs has a caller to answer for
        return [dependency_info(d) for d in scope.manifest.dependencies]

    # -- bundle operations ----------------------------------------------------------

    def _host_load_bundle(self, path: str) -> tuple[int, str]:
        return self._guest_op(lambda: self._guest_load(path))

    def _host_reload_bundle(self, path: str) -> tuple[int, str]:
        return self._guest_op(lambda: self._guest_reload(path))

    def _host_unload_bundle(self, bundle: int) -> tuple[int, str]:
        return self._guest_op(lambda: self._guest_unload(bundle))

    def _guest_op(self, op: Callable[[], None]) -> tuple[int, str]:
        """Run ``op`` under the runtime lock; ``(code, error text)``, never an exception.

        The lock is the Python API's (operations stay serialized per runtime) and is
        re-entrant, so an operation from a bundle whose init this thread runs proceeds.
        Another thread's operation is waited for at most :attr:`_guest_lock_wait` seconds.
        Logs and events are delivered after the release, as host code running inside
        the calling guest's Lua call.
        """
        try:
            with reentry.user_code(), deferring():
                if not self._lock.acquire(timeout=self._guest_lock_wait):
                    return AbiErrorCode.Generic, (
                        f"the runtime is busy: another thread held its lock for {self._guest_lock_wait:g} s "
                        "(a load, reload or unload); try again"
                    )
                try:
                    op()
                finally:
                    self._lock.release()
        except _Refused as exc:
            return exc.code, exc.text
        except LuaplugError as exc:
            return AbiErrorCode.Generic, str(exc)
        except Exception as exc:  # never into C: a guest's request must not break the host
            emit(_log, logging.ERROR, "a bundle operation requested by a guest failed", exc_info=True)
            return AbiErrorCode.Generic, f"{type(exc).__name__}: {exc}"
        return AbiErrorCode.Ok, ""

    def _guest_manifest(self, path: str) -> Manifest:
        from .manifest import load  # imported by the first load already

        if getattr(self, "_closed", False):
            raise RuntimeClosedError("the runtime is closed")
        return load(path)

    def _refuse_running(self, b: Bundle, doing: str) -> None:
        """Refuse ``doing`` on ``b`` when it is on this thread's call stack (running or initialising)."""
        if b.id in self._loading:
            raise _Refused(
                AbiErrorCode.ReentrantCall,
                f"cannot {doing} bundle `{b.name}`: its load or reload is running on this thread",
            )
        loader = self._loaders.get(b.backend)
        if loader is not None and loader.running_here(b.id):
            raise _Refused(
                AbiErrorCode.ReentrantCall,
                f"cannot {doing} bundle `{b.name}` from inside a call into it: it is on this thread's call stack",
            )

    def _guest_load(self, path: str) -> None:
        m = self._guest_manifest(path)
        if m.id in self._loading:
            raise _Refused(
                AbiErrorCode.ReentrantCall, f"cannot load bundle `{m.name}`: its load is running on this thread"
            )
        self.load(path)

    def _guest_reload(self, path: str) -> None:
        if not self.hot_reload:
            raise HotReloadDisabled()
        m = self._guest_manifest(path)
        old = self._bundles.get(m.name)
        if old is None:
            self._guest_load(path)  # as on the reference: reloading a bundle that is not loaded loads it
            return
        for b in self._reloaded_with(old):
            self._refuse_running(b, "reload")
        self._reload_locked(old, set(), m)
        emit(_log, logging.INFO, "reloaded bundle %s (requested by a guest)", m.name)

    def _reloaded_with(self, old: Bundle) -> list[Bundle]:
        """``old`` and the dependents a reload of it reloads too (``needs_reinit_on_dep_reload``)."""
        out = [old]
        seen = {old.name}
        i = 0
        while i < len(out):
            b = out[i]
            i += 1
            provided = {r.contract_id for r in self.registry.of_bundle(b.id)}
            for name in sorted(self._dep_index.candidates(b.name, b.id, provided)):
                dep = self._bundles.get(name)
                if dep is None or name in seen or not dep.manifest.needs_reinit_on_dep_reload:
                    continue
                if depends_on(dep.manifest, b.name, b.id, provided):
                    seen.add(dep.name)
                    out.append(dep)
        return out

    def _guest_unload(self, bundle: int) -> None:
        if getattr(self, "_closed", False):
            raise RuntimeClosedError("the runtime is closed")
        if bundle in self._loading:
            name = self._loading[bundle]
            raise _Refused(
                AbiErrorCode.ReentrantCall,
                f"cannot unload bundle `{name}`: its load or reload is running on this thread",
            )
        b = next((b for b in self._bundles.values() if b.id == bundle), None)
        if b is None:
            return  # spec §10: unloading an unknown bundle is a no-op
        self._refuse_running(b, "unload")
        self.unload(b.name)  # refused while dependents are loaded (DependencyError)
