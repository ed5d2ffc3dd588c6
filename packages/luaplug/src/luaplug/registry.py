"""The contract registry: providers, generation-counted handles, revisions.

A *slot* holds one provider of one contract (a contract id from one bundle).
Handles are ``(index, generation)``: unloading a provider bumps its slot's
generation (old handles go stale); a reload swaps the provider in place and
keeps the generation, so old handles reach the new version.

Locking: one lock guards the tables; it is never held while Lua or a
callback runs. Interface memory of withdrawn providers is released through
the epoch, since a guest may still hold the pointer it resolved.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .abi import AbiErrorCode
from .abi import core_ffi as ffi
from .epoch import Collector
from .errors import DuplicateProvider

if TYPE_CHECKING:
    from .contract import ContractProvider

__all__ = ["Provider", "Registration", "Registry"]


class Provider(str):
    """One provider of a contract, as :meth:`luaplug.Runtime.providers` and
    :meth:`~luaplug.Runtime.contracts` list it.

    It is the string ``"name@major"`` (what ``contracts()`` always returned: it compares,
    hashes and prints as that string) and says who provides the contract.

    :ivar contract_name: the contract name without the major (``"text.Filter"``)
    :ivar major: the contract's major version
    :ivar bundle: the name of the providing bundle (``"<host>"`` for a contract a guest
        registered outside any load)
    :ivar plugin: the plugin name the provider registered under
    :ivar bundle_id: the providing bundle's id
    """

    contract_name: str
    major: int
    bundle: str
    plugin: str
    bundle_id: int

    def __new__(cls, contract_name: str, major: int, *, bundle: str, plugin: str, bundle_id: int = 0) -> Provider:
        self = super().__new__(cls, f"{contract_name}@{major}")
        self.__dict__.update(
            contract_name=contract_name, major=major, bundle=bundle, plugin=plugin, bundle_id=bundle_id
        )
        return self

    @classmethod
    def of(cls, reg: Registration) -> Provider:
        """The provider a registration describes."""
        return cls(
            reg.contract_name, reg.major, bundle=reg.bundle_name, plugin=reg.plugin_name, bundle_id=reg.bundle_id
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Provider is read-only (cannot set {name!r})")

    def __getnewargs_ex__(self) -> tuple[tuple[str, int], dict[str, object]]:
        return (self.contract_name, self.major), {
            "bundle": self.bundle,
            "plugin": self.plugin,
            "bundle_id": self.bundle_id,
        }

    def __repr__(self) -> str:
        return f"Provider({str(self)!r}, bundle={self.bundle!r}, plugin={self.plugin!r})"


@dataclass(eq=False)
class Registration:
    """One provider of one contract, as the registry keeps it.

    :ivar iface: the registry's own ``GuestContractInterface*`` copy
    :ivar provider: the Python-side provider, or ``None`` for a contract a
        guest registered through ``HostApi.register_guest_contract``
    """

    contract_id: int
    contract_name: str
    major: int
    plugin_name: str
    bundle_id: int
    bundle_name: str
    iface: Any
    provider: ContractProvider | None = None
    keepalive: list[object] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        """``"name@major"``."""
        return f"{self.contract_name}@{self.major}"

    @classmethod
    def copy_interface(cls, iface: Any) -> Any:
        """A registry-owned copy of a ``GuestContractInterface``."""
        own = ffi.new("GuestContractInterface*")
        ffi.memmove(own, iface, ffi.sizeof("GuestContractInterface"))
        return own


_PEER_ROW = struct.Struct("=QIIII")
_PEER_SLOT = struct.Struct("@NII")


@dataclass(eq=False)
class _Slot:
    """One handle index: its generation (bumped when its provider is withdrawn) and provider."""

    generation: int = 0
    reg: Registration | None = None


class Registry:
    """Contract providers of one runtime.

    :param collector: the epoch through which withdrawn interfaces are released
    """

    def __init__(self, collector: Collector) -> None:
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._free: list[int] = []
        self._by_cid: dict[int, list[int]] = {}
        #: slot indices of each bundle's live registrations (a bundle's changes never scan every slot)
        self._by_bundle: dict[int, list[int]] = {}
        self._collector = collector
        #: Called under the lock before every change becomes visible (HostApi.peers_changed).
        self.on_change: Callable[[], object] | None = None

    # -- lookups ------------------------------------------------------------------

    def find(self, contract_id: int, min_major: int = 0) -> tuple[int, int] | None:
        """The first-registered provider of ``contract_id`` with major >= ``min_major``."""
        with self._lock:
            for index in self._by_cid.get(contract_id, ()):
                slot = self._slots[index]
                if slot.reg is not None and slot.reg.major >= min_major:
                    return index, slot.generation
        return None

    def find_all(self, contract_id: int, min_major: int = 0) -> list[tuple[int, int]]:
        """Every provider of ``contract_id`` with major >= ``min_major``, first-registered first."""
        with self._lock:
            out = []
            for index in self._by_cid.get(contract_id, ()):
                slot = self._slots[index]
                if slot.reg is not None and slot.reg.major >= min_major:
                    out.append((index, slot.generation))
            return out

    def registrations(self, contract_id: int) -> list[tuple[int, int, Registration]]:
        """Every provider of ``contract_id`` as ``(index, generation, registration)``,
        first-registered first (the order :meth:`find` picks in)."""
        with self._lock:
            out = []
            for index in self._by_cid.get(contract_id, ()):
                slot = self._slots[index]
                if slot.reg is not None:
                    out.append((index, slot.generation, slot.reg))
            return out

    def resolve(self, index: int, generation: int) -> Registration | None:
        """The registration a handle names, or ``None`` when stale."""
        slots = self._slots
        if 0 <= index < len(slots):
            slot = slots[index]
            if slot.generation == generation:
                return slot.reg
        return None

    def providers(self) -> list[Registration]:
        """Every live registration, in slot order."""
        with self._lock:
            return [s.reg for s in self._slots if s.reg is not None]

    def of_bundle(self, bundle_id: int) -> list[Registration]:
        """Live registrations of one bundle, in slot order."""
        with self._lock:
            return [self._slots[i].reg for i in sorted(self._by_bundle.get(bundle_id, ()))]  # type: ignore[misc]

    def sole_provided(self, bundle_id: int) -> set[int]:
        """The contract ids that bundle ``bundle_id`` provides and no other bundle does."""
        with self._lock:
            out = set()
            for index in self._by_bundle.get(bundle_id, ()):
                reg = self._slots[index].reg
                assert reg is not None
                others = self._by_cid.get(reg.contract_id, ())
                if all(self._slots[i].reg.bundle_id == bundle_id for i in others):  # type: ignore[union-attr]
                    out.add(reg.contract_id)
            return out

    def publish_peers(self, publish: Callable[[bytes, bytes], object]) -> None:
        """Hand the providers to ``publish(rows, slots)``, under the lock (no change in between):
        ``rows`` (``=QIIII``: contract id, major, index, generation, 0) sorted by contract id,
        each id's in the order :meth:`find` picks; ``slots`` (``@NII``: the interface's address
        or 0, generation, 0) per handle index."""
        row, slot = _PEER_ROW, _PEER_SLOT
        with self._lock:
            rows = []
            for cid in sorted(self._by_cid):
                for index in self._by_cid[cid]:
                    s = self._slots[index]
                    if s.reg is not None:
                        rows.append(row.pack(cid, s.reg.major, index, s.generation, 0))
            slots = [
                slot.pack(int(ffi.cast("uintptr_t", s.reg.iface)) if s.reg is not None else 0, s.generation, 0)
                for s in self._slots
            ]
            publish(b"".join(rows), b"".join(slots))

    def _changing(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- changes ------------------------------------------------------------------

    def check(
        self, regs: Iterable[Registration], *, replacing: int | None = None
    ) -> tuple[int, str, Registration] | None:
        """Why ``regs`` cannot be registered, as ``(code, text, refused registration)``, or ``None``.

        :param replacing: a bundle id whose current registrations ``regs`` replace
        """
        seen: set[int] = set()
        with self._lock:
            for reg in regs:
                if reg.contract_id in seen:
                    return AbiErrorCode.DuplicateProvider, f"contract {reg.display_name} registered twice", reg
                seen.add(reg.contract_id)
                for index in self._by_cid.get(reg.contract_id, ()):
                    other = self._slots[index].reg
                    if other is None:
                        continue
                    if other.display_name != reg.display_name:
                        cid = f"{reg.contract_id:#018x}"
                        text = f"contract id {cid} collides: {other.display_name} vs {reg.display_name}"
                        return AbiErrorCode.DuplicateProvider, text, reg
                    if other.bundle_id == reg.bundle_id and reg.bundle_id != replacing:
                        text = f"bundle {reg.bundle_name!r} already provides contract {reg.display_name}"
                        return AbiErrorCode.DuplicateProvider, text, reg
        return None

    def commit(self, regs: list[Registration], *, replacing: int | None = None) -> list[Registration]:
        """Publish ``regs`` atomically.

        With ``replacing``, that bundle's providers are swapped for ``regs``: a
        contract it still provides keeps its slot and generation, one it no
        longer provides is withdrawn, a new one gets a slot.

        :returns: the registrations withdrawn or superseded
        :raises DuplicateProvider: when :meth:`check` refuses ``regs``
        """
        problem = self.check(regs, replacing=replacing)
        if problem is not None:
            _code, text, refused = problem
            raise DuplicateProvider(refused.bundle_name, text, contract=refused.contract_name)
        old: list[Registration] = []
        with self._lock:
            self._changing()
            kept: dict[int, int] = {}
            if replacing is not None:
                for index in sorted(self._by_bundle.get(replacing, ())):
                    kept[self._slots[index].reg.contract_id] = index  # type: ignore[union-attr]
            for reg in regs:
                index = kept.pop(reg.contract_id, -1)
                if index >= 0:
                    old.append(self._slots[index].reg)  # type: ignore[arg-type]
                    self._slots[index].reg = reg
                    continue
                index = self._free.pop() if self._free else len(self._slots)
                if index == len(self._slots):
                    self._slots.append(_Slot())
                self._slots[index].reg = reg
                self._by_cid.setdefault(reg.contract_id, []).append(index)
                self._by_bundle.setdefault(reg.bundle_id, []).append(index)
            for index in kept.values():
                old.append(self._withdraw_locked(index))
        # What a commit supersedes belongs to a VM that is retired with a batch too (a reload):
        # its interfaces go with a batch, off the reload path.
        self._release(old, batched=True)
        return old

    def invalidate_bundle(self, bundle_id: int) -> list[Registration]:
        """Withdraw every provider of a bundle; their handles go stale."""
        with self._lock:
            self._changing()
            out = [self._withdraw_locked(i) for i in sorted(self._by_bundle.get(bundle_id, ()))]
        self._release(out)
        return out

    def withdraw(self, regs: list[Registration]) -> None:
        """Withdraw these registrations (those still published); their handles go stale."""
        with self._lock:
            self._changing()
            out = [self._withdraw_locked(i) for i, s in enumerate(self._slots) if s.reg is not None and s.reg in regs]
        self._release(out)

    def _withdraw_locked(self, index: int) -> Registration:
        slot = self._slots[index]
        reg = slot.reg
        assert reg is not None
        slot.reg = None
        slot.generation = (slot.generation + 1) & 0xFFFFFFFF
        self._by_cid[reg.contract_id].remove(index)
        if not self._by_cid[reg.contract_id]:
            del self._by_cid[reg.contract_id]
        mine = self._by_bundle[reg.bundle_id]
        mine.remove(index)
        if not mine:
            del self._by_bundle[reg.bundle_id]
        self._free.append(index)
        return reg

    def _release(self, regs: list[Registration], *, batched: bool = False) -> None:
        # SAFETY: a guest may still hold an interface pointer it resolved before
        # the change; the copy is dropped only after every pinned call returned.
        self._collector.release([r.keepalive for r in regs], batched=batched)
