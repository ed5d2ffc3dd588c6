"""Reading polyplug's ``api.toml`` (spec §14) into an :class:`~luaplug.typed.spec.ApiSpec`.

Tables read: ``[[guest_contract]]`` (older files: ``[[plugin_contract]]``), ``[[host_contract]]``
and ``[[enum]]``. Unknown keys are ignored; every error names the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from .. import _toml
from ..errors import ApiSpecError
from .spec import ApiSpec, ContractSpec, FunctionSpec, ParamSpec, resolve_type, validate_contract
from .types import PRIMITIVES, EnumType, TypeSpec

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
        try:
            data: Mapping[str, Any] = _toml.loads(source)
        except _toml.TOMLDecodeError as exc:
            raise ApiSpecError(f"not valid TOML: {exc}", path=path) from None
        except RecursionError:
            raise ApiSpecError("not valid TOML: values nested too deeply", path=path) from None
    else:
        data = source
    return _Parser(path).parse(data)


class _Parser:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.enums: dict[str, EnumType] = {}

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
        enums = [self.enum(t, f"enum[{i}]") for i, t in enumerate(self.array_of_tables(data, "enum"))]
        guest_key = "guest_contract" if "guest_contract" in data else "plugin_contract"
        if "guest_contract" in data and "plugin_contract" in data:
            raise self.fail("give [[guest_contract]] or the older [[plugin_contract]], not both", "plugin_contract")
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
        return ApiSpec(tuple(guests), tuple(hosts), tuple(enums), self.path)

    def enum(self, table: Mapping[str, Any], key: str) -> EnumType:
        name = self.text(table, "name", key)
        if name in PRIMITIVES or name in self.enums:
            raise self.fail(f"enum {name!r} clashes with a built-in type or another enum", f"{key}.name")
        rep = table.get("repr", "i32")
        raw = table.get("variants", [])
        if not isinstance(raw, list):
            raise self.fail("must be an array of {name, value} tables", f"{key}.variants")
        variants: dict[str, int] = {}
        for i, v in enumerate(raw):
            vkey = f"{key}.variants[{i}]"
            if not isinstance(v, dict):
                raise self.fail("must be a {name, value} table", vkey)
            vname = self.text(v, "name", vkey)
            if vname in variants:
                raise self.fail(f"variant {vname!r} is declared twice", f"{vkey}.name")
            value = v.get("value", i if not variants else max(variants.values()) + 1)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(f"must be an integer, not {value!r}", f"{vkey}.value")
            variants[vname] = value
        e = EnumType.create(
            name, rep, variants, docs=self.text(table, "docs", key, required=False), path=self.path, key=key
        )
        self.enums[name] = e
        return e

    def type_ref(self, value: object, key: str) -> TypeSpec:
        if not isinstance(value, str):
            raise self.fail(f"a type name must be a string, not {value!r}", key)
        return resolve_type(value, self.enums, path=self.path, key=key)

    def contract(self, table: Mapping[str, Any], key: str, kind: Literal["guest", "host"]) -> ContractSpec:
        name = self.text(table, "name", key)
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
        raw = table.get("params", [])
        if not isinstance(raw, list):
            raise self.fail("must be an array of {name, type} tables", f"{key}.params")
        params = []
        for i, p in enumerate(raw):
            pkey = f"{key}.params[{i}]"
            if not isinstance(p, dict):
                raise self.fail("must be a {name, type} table", pkey)
            ptype = self.type_ref(p.get("type"), f"{pkey}.type")
            params.append(ParamSpec(self.text(p, "name", pkey), ptype, self.text(p, "docs", pkey, required=False)))
        ret = table.get("return")
        if isinstance(ret, dict):
            ret = ret.get("type", "void")
            rkey = f"{key}.return.type"
        else:
            rkey = f"{key}.return"
        returns = None if ret is None or ret == "void" else self.type_ref(ret, rkey)
        return FunctionSpec(name, tuple(params), returns, self.text(table, "docs", key, required=False))
