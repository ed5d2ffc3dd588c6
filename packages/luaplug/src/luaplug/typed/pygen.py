"""A typed Python module for an ``api.toml`` (``luaplug codegen API --lang python``).

The module declares, for mypy and for the runtime alike:

- one ``enum.IntEnum`` per declared enum and one frozen dataclass per declared struct;
- one ``typing.Protocol`` per guest contract, one method per function, annotated with what
  a :class:`~luaplug.typed.TypedProxy` takes and returns (integers ``int``, floats
  ``float``, ``bool``, ``StringView`` ``str`` out and ``str | bytes | bytearray |
  memoryview`` in, ``Buffer`` ``bytes`` out, enums their class, structs their dataclass out
  and the dataclass or a mapping in);
- the contract declared again with :mod:`luaplug.typed`'s Python API, built on those enum
  and dataclass classes, so a proxy returns instances of exactly the annotated classes;
- ``bind_<contract>(rt, *, instance=True, bundle=None)``: ``rt.bind`` of that declaration,
  typed as the Protocol.

The output depends on the declaration alone (no dates, no paths), so it is reproducible.
"""

from __future__ import annotations

import json
import keyword
import re
import textwrap
from pathlib import Path

from ..errors import ApiSpecError
from .spec import ApiSpec, ContractSpec, FunctionSpec
from .types import EnumType, ScalarType, StructType, TypeSpec, pascal_case, python_name

__all__ = ["MODULE_FILE", "generate_python", "write_python"]

#: The file ``write_python`` writes in its output directory.
MODULE_FILE = "contracts.py"

_STRING_IN = "str | bytes | bytearray | memoryview"
_SCALAR_OUT = {"int": "int", "float": "float", "bool": "bool", "string": "str", "bytes": "bytes"}


def _q(text: str) -> str:
    """``text`` as a double-quoted Python string literal."""
    return json.dumps(text)


def _ident(name: str) -> str:
    """``name``'s last dotted part as a Python class name."""
    base = re.sub(r"\W", "_", name.rpartition(".")[2]) or "T"
    if base[0].isdigit():
        base = f"T{base}"
    return python_name(base)


