"""Who depends on whom (runtime-semantics "Dependencies").

A loaded bundle *D* depends on bundle *B* when D's manifest names B in
``bundle_dependencies`` or in a ``[[dependency]]`` (``bundle`` / ``bundle_id``), or declares a
``kind = "contract"`` dependency on a contract B provides.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, NamedTuple

from .ids import guest_contract_id

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .manifest import Manifest

__all__ = ["DependencyIndex", "InitScope", "declared_contract_ids", "depends_on", "init_scope"]


def declared_contract_ids(m: Manifest) -> frozenset[int]:
    """The guest contract ids ``m`` declares ``[[dependency]]`` tables for."""
    out = set()
    for d in m.dependencies:
        if d.kind != "contract":
            continue
        if d.contract_id is not None:
            out.add(d.contract_id)
        elif d.contract:
            out.add(guest_contract_id(d.contract, d.min_version[0] or 1))
    return frozenset(out)


def depends_on(m: Manifest, name: str, bundle_id: int, provided: Iterable[int]) -> bool:
    """Whether the bundle of manifest ``m`` declared a dependency on bundle ``name``.

    :param provided: contract ids bundle ``name`` provides (that count as a dependency on it)
    """
    if m.name == name:
        return False
    if any(spec.partition("@")[0] == name for spec in m.bundle_dependencies):
        return True
    for d in m.dependencies:
        if d.bundle == name or d.bundle_id == bundle_id:
            return True
    return not declared_contract_ids(m).isdisjoint(provided)


def _targets(m: Manifest) -> set[tuple[str, object]]:
    """Everything ``m`` names as a dependency, as index keys (see :func:`depends_on`)."""
    keys: set[tuple[str, object]] = {("name", spec.partition("@")[0]) for spec in m.bundle_dependencies}
    for d in m.dependencies:
        if d.bundle:
            keys.add(("name", d.bundle))
        if d.bundle_id is not None:
            keys.add(("id", d.bundle_id))
    keys.update(("cid", cid) for cid in declared_contract_ids(m))
    return keys


class DependencyIndex:
    """The loaded bundles by what their manifests name as a dependency.

    Finding who depends on a bundle looks up its name, id and contracts here instead of
    asking every loaded bundle, so unloading or reloading one costs the same at any count.
    Not thread-safe: the runtime changes and reads it under its lock.
    """

    def __init__(self) -> None:
        self._by_target: dict[tuple[str, object], set[str]] = {}

    def add(self, m: Manifest) -> None:
        """Index the loaded bundle of manifest ``m``."""
        for key in _targets(m):
            self._by_target.setdefault(key, set()).add(m.name)

    def remove(self, m: Manifest) -> None:
        """Forget the bundle of manifest ``m`` (the manifest it was added with)."""
        for key in _targets(m):
            names = self._by_target.get(key)
            if names is not None:
                names.discard(m.name)
                if not names:
                    del self._by_target[key]

    def candidates(self, name: str, bundle_id: int, provided: Iterable[int]) -> set[str]:
        """Names of the indexed bundles whose manifests name bundle ``name`` (``bundle_id``) or one
        of the contract ids ``provided``: a superset of those :func:`depends_on` accepts."""
        get = self._by_target.get
        out = set(get(("name", name), ())) | get(("id", bundle_id), set())
        for cid in provided:
            out |= get(("cid", cid), set())
        out.discard(name)
        return out


# A NamedTuple, not a frozen dataclass: defining one costs a tenth as much (~0.4 ms less),
# and creating a runtime imports this module.
class InitScope(NamedTuple):
    """The bundle whose ``polyplug_init`` runs on this thread (immutable).

    :ivar declared: the contract ids it may find while init runs
    :ivar replacing: whether it is a reload (its previous version's registrations are replaced)
    """

    manifest: Manifest
    declared: frozenset[int]
    replacing: bool


class _Current(threading.local):
    scope: InitScope | None = None


#: Per thread: the init that is running (set by the runtime around a loader's load).
init_scope = _Current()
