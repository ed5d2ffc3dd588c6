"""Where a call's arguments and result travel (spec §14): the one rule every typed part asks.

A function's ``args`` pointer is null when it has no param, points at the value itself when
it has one, and points at the arg-pack struct (fields in declaration order, C layout) when
it has several. Its result is written to ``out``; a result of variable size (``StringView``,
``Buffer``, a struct) is built in the call arena.

The typed proxy (Python calls a guest), the host contracts (a guest calls Python) and the Lua
generators (``contracts.lua``, the callers, the value glue) all take the layout from
:func:`layout`; only the C type text of a slot differs between them, so it is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from ..abi import ffi
from .spec import FunctionSpec, ParamSpec
from .types import TypeSpec

__all__ = [
    "SCALAR_FORMATS",
    "STRING_FORMAT",
    "ArgsKind",
    "CallLayout",
    "layout",
    "pack_decls",
    "scalar_format",
    "size_align",
]

#: ``none``: ``args`` is null; ``single``: a pointer to the one value; ``struct``: the arg-pack struct.
ArgsKind = Literal["none", "single", "struct"]

#: Result kinds that are built in the call arena.
_ARENA_KINDS: Final = frozenset({"string", "bytes", "struct"})


#: The ``memoryview`` format of each C type that holds one scalar (an enum is its repr's).
SCALAR_FORMATS: Final = {
    "int8_t": "b",
    "int16_t": "h",
    "int32_t": "i",
    "int64_t": "q",
    "uint8_t": "B",
    "uint16_t": "H",
    "uint32_t": "I",
    "uint64_t": "Q",
    "float": "f",
    "double": "d",
    "bool": "?",
}


#: The format that names a ``StringView`` slot (a pointer, then a ``size_t`` length) beside
#: :data:`SCALAR_FORMATS` (``struct``'s letter for a C string).
STRING_FORMAT: Final = "s"


def scalar_format(t: TypeSpec) -> str | None:
    """The ``memoryview`` format of a slot of type ``t`` when it holds one scalar (an integer, a
    float, a bool or an enum), else ``None``."""
    return SCALAR_FORMATS.get(t.cdecl) if t.kind in ("int", "float", "bool", "enum") else None


def _ctype(t: TypeSpec) -> str:
    return t.ctype


def _cdecl(t: TypeSpec) -> str:
    return t.cdecl


def size_align(t: TypeSpec) -> tuple[int, int]:
    """``(sizeof, alignof)`` of a slot of type ``t``."""
    return ffi.sizeof(t.cdecl), ffi.alignof(t.cdecl)


@dataclass(frozen=True)
class CallLayout:
    """The §14 layout of one function's call.

    :ivar kind: how ``args`` carries the params
    :ivar params: the params, in declaration order (the struct's fields)
    :ivar returns: the result type, ``None`` when ``out`` is unused
    """

    kind: ArgsKind
    params: tuple[ParamSpec, ...]
    returns: TypeSpec | None

    @property
    def arena_backed(self) -> bool:
        """Whether the result is built in the call arena (it has a variable size). A call of
        any other function passes a null arena, as the reference's generated callers do."""
        return self.returns is not None and self.returns.kind in _ARENA_KINDS

    def fields(self, ctype: Callable[[TypeSpec], str] = _ctype) -> str:
        """The arg-pack struct's fields as C text (``"int32_t a; int32_t b;"``)."""
        return " ".join(f"{ctype(p.type)} {p.name};" for p in self.params)

    def struct_decl(self, name: str, ctype: Callable[[TypeSpec], str] = _ctype) -> str:
        """``typedef struct <name> { <fields> } <name>;``."""
        return f"typedef struct {name} {{ {self.fields(ctype)} }} {name};"

    def pointee(self, struct_name: str, ctype: Callable[[TypeSpec], str] = _ctype) -> str:
        """The C type ``args`` points at: the one param's type, or ``struct_name`` for a pack.

        :raises ValueError: the function has no param (``args`` is null)
        """
        if self.kind == "single":
            return ctype(self.params[0].type)
        if self.kind == "struct":
            return struct_name
        raise ValueError("a function without params has no args slot")

    def anonymous_pointee(self) -> str:
        """:meth:`pointee` as cffi declares it without a named type (the pack: an anonymous
        struct of the same layout)."""
        return self.pointee(f"struct {{ {self.fields(_cdecl)} }}", _cdecl)

    def offsets(self) -> tuple[int, ...]:
        """Each param's byte offset from ``args`` (C layout; one param: 0; none: empty)."""
        offsets, pos = [], 0
        for p in self.params:
            size, align = size_align(p.type)
            pos = (pos + align - 1) // align * align
            offsets.append(pos)
            pos += size
        return tuple(offsets)

    def size(self) -> int:
        """Bytes of what ``args`` points at (C layout, with the tail padding; none: 0)."""
        if not self.params:
            return 0
        offsets = self.offsets()
        end = offsets[-1] + size_align(self.params[-1].type)[0]
        align = max(size_align(p.type)[1] for p in self.params)
        return (end + align - 1) // align * align

    def scalar_slots(self, strings: bool = False) -> tuple[tuple[str, int], ...] | None:
        """Each param's ``(memoryview format, offset)`` when every param is a scalar
        (:func:`scalar_format`), else ``None``. ``strings``: a ``StringView`` param is a slot
        too, of format :data:`STRING_FORMAT`."""
        formats = [STRING_FORMAT if strings and p.type.kind == "string" else scalar_format(p.type) for p in self.params]
        if None in formats:
            return None
        return tuple((f, o) for f, o in zip(formats, self.offsets(), strict=True) if f is not None)


def layout(fn: FunctionSpec) -> CallLayout:
    """The §14 layout of a call of ``fn``."""
    n = len(fn.params)
    kind: ArgsKind = "none" if n == 0 else "single" if n == 1 else "struct"
    return CallLayout(kind, fn.params, fn.returns)


def pack_decls(
    prefix: str, functions: Iterable[FunctionSpec], ctype: Callable[[TypeSpec], str] = _ctype
) -> list[tuple[str, str]]:
    """``(name, typedef)`` of the arg-pack struct of each function with several params, named
    ``<prefix><FnPascal>Args`` (a contract's ``struct_name`` as ``prefix``: the §14 name)."""
    packs = []
    for fn in functions:
        call = layout(fn)
        if call.kind == "struct":
            name = f"{prefix}{fn.pascal_name}Args"
            packs.append((name, call.struct_decl(name, ctype)))
    return packs
