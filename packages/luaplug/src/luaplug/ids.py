"""Bundle and contract ids: FNV-1a 64 over UTF-8 bytes (spec §5)."""

from __future__ import annotations

import functools
from typing import Final

__all__ = ["bundle_id", "fnv1a64", "guest_contract_id", "host_contract_id", "split_contract_name"]

_OFFSET: Final = 0xCBF29CE484222325
_PRIME: Final = 0x100000001B3
_MASK: Final = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data: str | bytes) -> int:
    """FNV-1a 64 of ``data`` (a ``str`` is hashed as its UTF-8 bytes).

    :param data: text or bytes to hash
    :returns: the hash as an unsigned 64-bit integer
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    h = _OFFSET
    for byte in raw:
        h = ((h ^ byte) * _PRIME) & _MASK
    return h


@functools.lru_cache(maxsize=4096)
def bundle_id(name: str) -> int:
    """The id a manifest must carry for bundle ``name``."""
    return fnv1a64(name)


@functools.lru_cache(maxsize=4096)
def guest_contract_id(name: str, major: int) -> int:
    """Id of guest contract ``name@major``."""
    return fnv1a64(f"guest_contract:{name}@{major}")


@functools.lru_cache(maxsize=4096)
def host_contract_id(name: str, major: int) -> int:
    """Id of host contract ``name@major``."""
    return fnv1a64(f"host_contract:{name}@{major}")


def split_contract_name(text: str) -> tuple[str, int | None]:
    """``"name@major"`` as ``(name, major)``; ``(text, None)`` when ``text`` ends in no major.

    The major is what follows the last ``@`` (``"1"`` or ``"1.2.3"``), so a contract whose
    name holds an ``@`` is ``"a@b@1"``; ``"a@b"`` is the name ``a@b`` itself.
    """
    base, at, ver = text.rpartition("@")
    head = ver.split(".")[0]
    if at and base and head.isascii() and head.isdigit():
        return base, int(head)
    return text, None
