"""Registry: first provider wins, generations on unload, kept on reload, all-or-nothing commits."""

from __future__ import annotations

import pytest

from luaplug import DuplicateProvider, epoch
from luaplug.abi import ffi
from luaplug.hostcontract import HostContractTable, HostEntry
from luaplug.ids import guest_contract_id
from luaplug.registry import Registration, Registry


def reg(name: str, bundle: int, major: int = 1) -> Registration:
    iface = ffi.new("GuestContractInterface*")
    iface.contract_id = guest_contract_id(name, major)
    return Registration(
        contract_id=guest_contract_id(name, major),
        contract_name=name,
        major=major,
        plugin_name=f"p{bundle}",
        bundle_id=bundle,
        bundle_name=f"b{bundle}",
        iface=iface,
    )


@pytest.fixture
def registry() -> Registry:
    return Registry(epoch.Collector())


def test_first_registered_provider_wins_and_next_takes_over(registry: Registry) -> None:
    a, b = reg("x.Y", 1), reg("x.Y", 2)
    registry.commit([a])
    registry.commit([b])
    h = registry.find(a.contract_id, 1)
    assert h is not None and registry.resolve(*h) is a
    registry.invalidate_bundle(1)
    assert registry.resolve(*h) is None  # stale
    h2 = registry.find(a.contract_id, 0)
    assert h2 is not None and registry.resolve(*h2) is b


def test_min_major(registry: Registry) -> None:
    r = reg("x.Y", 1, major=2)
    registry.commit([r])
    assert registry.find(r.contract_id, 3) is None
    assert registry.find(r.contract_id, 2) is not None
    assert registry.find(r.contract_id, 0) is not None


def test_same_bundle_twice_is_duplicate_and_nothing_is_published(registry: Registry) -> None:
    registry.commit([reg("x.A", 1)])
    with pytest.raises(DuplicateProvider):
        registry.commit([reg("x.B", 1), reg("x.A", 1)])
    assert [r.display_name for r in registry.providers()] == ["x.A@1"]
    with pytest.raises(DuplicateProvider):
        registry.commit([reg("x.C", 2), reg("x.C", 2)])
    assert [r.display_name for r in registry.providers()] == ["x.A@1"]


def test_reload_keeps_generation_retires_dropped_and_publishes_new(registry: Registry) -> None:
    registry.commit([reg("x.A", 1), reg("x.B", 1)])
    ha = registry.find(guest_contract_id("x.A", 1))
    hb = registry.find(guest_contract_id("x.B", 1))
    assert ha and hb
    new_a = reg("x.A", 1)
    old = registry.commit([new_a, reg("x.C", 1)], replacing=1)
    assert registry.resolve(*ha) is new_a  # same handle, new version
    assert registry.resolve(*hb) is None  # no longer provided: stale
    assert registry.find(guest_contract_id("x.C", 1)) is not None
    assert {r.contract_name for r in old} == {"x.A", "x.B"}


def test_slots_are_reused_with_a_new_generation(registry: Registry) -> None:
    registry.commit([reg("x.A", 1)])
    h1 = registry.find(guest_contract_id("x.A", 1))
    registry.invalidate_bundle(1)
    registry.commit([reg("x.A", 2)])
    h2 = registry.find(guest_contract_id("x.A", 1))
    assert h1 and h2 and h1[0] == h2[0] and h1[1] != h2[1]
    assert registry.resolve(*h1) is None


def test_withdrawn_interfaces_are_released_through_the_epoch(registry: Registry) -> None:
    c = epoch.Collector()
    r = Registry(c)
    a = reg("x.A", 1)
    a.keepalive.append(object())
    r.commit([a])
    guard = c.pin()
    r.invalidate_bundle(1)
    assert a.keepalive  # a pinned reader may still use the interface
    guard.release()
    c.collect()
    assert a.keepalive == []


def test_registrations_in_registration_order_with_their_handles(registry: Registry) -> None:
    cid = guest_contract_id("x.Y", 1)
    assert registry.registrations(cid) == []
    a, b, c = reg("x.Y", 1), reg("x.Y", 2), reg("x.Y", 3)
    registry.commit([a])
    registry.commit([b])
    registry.invalidate_bundle(1)
    registry.commit([c])  # takes bundle 1's freed slot, yet comes after b
    found = registry.registrations(cid)
    assert [r for _, _, r in found] == [b, c]
    assert all(registry.resolve(i, g) is r for i, g, r in found)
    first = registry.find(cid)
    assert first is not None and first == found[0][:2]


