"""A runtime's host contracts (runtime-semantics "Host contracts").

:class:`HostContractTable` holds the host contracts of one runtime, from Python
(:meth:`luaplug.Runtime.provide`) and from guests (``HostApi.register_host_contract``),
with the version negotiation of ``get_host_contract`` and the staging that keeps loads
all-or-nothing. Its entries are :class:`luaplug.hostcontract.HostEntry` objects; that
module, which turns Python objects into host contracts, is imported only when one is
served.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .abi import AbiErrorCode
from .abi import core_ffi as ffi
from .errors import DuplicateProvider

if TYPE_CHECKING:
    from .epoch import Collector
    from .hostcontract import HostEntry

__all__ = ["HostContractTable", "version_matches"]


def version_matches(version: tuple[int, int], min_version: int) -> bool:
    """Whether ``(major, minor)`` satisfies ``min_version`` = ``(major << 16) | minor`` (0: any)."""
    if min_version == 0:
        return True
    return version[0] == (min_version >> 16) and version[1] >= (min_version & 0xFFFF)


def _duplicate(entry: HostEntry, other: HostEntry) -> str:
    """Why ``entry`` is refused: ``other`` has its id (named by contract when either knows it)."""
    name = entry.name or other.name
    what = f"{name} (id {entry.contract_id:#018x})" if name else f"{entry.contract_id:#018x}"
    by = "the host (Runtime.provide)" if other.owner == 0 and other.owner_name == "<host>" else other.owner_name
    return f"host contract {what} is already registered (by {by})"


class HostContractTable:
    """The host contracts of one runtime.

    Guest registrations made during a load are staged under the loading bundle and
    published by :meth:`commit` with its contracts, or dropped by :meth:`discard`.
    """

    def __init__(self, collector: Collector) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, HostEntry] = {}
        self._staged: dict[int, list[HostEntry]] = {}
        self._collector = collector

    def _conflict(self, cid: int, owner: int, replacing: int | None) -> HostEntry | None:
        found = self._entries.get(cid)
        if found is not None and not (replacing is not None and found.owner == replacing):
            return found
        for e in self._staged.get(owner, ()):
            if e.contract_id == cid:
                return e
        return None

    def add(self, entry: HostEntry) -> None:
        """Publish ``entry`` now.

        :raises DuplicateProvider: the contract id is registered already
        """
        with self._lock:
            other = self._conflict(entry.contract_id, -1, None)
            if other is not None:
                raise DuplicateProvider(entry.owner_name, _duplicate(entry, other), contract=entry.name or other.name)
            self._entries[entry.contract_id] = entry

    def stage(self, entry: HostEntry, *, replacing: bool) -> str | None:
        """Hold ``entry`` until its bundle's load commits; why it is refused, else ``None``."""
        with self._lock:
            other = self._conflict(entry.contract_id, entry.owner, entry.owner if replacing else None)
            if other is not None:
                return _duplicate(entry, other)
            self._staged.setdefault(entry.owner, []).append(entry)
        return None

    def commit(self, owner: int, *, replacing: bool) -> None:
        """Publish what ``owner``'s load staged (a reload first withdraws its previous ones)."""
        with self._lock:
            staged = self._staged.pop(owner, [])
            old = self._withdraw_locked(owner) if replacing else []
            for e in staged:
                self._entries[e.contract_id] = e
        self._release(old)

    def discard(self, owner: int) -> None:
        """Drop what ``owner``'s failed load staged."""
        with self._lock:
            dropped = self._staged.pop(owner, [])
        self._release(dropped)

    def withdraw(self, owner: int) -> list[HostEntry]:
        """Remove every host contract ``owner`` registered (its VM is going away)."""
        with self._lock:
            old = self._withdraw_locked(owner)
        self._release(old)
        return old

    def _withdraw_locked(self, owner: int) -> list[HostEntry]:
        old = [e for e in self._entries.values() if e.owner == owner]
        for e in old:
            del self._entries[e.contract_id]
        return old

    def _release(self, entries: list[HostEntry]) -> None:
        # SAFETY: a guest may still hold an interface pointer it resolved; the memory goes
        # only after every pinned call returned.
        self._collector.release([e.keepalive for e in entries])

    def find(self, contract_id: int, min_version: int) -> tuple[int, HostEntry | None]:
        """``(code, entry)``: ``Ok`` with the entry, ``HostContractNotFound`` or ``HostContractVersionMismatch``."""
        entry = self._entries.get(contract_id)
        if entry is None:
            return int(AbiErrorCode.HostContractNotFound), None
        if not version_matches(entry.version, min_version):
            return int(AbiErrorCode.HostContractVersionMismatch), None
        return 0, entry

    def instance(self, entry: HostEntry) -> int:
        """A ``HostContractInstance.data`` for ``entry``: the cached one of a singleton, else a new one."""
        if entry.iface.singleton and entry.singleton_data:
            return entry.singleton_data
        out = ffi.new("HostContractInstance*")
        if entry.iface.create_instance == ffi.NULL:
            return 0
        entry.iface.create_instance(entry.iface, ffi.NULL, out)
        data = int(ffi.cast("uintptr_t", out.data))
        if entry.iface.singleton and data:
            with self._lock:
                if entry.singleton_data:  # another thread won the race: keep its instance
                    extra, data = data, entry.singleton_data
                else:
                    entry.singleton_data, extra = data, 0
            if extra and entry.iface.destroy_instance != ffi.NULL:
                entry.iface.destroy_instance(entry.iface, {"data": ffi.cast("void*", extra)})
        return data

    def entries(self) -> list[HostEntry]:
        """Every published entry, in registration order."""
        with self._lock:
            return list(self._entries.values())
