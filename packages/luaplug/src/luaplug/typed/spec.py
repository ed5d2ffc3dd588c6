"""Contract declarations: what an ``api.toml`` holds, or what a host declares in Python.

A small declarative API builds the same objects the ``api.toml`` parser does::

    from luaplug import typed

    Color = typed.enum("Color", "u8", {"RED": 0, "GREEN": 1})
    Painter = typed.contract(
        "demo.Painter@1",
        typed.function("paint", [("what", "StringView"), ("color", Color)], returns="StringView"),
        typed.function("count", returns="u32"),
    )
"""

from __future__ import annotations

import enum as _enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import ApiSpecError
from .types import PRIMITIVES, EnumType, ScalarType, StructType, TypeSpec, pascal_case

__all__ = [
    "ApiSpec",
    "ContractSpec",
    "FunctionSpec",
    "ParamSpec",
    "TypeLike",
    "api",
    "contract",
    "enum",
    "function",
    "resolve_type",
    "validate_contract",
    "validate_function",
]

_VERSION: Final = re.compile(r"^\d+(\.\d+){0,2}$")
#: C keywords cannot name an arg-pack field.
_C_KEYWORDS: Final = frozenset(
    "auto bool break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Bool _Complex".split()
)

#: What a declaration may name as a type: a built-in name, a type object, or an ``IntEnum`` class.
TypeLike = str | ScalarType | EnumType | StructType | type[_enum.IntEnum]


