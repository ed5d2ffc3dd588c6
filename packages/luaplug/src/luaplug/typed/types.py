"""The value types of typed contracts (spec §14): scalars, ``StringView``, ``Buffer``, enums, structs."""

from __future__ import annotations

import enum
import keyword
from collections.abc import Mapping
from dataclasses import dataclass, field, make_dataclass
from typing import Final, Literal

from ..errors import ApiSpecError

__all__ = [
    "BUFFER_CDECL",
    "PRIMITIVES",
    "EnumType",
    "FieldSpec",
    "ScalarType",
    "StructType",
    "TypeSpec",
    "pascal_case",
    "python_name",
]

Kind = Literal["int", "float", "bool", "string", "bytes"]

#: polyplug-abi's ``Buffer`` (24 bytes) as an anonymous C struct, for cffi declarations.
BUFFER_CDECL: Final = "struct { void* ptr; size_t len; size_t cap; }"


@dataclass(frozen=True)
class ScalarType:
    """A built-in type of the contract language.

    :ivar name: the ``api.toml`` spelling (``"i32"``, ``"StringView"``)
    :ivar ctype: the C type of a field or an out slot (``"int32_t"``)
    :ivar kind: ``"int"``, ``"float"``, ``"bool"``, ``"string"`` (``StringView``) or ``"bytes"`` (``Buffer``)
    :ivar lo: smallest value (integers only)
    :ivar hi: largest value (integers only)
    """

    name: str
    ctype: str
    kind: Kind
    lo: int = 0
    hi: int = 0

    @property
    def python(self) -> type:
        """The Python type a proxy takes and returns."""
        return {"int": int, "float": float, "bool": bool, "string": str, "bytes": bytes}[self.kind]

    @property
    def cdecl(self) -> str:
        """The type as luaplug's cffi declarations spell it (``Buffer`` as its anonymous struct)."""
        return BUFFER_CDECL if self.kind == "bytes" else self.ctype


def _int(name: str, bits: int, signed: bool) -> ScalarType:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return ScalarType(name, f"{'' if signed else 'u'}int{bits}_t", "int", lo, hi)


#: Every built-in type by its ``api.toml`` name.
PRIMITIVES: Final[Mapping[str, ScalarType]] = {
    t.name: t
    for t in (
        _int("i8", 8, True),
        _int("i16", 16, True),
        _int("i32", 32, True),
        _int("i64", 64, True),
        _int("u8", 8, False),
        _int("u16", 16, False),
        _int("u32", 32, False),
        _int("u64", 64, False),
        ScalarType("f32", "float", "float"),
        ScalarType("f64", "double", "float"),
        ScalarType("bool", "bool", "bool"),
        ScalarType("StringView", "StringView", "string"),
        ScalarType("Buffer", "Buffer", "bytes"),
    )
}


