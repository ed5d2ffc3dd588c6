"""Spec §5 vectors."""

from __future__ import annotations

from luaplug import ids


def test_fnv_known_vectors() -> None:
    # Standard FNV-1a 64 test vectors.
    assert ids.fnv1a64(b"") == 0xCBF29CE484222325
    assert ids.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert ids.fnv1a64("foobar") == 0x85944171F73967E8


def test_contract_ids_from_spec() -> None:
    assert ids.guest_contract_id("iso.Counter", 1) == 0x1CFBA3E335CCE708
    assert ids.guest_contract_id("test.peer", 1) == 0x8402886CF97A6E7D


def test_ids_are_namespaced() -> None:
    assert ids.bundle_id("x") == ids.fnv1a64("x")
    assert ids.host_contract_id("a.B", 2) == ids.fnv1a64("host_contract:a.B@2")
    assert ids.host_contract_id("a.B", 2) != ids.guest_contract_id("a.B", 2)


def test_str_is_hashed_as_utf8() -> None:
    assert ids.fnv1a64("é") == ids.fnv1a64("é".encode())
