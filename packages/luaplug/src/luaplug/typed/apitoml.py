"""Reading polyplug's ``api.toml`` (spec §14) into an :class:`~luaplug.typed.spec.ApiSpec`.

Both dialects are read: polyplugc 0.1.3's (``[[plugin_contract]]``, enum values as strings that
may be expressions, ``[[types]]`` structs, ``Buffer``) and the later one (``[[guest_contract]]``,
integer enum values, ``return = { type = ... }``). Tables read: ``[[plugin_contract]]`` (or
``[[guest_contract]]``, or the deprecated ``[[contract]]``: one of them), ``[[host_contract]]``,
``[[enum]]`` and ``[[types]]``. Unknown keys are ignored after a WARNING on the ``luaplug.typed``
logger naming the file, the key and the nearest known key (kept in :attr:`ApiSpec.warnings`);
every error names the file and the key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

from .._keys import AUTHORING, unknown_keys
from ..errors import ApiSpecError
from ..events import emit
from ..manifest import toml_reader
from .enumexpr import EnumExprError, evaluate
from .spec import ApiSpec, ContractSpec, FunctionSpec, ParamSpec, resolve_type, validate_contract
from .types import PRIMITIVES, EnumType, FieldSpec, StructType, TypeSpec

#: The tables a guest contract may be declared in (polyplugc 0.1.3 reads the first and the last).
_GUEST_TABLES: Final = ("plugin_contract", "guest_contract", "contract")
#: C names the ABI declarations already use: a struct may not take one.
_ABI_NAMES: Final = frozenset(
    "StringView Buffer Version AbiError VmLoaderData GuestContractInstance GuestContractHandle Array "
    "BundleInitContext PluginDescriptor ArenaOverflowBlock CallArena VmCallFn CreateInstanceFn "
    "DestroyInstanceFn VmDispatch NativeDispatch DispatchMechanisms GuestContractInterface "
    "HostContractInstance HostContractInterface HostApi DependencyInfo Ed25519PublicKey ReloadPhase "
    "RuntimeConfig".split()
)

#: The keys each kind of table knows (both dialects).
_KEYS: Final = {
    "top": (*_GUEST_TABLES, "host_contract", "enum", "types"),
    "contract": ("name", "version", "functions", "docs", "singleton"),
    "function": ("name", "params", "return", "docs"),
    "param": ("name", "type", "docs"),
    "return": ("type", "docs"),
    "enum": ("name", "repr", "variants", "docs", "bitflag"),
    "variant": ("name", "value", "docs"),
    "types": ("name", "fields", "docs"),
    "field": ("name", "type", "docs"),
}
_log: Final = logging.getLogger("luaplug.typed")

__all__ = ["load_api", "parse_api"]


def load_api(path: str | os.PathLike[str]) -> ApiSpec:
    """Parse the ``api.toml`` at ``path`` (cached while the file is unchanged).

    :raises ApiSpecError: unreadable, not TOML, or not a valid declaration
    """
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise ApiSpecError(f"cannot read: {exc.strerror or exc}", path=str(p)) from None
    return _load_cached(str(p), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=32)
def _load_cached(path: str, _mtime: int, _size: int) -> ApiSpec:
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiSpecError(f"cannot read: {exc}", path=path) from None
    return parse_api(text, path=path)


def parse_api(source: str | Mapping[str, Any], *, path: str | None = None) -> ApiSpec:
    """Parse ``api.toml`` text (or its already-parsed table).

    :param path: named in errors and kept as :attr:`ApiSpec.path`
    :raises ApiSpecError: the first problem found
    """
    if isinstance(source, str):
        toml = toml_reader()
        try:
            data: Mapping[str, Any] = toml.loads(source)
        except toml.TOMLDecodeError as exc:
            raise ApiSpecError(f"not valid TOML: {exc}", path=path) from None
        except RecursionError:
            raise ApiSpecError("not valid TOML: values nested too deeply", path=path) from None
    else:
        data = source
    spec = _Parser(path).parse(data)
    for text in spec.warnings:
        emit(_log, logging.WARNING, "%s", text, extra=dict(AUTHORING))
    return spec


_C_WORDS: Final = frozenset(
    "auto bool break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "and elseif end false function in local nil not or repeat then true until".split()
)


class _Parser:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.enums: dict[str, EnumType] = {}
        #: declared enums and structs by name (what a type reference may name besides built-ins)
        self.named: dict[str, EnumType | StructType] = {}
        self.pending: dict[str, str] = {}
        self.warnings: list[str] = []

    def unknown(self, table: Mapping[str, Any], kind: str, key: str) -> None:
        self.warnings += unknown_keys(table, _KEYS[kind], key, self.path)

    def fail(self, message: str, key: str) -> ApiSpecError:
        return ApiSpecError(message, path=self.path, key=key)

    def array_of_tables(self, data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail("must be an array of tables", key)
        return value

    def text(self, table: Mapping[str, Any], field: str, key: str, *, required: bool = True) -> str:
        value = table.get(field)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value):
            what = "is missing" if value is None else f"must be a non-empty string, not {value!r}"
            raise self.fail(what, f"{key}.{field}")
        return value

    def parse(self, data: Mapping[str, Any]) -> ApiSpec:
        self.unknown(data, "top", "")
        enum_tables = self.array_of_tables(data, "enum")
        type_tables = self.array_of_tables(data, "types")
        self.claim_names(enum_tables, "enum")
        self.claim_names(type_tables, "types")
        enums = [self.enum(t, f"enum[{i}]") for i, t in enumerate(enum_tables)]
        structs = self.structs(type_tables)
        present = [k for k in _GUEST_TABLES if k in data]
        if len(present) > 1:
            raise self.fail(
                f"declare guest contracts in one table, not in {' and '.join(f'[[{k}]]' for k in present)}",
                present[1],
            )
        guest_key = present[0] if present else "plugin_contract"
        guests = [
            self.contract(t, f"{guest_key}[{i}]", "guest") for i, t in enumerate(self.array_of_tables(data, guest_key))
        ]
        hosts = [
            self.contract(t, f"host_contract[{i}]", "host")
            for i, t in enumerate(self.array_of_tables(data, "host_contract"))
        ]
        seen: dict[str, str] = {}
        for group, prefix in ((guests, guest_key), (hosts, "host_contract")):
            for i, c in enumerate(group):
                tag = f"{c.kind}:{c.key}"
                if tag in seen:
                    raise self.fail(f"contract {c.key} is declared twice (first at {seen[tag]})", f"{prefix}[{i}]")
                seen[tag] = f"{prefix}[{i}]"
        return ApiSpec(tuple(guests), tuple(hosts), tuple(enums), self.path, tuple(structs), tuple(self.warnings))

    def claim_names(self, tables: list[Mapping[str, Any]], what: str) -> None:
        """Check the names of enums and structs before any is resolved (they may refer to each other)."""
        for i, t in enumerate(tables):
            key = f"{what}[{i}]"
            name = self.text(t, "name", key)
            if not name.isidentifier() or not name.isascii():
                raise self.fail(f"{name!r} is not an identifier", f"{key}.name")
            if name in PRIMITIVES or name in _ABI_NAMES or name in self.named or name in self.pending:
                raise self.fail(f"{name!r} clashes with a built-in type or another enum or struct", f"{key}.name")
            self.pending[name] = key

    def structs(self, tables: list[Mapping[str, Any]]) -> list[StructType]:
        """Every ``[[types]]`` struct, in declaration order; a field may name a struct declared later."""
        by_name = {str(t["name"]): (t, f"types[{i}]") for i, t in enumerate(tables)}
        done: dict[str, StructType] = {}
        visiting: list[str] = []

        def build(name: str) -> StructType:
            if name in done:
                return done[name]
            table, key = by_name[name]
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name) :], name])
                raise self.fail(f"struct {name} contains itself ({cycle})", key)
            visiting.append(name)
            self.unknown(table, "types", key)
            raw = table.get("fields", [])
            if not isinstance(raw, list) or not raw:
                raise self.fail("must be a non-empty array of {name, type} tables", f"{key}.fields")
            fields: list[FieldSpec] = []
            for i, f in enumerate(raw):
                fkey = f"{key}.fields[{i}]"
                if not isinstance(f, dict):
                    raise self.fail("must be a {name, type} table", fkey)
                self.unknown(f, "field", fkey)
                fname = self.text(f, "name", fkey)
                if not fname.isidentifier() or not fname.isascii() or fname in _C_WORDS:
                    raise self.fail(f"field name {fname!r} is not usable in C and Lua", f"{fkey}.name")
                if any(x.name == fname for x in fields):
                    raise self.fail(f"field {fname!r} is declared twice", f"{fkey}.name")
                tname = f.get("type")
                if isinstance(tname, str) and tname in by_name:
                    ftype: TypeSpec = build(tname)
                else:
                    ftype = self.type_ref(tname, f"{fkey}.type")
                fields.append(FieldSpec(fname, ftype, self.text(f, "docs", fkey, required=False)))
            visiting.pop()
            st = StructType(name, tuple(fields), self.text(table, "docs", key, required=False))
            done[name] = st
            self.named[name] = st
            return st

        return [build(name) for name in by_name]

    def enum(self, table: Mapping[str, Any], key: str) -> EnumType:
        name = self.text(table, "name", key)
        self.unknown(table, "enum", key)
        rep = table.get("repr", "i32")
        raw = table.get("variants", [])
        if not isinstance(raw, list):
            raise self.fail("must be an array of {name, value} tables", f"{key}.variants")
        bitflag = table.get("bitflag", False)
        if not isinstance(bitflag, bool):
            raise self.fail(f"must be true or false, not {bitflag!r}", f"{key}.bitflag")
        variants: dict[str, int] = {}
        for i, v in enumerate(raw):
            vkey = f"{key}.variants[{i}]"
            if not isinstance(v, dict):
                raise self.fail("must be a {name, value} table", vkey)
            self.unknown(v, "variant", vkey)
            vname = self.text(v, "name", vkey)
            if vname in variants:
                raise self.fail(f"variant {vname!r} is declared twice", f"{vkey}.name")
            value = v.get("value", i if not variants else max(variants.values()) + 1)
            if isinstance(value, str):
                try:
                    value = evaluate(value, variants)
                except EnumExprError as exc:
                    raise self.fail(f"bad value expression {v['value']!r}: {exc}", f"{vkey}.value") from None
            elif isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(f"must be an integer or an expression string, not {value!r}", f"{vkey}.value")
            variants[vname] = value
        if isinstance(rep, str) and rep in PRIMITIVES and PRIMITIVES[rep].kind == "int":
            rtype = PRIMITIVES[rep]
            for i, (vname, value) in enumerate(variants.items()):
                if value < 0 and rtype.lo == 0 and value >= -(rtype.hi + 1):
                    # ~x in an unsigned repr: the bit pattern, as C would store it
                    variants[vname] = value & rtype.hi
                elif not rtype.lo <= value <= rtype.hi:
                    raise self.fail(f"{vname} = {value} does not fit {rep}", f"{key}.variants[{i}].value")
        e = EnumType.create(
            name,
            rep,
            variants,
            docs=self.text(table, "docs", key, required=False),
            bitflag=bitflag,
            path=self.path,
            key=key,
        )
        self.enums[name] = e
        self.named[name] = e
        return e

    def type_ref(self, value: object, key: str) -> TypeSpec:
        if not isinstance(value, str):
            raise self.fail(f"a type name must be a string, not {value!r}", key)
        return resolve_type(value, self.named, path=self.path, key=key)

    def contract(self, table: Mapping[str, Any], key: str, kind: Literal["guest", "host"]) -> ContractSpec:
        name = self.text(table, "name", key)
        self.unknown(table, "contract", key)
        version = table.get("version")
        if version is None:
            raise self.fail("is missing", f"{key}.version")
        if not isinstance(version, str):
            raise self.fail(f"must be a string 'x.y.z', not {version!r}", f"{key}.version")
        tables = self.array_of_tables(table, "functions")
        fns = [self.function(t, f"{key}.functions[{i}]") for i, t in enumerate(tables)]
        spec = ContractSpec(name, version, tuple(fns), self.text(table, "docs", key, required=False), kind)
        validate_contract(spec, path=self.path, key=key)
        return spec

    def function(self, table: Mapping[str, Any], key: str) -> FunctionSpec:
        name = self.text(table, "name", key)
        self.unknown(table, "function", key)
        raw = table.get("params", [])
        if not isinstance(raw, list):
            raise self.fail("must be an array of {name, type} tables", f"{key}.params")
        params = []
        for i, p in enumerate(raw):
            pkey = f"{key}.params[{i}]"
            if not isinstance(p, dict):
                raise self.fail("must be a {name, type} table", pkey)
            self.unknown(p, "param", pkey)
            ptype = self.type_ref(p.get("type"), f"{pkey}.type")
            params.append(ParamSpec(self.text(p, "name", pkey), ptype, self.text(p, "docs", pkey, required=False)))
        ret = table.get("return")
        if isinstance(ret, dict):
            self.unknown(ret, "return", f"{key}.return")
            ret = ret.get("type", "void")
            rkey = f"{key}.return.type"
        else:
            rkey = f"{key}.return"
        returns = None if ret is None or ret == "void" else self.type_ref(ret, rkey)
        return FunctionSpec(name, tuple(params), returns, self.text(table, "docs", key, required=False))