def _snake(name: str) -> str:
    """``"text.Filter"`` -> ``"text_filter"``; ``"kv.HTTPStore"`` -> ``"kv_http_store"``."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.replace(".", "_").replace("-", "_"))
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    return re.sub(r"_+", "_", s).lower().strip("_")


def _doc(text: str, indent: str) -> list[str]:
    """A docstring of ``text`` wrapped to the line length (``\"\"\"`` and backslashes escaped)."""
    clean = " ".join(text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').split())
    lines = textwrap.wrap(clean, 110 - len(indent)) or [""]
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *(f"{indent}{line}" for line in lines[1:]), f'{indent}"""']


class _Gen:
    def __init__(self, api: ApiSpec) -> None:
        self.api = api
        self.enums: dict[str, str] = {}  # EnumType.name -> class name
        self.structs: dict[str, str] = {}  # StructType.name -> class name
        self.uses_mapping = False
        self.taken: set[str] = set()

    def _claim(self, name: str, what: str) -> str:
        if name in self.taken or name.startswith("_") or keyword.iskeyword(name):
            raise ApiSpecError(f"{what}: the Python name {_q(name)} is taken or not usable", path=self.api.path)
        self.taken.add(name)
        return name

    # -- annotations -----------------------------------------------------------------

    def out(self, t: TypeSpec) -> str:
        """The annotation of what a proxy returns for ``t``."""
        if isinstance(t, EnumType):
            # a value that is no member (a bitflag combination, a guest's stray value) comes back as an int
            return f"{self.enums[t.name]} | int"
        if isinstance(t, StructType):
            return self.structs[t.name]
        return _SCALAR_OUT[t.kind]

    def inp(self, t: TypeSpec) -> str:
        """The annotation of what a proxy accepts for ``t``."""
        if isinstance(t, ScalarType) and t.kind in ("string", "bytes"):
            return _STRING_IN
        if isinstance(t, EnumType):
            # a plain int of a declared value is accepted too (an IntEnum member is an int)
            return "int"
        if isinstance(t, StructType):
            self.uses_mapping = True
            return f"{self.structs[t.name]} | Mapping[str, object]"
        return _SCALAR_OUT[t.kind]

    # -- declarations ----------------------------------------------------------------

    def all_types(self) -> tuple[list[EnumType], list[StructType]]:
        """Every enum and struct the guest contracts use or the file declares, in declaration order."""
        enums: dict[str, EnumType] = {e.name: e for e in self.api.enums}
        structs: dict[str, StructType] = {}

        def visit(t: TypeSpec) -> None:
            if isinstance(t, EnumType):
                enums.setdefault(t.name, t)
            elif isinstance(t, StructType) and t.name not in structs:
                for f in t.fields:
                    visit(f.type)
                structs[t.name] = t  # after its fields: a nested struct is declared first

        for s in self.api.types:
            visit(s)
        for c in self.api.guest_contracts:
            for fn in c.functions:
                for p in fn.params:
                    visit(p.type)
                if fn.returns is not None:
                    visit(fn.returns)
        return list(enums.values()), list(structs.values())

    def enum_block(self, e: EnumType) -> list[str]:
        cls = self.enums[e.name]
        lines = [f"class {cls}(enum.IntEnum):"]
        if e.docs:
            lines += [*_doc(e.docs, "    "), ""]
        seen: set[str] = set()
        for vname, value in e.variants:
            member = python_name(vname)
            if member.startswith("_") or member in seen:
                raise ApiSpecError(
                    f"enum {e.name}: variant {_q(vname)} cannot be a Python enum member", path=self.api.path
                )
            seen.add(member)
            lines.append(f"    {member} = {value}")
        if not e.variants:
            lines.append("    pass")
        return lines

    def struct_block(self, s: StructType) -> list[str]:
        lines = ["@dataclass(frozen=True)", f"class {self.structs[s.name]}:"]
        if s.docs:
            lines += [*_doc(s.docs, "    "), ""]
        lines += [f"    {python_name(f.name)}: {self.out(f.type)}" for f in s.fields]
        if not s.fields:
            lines.append("    pass")
        return lines

    def method(self, fn: FunctionSpec) -> list[str]:
        pnames = [python_name(p.name) for p in fn.params]
        # the proxy renames these the same way (its locals start with _lp)
        pnames = [f"{n}_" if n.startswith("_lp") else n for n in pnames]
        receiver = "self" if "self" not in pnames else "_self"
        params = [receiver, *(f"{n}: {self.inp(p.type)}" for n, p in zip(pnames, fn.params, strict=True))]
        ret = "None" if fn.returns is None else self.out(fn.returns)
        head = f"    def {fn.name}({', '.join(params)}) -> {ret}:"
        if len(head) > 120:
            head = "\n".join([f"    def {fn.name}(", *(f"        {p}," for p in params), f"    ) -> {ret}:"])
        doc = f"``{fn.signature()}``" + (f": {fn.docs}" if fn.docs else "")
        return [head, *_doc(doc, "        "), "        ..."]

    def type_expr(self, t: TypeSpec) -> str:
        if isinstance(t, ScalarType):
            return _q(t.name)
        if isinstance(t, EnumType):
            return f"_{self.enums[t.name].upper()}"
        return f"_{self.structs[t.name].upper()}"

    def spec_lines(self, c: ContractSpec, const: str) -> list[str]:
        lines = [f"{const} = _typed.contract(", f"    {_q(c.name)},"]
        for fn in c.functions:
            params = ", ".join(f"({_q(p.name)}, {self.type_expr(p.type)})" for p in fn.params)
            ret = "None" if fn.returns is None else self.type_expr(fn.returns)
            line = f"    _typed.function({_q(fn.name)}, [{params}], {ret}),"
            if len(line) > 120:
                items = [f"            ({_q(p.name)}, {self.type_expr(p.type)})," for p in fn.params]
                head = ["    _typed.function(", f"        {_q(fn.name)},", "        ["]
                line = "\n".join([*head, *items, "        ],", f"        {ret},", "    ),"])
            lines.append(line)
        lines += [f"    version={_q(c.version)},", ")"]
        return lines

    def render(self) -> str:
        enums, structs = self.all_types()
        for e in enums:
            self.enums[e.name] = self._claim(_ident(e.name), f"enum {e.name}")
        for s in structs:
            self.structs[s.name] = self._claim(_ident(s.name), f"struct {s.name}")
        contracts: list[tuple[ContractSpec, str, str, str]] = []
        names = [c.name for c in self.api.guest_contracts]
        for c in self.api.guest_contracts:
            suffix = f"V{c.major}" if names.count(c.name) > 1 else ""
            proto = self._claim(_ident(pascal_case(c.name)) + suffix, f"contract {c.key}")
            snake = _snake(c.name) + (f"_v{c.major}" if suffix else "")
            const = self._claim(snake.upper(), f"contract {c.key}")
            contracts.append((c, proto, const, self._claim(f"bind_{snake}", f"contract {c.key}")))

        body: list[str] = []
        for e in enums:
            body += ["", "", *self.enum_block(e)]
        for s in structs:
            body += ["", "", *self.struct_block(s)]
        for c, proto, _const, _bind in contracts:
            doc = f"``{c.key}`` as a typed proxy calls it." + (f" {c.docs}" if c.docs else "")
            body += ["", "", f"class {proto}(Protocol):", *_doc(doc, "    ")]
            for fn in c.functions:
                body += ["", *self.method(fn)]
            if "close" not in c.function_names:
                body += [
                    "",
                    "    def close(self) -> None:",
                    '        """Release the proxy\'s instance."""',
                    "        ...",
                ]
        body.append("")
        body.append("")
        body.append("# -- the declarations the proxies are built from (the classes above as their types) --")
        for e in enums:
            cls = self.enums[e.name]
            flag = ", bitflag=True" if e.bitflag else ""
            body += ["", f"_{cls.upper()} = _typed.EnumType.create({_q(e.name)}, {_q(e.repr.name)}, {cls}{flag})"]
        for s in structs:
            cls = self.structs[s.name]
            body += ["", f"_{cls.upper()} = _typed.StructType(", f"    {_q(s.name)},", "    ("]
            for f in s.fields:
                t = f.type
                texpr = f"_typed.PRIMITIVES[{_q(t.name)}]" if isinstance(t, ScalarType) else self.type_expr(t)
                body.append(f"        _typed.FieldSpec({_q(f.name)}, {texpr}),")
            body += ["    ),", f"    python={cls},", ")"]
        for c, _proto, const, _bind in contracts:
            body += ["", *self.spec_lines(c, const)]
        for c, proto, const, bind in contracts:
            args = "rt: Runtime, *, instance: bool = True, bundle: str | Bundle | None = None"
            bind_head = f"def {bind}({args}) -> {proto}:"
            if len(bind_head) > 120:
                bind_head = f"def {bind}(\n    {args}\n) -> {proto}:"
            body += [
                "",
                "",
                bind_head,
                *_doc(f"``rt.bind`` of ``{c.key}``, typed as :class:`{proto}` (same arguments).", "    "),
                f"    return cast({_q(proto)}, rt.bind({const}, instance=instance, bundle=bundle))",
            ]

        # isort-style order (ruff's RUF022): constants, then classes, then functions
        exported = sorted(
            [*self.enums.values(), *self.structs.values()] + [n for c in contracts for n in (c[1], c[2], c[3])],
            key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n),
        )
        source = self.api.path and Path(self.api.path).name
        head = [
            f'"""Typed bindings of {source or "an API declaration"} '
            '(``luaplug codegen --lang python``; do not edit)."""',
            "",
            "from __future__ import annotations",
            "",
        ]
        stdlib = []
        if enums:
            stdlib.append("import enum")
        if self.uses_mapping:
            stdlib.append("from collections.abc import Mapping")
        if structs:
            stdlib.append("from dataclasses import dataclass")
        stdlib.append(f"from typing import {'TYPE_CHECKING, Protocol, cast' if contracts else 'TYPE_CHECKING'}")
        head += [*stdlib, "", "from luaplug import typed as _typed", ""]
        if contracts:
            head += ["if TYPE_CHECKING:", "    from luaplug import Bundle, Runtime", ""]
        head.append("__all__ = [" + ", ".join(_q(n) for n in exported) + "]")
        if len(head[-1]) > 120:
            head[-1:] = ["__all__ = [", *(f"    {_q(n)}," for n in exported), "]"]
        return "\n".join(head + body) + "\n"


def generate_python(api: ApiSpec) -> str:
    """The source of the typed module for ``api``'s guest contracts (host contracts are not bound).

    :raises ApiSpecError: two declarations would get the same Python name
    """
    return _Gen(api).render()


def write_python(api: ApiSpec, out: str | Path) -> Path:
    """Write :func:`generate_python` to ``out/contracts.py``; returns the path written."""
    path = Path(out) / MODULE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generate_python(api), encoding="utf-8")
    return path
