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

__all__ = ["InitScope", "declared_contract_ids", "depends_on", "init_scope"]


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
