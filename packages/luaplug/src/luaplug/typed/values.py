"""Python values to and from C slots of any contract type (structs and ``Buffer`` included).

The typed proxy compiles a fast path for scalars and strings; structs, ``Buffer`` and the
fields inside structs go through :func:`store` and :func:`load`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..abi import ffi
from .types import EnumType, ScalarType, StructType, TypeSpec, python_name

__all__ = ["load", "load_at", "store", "store_at"]


def _bytes_of(value: object, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what}: expected str or bytes, not {type(value).__name__}")


def store(
    t: TypeSpec, ptr: Any, value: object, keep: list[Any], what: str, alloc: Callable[[bytes], int] | None = None
) -> None:
    """Write ``value`` into the slot ``ptr`` points at (a cffi pointer to ``t.cdecl``).

    :param keep: receives the buffers the slot borrows; they must outlive the call
    :param what: names the value in errors (``"scan() argument 'stamp'"``)
    :param alloc: copies string and buffer bytes into memory of its own and returns the address
        (for results the receiver owns); without it the slot borrows Python buffers kept in ``keep``
    :raises TypeError: a value of the wrong type, a missing or unknown struct field
    :raises OverflowError: an integer outside the type
    :raises ValueError: not a value of the enum
    """
    if isinstance(t, StructType):
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in t.fields} - {python_name(f.name) for f in t.fields}
            if unknown:
                raise TypeError(f"{what}: {t.name} has no field {sorted(unknown)[0]!r}")

            def get(name: str) -> object:
                if name in value:
                    return value[name]
                if python_name(name) in value:
                    return value[python_name(name)]
                raise TypeError(f"{what}: missing field {name!r} of {t.name}")
        else:

            def get(name: str) -> object:
                try:
                    return getattr(value, python_name(name))
                except AttributeError:
                    raise TypeError(f"{what}: {type(value).__name__} has no field {name!r} of {t.name}") from None

        for f in t.fields:
            store(f.type, ffi.addressof(ptr[0], f.name), get(f.name), keep, f"{what}.{f.name}", alloc)
        return
    if t.kind in ("string", "bytes"):
        data = _bytes_of(value, what)
        if data and alloc is not None:
            ptr.ptr = ffi.cast("uint8_t*", alloc(data))
        elif data:
            buf = ffi.from_buffer("uint8_t[]", data)
            keep.append(buf)
            ptr.ptr = buf
        else:
            ptr.ptr = ffi.NULL
        ptr.len = len(data)
        if t.kind == "bytes":
            ptr.cap = len(data)
        return
    if t.kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{what}: expected bool, not {type(value).__name__}")
    elif t.kind in ("int", "enum"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what}: expected int, not {type(value).__name__}")
        lo, hi = (t.repr.lo, t.repr.hi) if isinstance(t, EnumType) else (t.lo, t.hi)
        if not lo <= value <= hi:
            raise OverflowError(f"{what}: {value} does not fit {t.name}")
        if isinstance(t, EnumType) and not t.bitflag and value not in {v for _, v in t.variants}:
            raise ValueError(f"{what}: {value!r} is not a {t.name} value")
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{what}: expected float, not {type(value).__name__}")
    ptr[0] = value


def load(t: TypeSpec, ptr: Any) -> object:
    """The Python value in the slot ``ptr`` points at (a cffi pointer to ``t.cdecl``).

    :raises ValueError: a string or buffer with a null pointer and a length, or not UTF-8
    """
    if isinstance(t, StructType):
        return t.python(**{python_name(f.name): load(f.type, ffi.addressof(ptr[0], f.name)) for f in t.fields})
    if isinstance(t, ScalarType) and t.kind in ("string", "bytes"):
        n = int(ptr.len)
        if n == 0:
            return "" if t.kind == "string" else b""
        if ptr.ptr == ffi.NULL:
            raise ValueError(f"a {t.name} has a null pointer and a length of {n}")
        data = ffi.unpack(ffi.cast("char*", ptr.ptr), n)
        return data.decode("utf-8") if t.kind == "string" else data
    value = ptr[0]
    if isinstance(t, EnumType):
        try:
            return t.python(value)
        except ValueError:
            return value
    return value


def load_at(t: TypeSpec, address: int) -> object:
    """:func:`load` from the slot at ``address``."""
    return load(t, ffi.cast(f"{t.cdecl}*", address))


def store_at(t: TypeSpec, address: int, value: object, what: str, alloc: Callable[[bytes], int]) -> None:
    """:func:`store` into the slot at ``address``, every string and buffer copied with ``alloc``."""
    store(t, ffi.cast(f"{t.cdecl}*", address), value, [], what, alloc)