def test_provider_is_the_contract_string_with_who_provides_it() -> None:
    import pickle

    from luaplug.registry import Provider

    r = reg("x.Y", 4, major=2)
    p = Provider.of(r)
    assert p == "x.Y@2" and isinstance(p, str) and hash(p) == hash("x.Y@2")
    assert (p.contract_name, p.major, p.bundle, p.plugin, p.bundle_id) == ("x.Y", 2, "b4", "p4", 4)
    assert repr(p) == "Provider('x.Y@2', bundle='b4', plugin='p4')"
    again = pickle.loads(pickle.dumps(p))
    assert type(again) is Provider and (again.bundle, again.plugin, again.bundle_id) == ("b4", "p4", 4)
    with pytest.raises(AttributeError, match="read-only"):
        p.plugin = "other"  # type: ignore[misc]


def test_contract_not_found_names_the_bundle_and_the_providers() -> None:
    from luaplug import ContractNotFoundError

    assert str(ContractNotFoundError("x.Y", 1)) == "no loaded bundle provides contract x.Y@1"
    err = ContractNotFoundError("x.Y", 1, bundle="b9", providers=["b1", "b2"])
    assert str(err) == "bundle 'b9' does not provide contract x.Y@1 (its providers: 'b1', 'b2')"
    assert (err.contract, err.major, err.bundle, err.providers) == ("x.Y", 1, "b9", ["b1", "b2"])
    assert "(its providers: none)" in str(ContractNotFoundError("x.Y", 1, bundle="b9"))


class _CountingSlots(list):  # type: ignore[type-arg]
    """The registry's slot list, counting walks over it."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        _CountingSlots.walks += 1
        return super().__iter__()


def test_a_bundles_changes_never_walk_every_slot(registry: Registry) -> None:
    for b in range(1, 51):
        registry.commit([reg(f"x.C{b}", b), reg(f"x.D{b}", b)])
    registry._slots = _CountingSlots(registry._slots)
    _CountingSlots.walks = 0
    assert [r.contract_name for r in registry.of_bundle(7)] == ["x.C7", "x.D7"]
    registry.commit([reg("x.C9", 9), reg("x.E9", 9)], replacing=9)  # a reload drops x.D9, adds x.E9
    assert [r.contract_name for r in registry.of_bundle(9)] == ["x.C9", "x.E9"]
    assert len(registry.invalidate_bundle(12)) == 2
    assert registry.of_bundle(12) == []
    assert _CountingSlots.walks == 0
    assert registry.find(guest_contract_id("x.D9", 1)) is None
    assert registry.find(guest_contract_id("x.E9", 1)) is not None
    assert len(registry.providers()) == 98


def test_sole_provided_counts_only_contracts_no_other_bundle_provides(registry: Registry) -> None:
    registry.commit([reg("x.A", 1), reg("x.B", 1)])
    registry.commit([reg("x.B", 2), reg("x.C", 2)])
    assert registry.sole_provided(1) == {guest_contract_id("x.A", 1)}
    assert registry.sole_provided(2) == {guest_contract_id("x.C", 1)}
    registry.invalidate_bundle(1)
    assert registry.sole_provided(2) == {guest_contract_id("x.B", 1), guest_contract_id("x.C", 1)}
    assert registry.sole_provided(1) == set()


# -- the host-contract table ------------------------------------------------------------------


class _CountingDict(dict):  # type: ignore[type-arg]
    """A dict that counts how often its values are walked."""

    walks = 0

    def values(self):  # type: ignore[no-untyped-def]
        type(self).walks += 1
        return super().values()


def host_entry(cid: int, owner: int) -> HostEntry:
    iface = ffi.new("HostContractInterface*")
    iface.contract_id = cid
    return HostEntry(cid, iface, owner, f"b{owner}", keepalive=[iface])


def test_host_contracts_go_with_their_owner_and_others_are_never_searched() -> None:
    c = epoch.Collector()
    table = HostContractTable(c)
    table._entries = entries = _CountingDict()
    table.add(host_entry(10, 0))  # served from Python
    table.stage(host_entry(11, 7), replacing=False)
    table.stage(host_entry(12, 7), replacing=False)
    table.commit(7, replacing=False)
    assert sorted(e.contract_id for e in table.entries()) == [10, 11, 12]
    _CountingDict.walks = 0
    for owner in range(100, 200):  # bundles that registered no host contract
        table.commit(owner, replacing=True)
        assert table.withdraw(owner) == []
    assert _CountingDict.walks == 0
    table.stage(host_entry(13, 7), replacing=True)  # a reload of bundle 7 registers one of two again
    table.commit(7, replacing=True)
    assert sorted(e.contract_id for e in table.entries()) == [10, 13]
    assert [e.contract_id for e in table.withdraw(7)] == [13]
    assert [e.contract_id for e in table.entries()] == [10]
    assert [e.contract_id for e in table.withdraw(0)] == [10]
    assert table.entries() == [] and entries == {}