@dataclass(frozen=True)
class EnumType:
    """A user enum: an integer type with named values, an :class:`enum.IntEnum` in Python.

    :ivar name: the enum's name (how params refer to it)
    :ivar repr: the integer type it is stored as
    :ivar variants: ``(name, value)`` pairs in declaration order
    :ivar python: the ``IntEnum`` class a proxy takes and returns
    :ivar bitflag: values are OR-combinations of the variants (any value of the repr is accepted)
    """

    name: str
    repr: ScalarType
    variants: tuple[tuple[str, int], ...]
    docs: str = ""
    python: type[enum.IntEnum] = field(default=enum.IntEnum, compare=False, repr=False)
    bitflag: bool = False

    def __post_init__(self) -> None:
        if self.python is enum.IntEnum:
            cls = enum.IntEnum(self.name.rpartition(".")[2] or "Enum", list(self.variants))  # type: ignore[misc]
            object.__setattr__(self, "python", cls)

    @property
    def kind(self) -> Literal["enum"]:
        """Always ``"enum"``."""
        return "enum"

    @property
    def ctype(self) -> str:
        """The C type of the enum's repr."""
        return self.repr.ctype

    @property
    def cdecl(self) -> str:
        """The C type of the enum's repr (as cffi spells it)."""
        return self.repr.ctype

    @classmethod
    def create(
        cls,
        name: str,
        repr: str | ScalarType,
        variants: Mapping[str, int] | type[enum.IntEnum],
        *,
        docs: str = "",
        bitflag: bool = False,
        path: str | None = None,
        key: str | None = None,
    ) -> EnumType:
        """Build and validate an enum.

        :param variants: ``{name: value}``, or an existing ``IntEnum`` class (kept as :attr:`python`)
        :raises ApiSpecError: a bad name, repr, or a value outside the repr
        """
        if not isinstance(name, str) or not name:
            raise ApiSpecError("an enum needs a non-empty name", path=path, key=key)
        rep = PRIMITIVES.get(repr) if isinstance(repr, str) else repr
        if rep is None or rep.kind != "int":
            raise ApiSpecError(f"enum {name}: repr must be an integer type, not {repr!r}", path=path, key=key)
        python: type[enum.IntEnum] = enum.IntEnum
        if isinstance(variants, type):
            if not issubclass(variants, enum.IntEnum):
                raise ApiSpecError(f"enum {name}: variants must be a mapping or an IntEnum class", path=path, key=key)
            python = variants
            pairs = [(m.name, int(m.value)) for m in variants]
        else:
            pairs = list(variants.items())
        seen: set[str] = set()
        for vname, value in pairs:
            if not isinstance(vname, str) or not vname.isidentifier() or vname in seen:
                raise ApiSpecError(f"enum {name}: bad or repeated variant name {vname!r}", path=path, key=key)
            seen.add(vname)
            if isinstance(value, bool) or not isinstance(value, int) or not rep.lo <= value <= rep.hi:
                raise ApiSpecError(f"enum {name}: variant {vname} = {value!r} is not a {rep.name}", path=path, key=key)
        return cls(name, rep, tuple(pairs), docs, python, bitflag)


@dataclass(frozen=True)
class FieldSpec:
    """One field of a :class:`StructType`."""

    name: str
    type: TypeSpec
    docs: str = ""


@dataclass(frozen=True)
class StructType:
    """A user struct (``[[types]]`` in an ``api.toml``): fields in declaration order, C layout.

    A proxy takes a mapping (or any object with the field names as attributes) and returns
    an instance of :attr:`python`, a frozen dataclass with the same fields.

    :ivar name: the struct's name, also its C typedef name in generated glue
    """

    name: str
    fields: tuple[FieldSpec, ...]
    docs: str = ""
    python: type = field(default=object, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.python is object:
            cls = make_dataclass(python_name(self.name), [python_name(f.name) for f in self.fields], frozen=True)
            object.__setattr__(self, "python", cls)

    @property
    def kind(self) -> Literal["struct"]:
        """Always ``"struct"``."""
        return "struct"

    @property
    def ctype(self) -> str:
        """The struct's C name (the typedef generated glue declares)."""
        return self.name

    @property
    def cdecl(self) -> str:
        """The struct as an anonymous cffi declaration (nested structs inlined)."""
        return "struct { " + " ".join(f"{f.type.cdecl} {f.name};" for f in self.fields) + " }"


#: A type a param, a return or a struct field can have.
TypeSpec = ScalarType | EnumType | StructType


def pascal_case(name: str) -> str:
    """``"pipeline.Decoder"`` -> ``"PipelineDecoder"``; ``"get_name"`` -> ``"GetName"``."""
    parts = [p for chunk in name.split(".") for p in chunk.replace("-", "_").split("_")]
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def python_name(name: str) -> str:
    """``name`` usable as a Python identifier (keywords get a trailing ``_``)."""
    return f"{name}_" if keyword.iskeyword(name) else name