def resolve_type(
    t: object,
    enums: Mapping[str, EnumType | StructType] | None = None,
    *,
    path: str | None = None,
    key: str | None = None,
) -> TypeSpec:
    """The type ``t`` names.

    :param enums: declared enums and structs by name (for string references)
    :raises ApiSpecError: an unknown type name or a bad type object
    """
    if isinstance(t, (ScalarType, EnumType, StructType)):
        return t
    if isinstance(t, str):
        found = PRIMITIVES.get(t) or (enums or {}).get(t)
        if found is None:
            known = ", ".join([*PRIMITIVES, *(enums or {})])
            raise ApiSpecError(f"unknown type {t!r} (known: {known})", path=path, key=key)
        return found
    if isinstance(t, type) and issubclass(t, _enum.IntEnum):
        return EnumType.create(t.__name__, "i32", t, path=path, key=key)
    raise ApiSpecError(f"a type must be a type name or an IntEnum class, not {t!r}", path=path, key=key)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a contract function."""

    name: str
    type: TypeSpec
    docs: str = ""


@dataclass(frozen=True)
class FunctionSpec:
    """One contract function; its function id is its position in the contract.

    :ivar returns: the result type, ``None`` for ``"void"``
    """

    name: str
    params: tuple[ParamSpec, ...] = ()
    returns: TypeSpec | None = None
    docs: str = ""

    @property
    def pascal_name(self) -> str:
        """``"get_name"`` -> ``"GetName"`` (the arg-pack struct's suffix)."""
        return pascal_case(self.name)

    def signature(self) -> str:
        """``"add(a: i32, b: i32) -> i32"``."""
        params = ", ".join(f"{p.name}: {p.type.name}" for p in self.params)
        return f"{self.name}({params}) -> {self.returns.name if self.returns else 'void'}"


@dataclass(frozen=True)
class ContractSpec:
    """A contract: a name, a version (its major is the contract version) and functions.

    :ivar kind: ``"guest"`` (bundles provide it) or ``"host"`` (the host provides it)
    """

    name: str
    version: str
    functions: tuple[FunctionSpec, ...]
    docs: str = ""
    kind: Literal["guest", "host"] = "guest"

    @property
    def major(self) -> int:
        """The contract version (the major of :attr:`version`)."""
        return int(self.version.split(".")[0])

    @property
    def key(self) -> str:
        """``"name@major"``."""
        return f"{self.name}@{self.major}"

    @property
    def struct_name(self) -> str:
        """``"pipeline.Decoder"`` -> ``"PipelineDecoderContract"`` (spec §14)."""
        return pascal_case(self.name) + "Contract"

    def args_struct_name(self, fn: FunctionSpec) -> str:
        """The arg-pack struct of ``fn``: ``<ContractStruct><FnPascal>Args``."""
        return f"{self.struct_name}{fn.pascal_name}Args"

    def function_named(self, name: str) -> tuple[int, FunctionSpec]:
        """``(function id, function)`` of the function ``name``.

        :raises KeyError: no such function
        """
        for i, fn in enumerate(self.functions):
            if fn.name == name:
                return i, fn
        raise KeyError(f"contract {self.key} has no function {name!r} (has: {', '.join(self.function_names)})")

    @property
    def function_names(self) -> list[str]:
        return [fn.name for fn in self.functions]


@dataclass(frozen=True)
class ApiSpec:
    """Everything one ``api.toml`` declares.

    :ivar path: the file it came from (``None`` for Python declarations)
    :ivar warnings: one text per unknown key of the file (file, key and the nearest known key)
    """

    guest_contracts: tuple[ContractSpec, ...] = ()
    host_contracts: tuple[ContractSpec, ...] = ()
    enums: tuple[EnumType, ...] = ()
    path: str | None = None
    types: tuple[StructType, ...] = ()
    warnings: tuple[str, ...] = ()

    def contract(self, name: str) -> ContractSpec:
        """The guest (else host) contract ``"name@major"``, or ``"name"`` when only one major is declared.

        :raises ApiSpecError: not declared, or ambiguous
        """
        base, _, ver = name.partition("@")
        major = int(ver.split(".")[0]) if ver.split(".")[0].isdigit() else None
        if ver and major is None:
            raise ApiSpecError(f"bad contract reference {name!r} (expected name@major)", path=self.path)
        for group in (self.guest_contracts, self.host_contracts):
            found = [c for c in group if c.name == base and (major is None or c.major == major)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise ApiSpecError(f"contract {name!r} is ambiguous: give its major", path=self.path)
        declared = ", ".join(c.key for c in (*self.guest_contracts, *self.host_contracts)) or "none"
        raise ApiSpecError(f"no contract {name!r} is declared (declared: {declared})", path=self.path)

    def enum(self, name: str) -> EnumType:
        """The declared enum ``name``.

        :raises KeyError: not declared
        """
        for e in self.enums:
            if e.name == name:
                return e
        raise KeyError(name)

    def struct(self, name: str) -> StructType:
        """The declared struct (``[[types]]``) ``name``.

        :raises KeyError: not declared
        """
        for t in self.types:
            if t.name == name:
                return t
        raise KeyError(name)


# -- the declarative API ----------------------------------------------------------


def enum(
    name: str, repr: str = "i32", variants: Mapping[str, int] | type[_enum.IntEnum] | None = None, **more: int
) -> EnumType:
    """Declare an enum: ``enum("Color", "u8", {"RED": 0}, GREEN=1)`` or ``enum("Color", "u8", MyIntEnum)``.

    :raises ApiSpecError: a bad repr, name or value
    """
    if isinstance(variants, type):
        if more:
            raise ApiSpecError(f"enum {name}: extra variants next to an IntEnum class")
        return EnumType.create(name, repr, variants)
    return EnumType.create(name, repr, {**(variants or {}), **more})


def _param(p: ParamSpec | tuple[str, TypeLike] | tuple[str, TypeLike, str], where: str) -> ParamSpec:
    if isinstance(p, ParamSpec):
        return p
    if not isinstance(p, tuple) or len(p) not in (2, 3):
        raise ApiSpecError(f"{where}: a param is (name, type) or (name, type, docs), not {p!r}")
    return ParamSpec(p[0], resolve_type(p[1], key=where), p[2] if len(p) == 3 else "")


def function(
    name: str,
    params: Iterable[ParamSpec | tuple[str, TypeLike] | tuple[str, TypeLike, str]] | Mapping[str, TypeLike] = (),
    returns: TypeLike | None = None,
    *,
    docs: str = "",
) -> FunctionSpec:
    """Declare a contract function.

    :param params: ``[(name, type), ...]`` or ``{name: type}`` in declaration order
    :param returns: the result type; ``None`` or ``"void"`` for none
    :raises ApiSpecError: a bad name or type
    """
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    plist = tuple(_param(p, f"{name}.params[{i}]") for i, p in enumerate(items))
    ret = None if returns is None or returns == "void" else resolve_type(returns, key=f"{name}.return")
    fn = FunctionSpec(name, plist, ret, docs)
    validate_function(fn, key=name)
    return fn


def contract(
    name: str,
    *functions: FunctionSpec,
    version: str | None = None,
    docs: str = "",
    kind: Literal["guest", "host"] = "guest",
) -> ContractSpec:
    """Declare a contract: ``contract("demo.Greeter@1", function(...), ...)``.

    :param name: ``"name@major"``, or ``"name"`` with ``version``
    :param version: ``"x.y.z"`` (default: the major of ``name``, else 1)
    :param kind: ``"guest"`` (bundles provide it) or ``"host"`` (``Runtime.provide`` serves it)
    :raises ApiSpecError: a bad name, version, kind, or duplicate functions
    """
    if kind not in ("guest", "host"):
        raise ApiSpecError(f"contract {name}: kind must be 'guest' or 'host', not {kind!r}")
    base, _, major = name.partition("@")
    if version is None:
        version = f"{major or 1}.0.0"
    elif major and int(version.split(".")[0]) != int(major):
        raise ApiSpecError(f"contract {name}: version {version!r} does not match the major in the name")
    spec = ContractSpec(base, version, tuple(functions), docs, kind)
    validate_contract(spec)
    return spec


def validate_function(fn: FunctionSpec, *, path: str | None = None, key: str | None = None) -> None:
    """Check names (Lua and Python identifiers) and uniqueness of params.

    :raises ApiSpecError: what is wrong, naming ``key``
    """
    if not isinstance(fn.name, str) or not fn.name.isidentifier() or not fn.name.isascii():
        raise ApiSpecError(f"function name {fn.name!r} is not an identifier", path=path, key=key)
    seen: set[str] = set()
    for i, p in enumerate(fn.params):
        if not isinstance(p.name, str) or not p.name.isidentifier() or not p.name.isascii():
            raise ApiSpecError(f"param name {p.name!r} is not an identifier", path=path, key=f"{key}.params[{i}]")
        if p.name in _C_KEYWORDS:
            raise ApiSpecError(f"param name {p.name!r} is a C keyword", path=path, key=f"{key}.params[{i}]")
        if p.name in seen:
            raise ApiSpecError(f"param {p.name!r} is declared twice", path=path, key=f"{key}.params[{i}]")
        seen.add(p.name)


def validate_contract(spec: ContractSpec, *, path: str | None = None, key: str | None = None) -> None:
    """Check a contract's name, version and functions.

    :raises ApiSpecError: what is wrong, naming ``key``
    """
    if not isinstance(spec.name, str) or not spec.name or "@" in spec.name:
        raise ApiSpecError(f"contract name {spec.name!r} must be a non-empty name without '@'", path=path, key=key)
    if not isinstance(spec.version, str) or not _VERSION.match(spec.version):
        raise ApiSpecError(f"version {spec.version!r} is not 'x.y.z'", path=path, key=f"{key}.version" if key else None)
    seen: set[str] = set()
    for i, fn in enumerate(spec.functions):
        fkey = f"{key}.functions[{i}]" if key else fn.name
        if not isinstance(fn, FunctionSpec):
            raise ApiSpecError(f"not a function declaration: {fn!r}", path=path, key=fkey)
        validate_function(fn, path=path, key=fkey)
        if fn.name in seen:
            raise ApiSpecError(f"function {fn.name!r} is declared twice", path=path, key=fkey)
        seen.add(fn.name)


def api(*contracts: ContractSpec, enums: Sequence[EnumType] = (), types: Sequence[StructType] = ()) -> ApiSpec:
    """Group Python-declared contracts (and enums, structs) into one :class:`ApiSpec`."""
    guests = tuple(c for c in contracts if c.kind == "guest")
    hosts = tuple(c for c in contracts if c.kind == "host")
    return ApiSpec(guests, hosts, tuple(enums), None, tuple(types))
