"""api.toml in polyplugc 0.1.3's dialect and in the later one: enum expressions, structs, Buffer."""

from __future__ import annotations

from pathlib import Path

import pytest

from luaplug.errors import ApiSpecError
from luaplug.typed import PRIMITIVES, load_api, parse_api
from luaplug.typed.enumexpr import EnumExprError, evaluate
from luaplug.typed.types import StructType

# The same declarations twice: polyplugc 0.1.3's spelling, then the later one.
OLD = """
[[enum]]
name = "Level"
repr = "u16"
[[enum.variants]]
name = "Low"
value = "0"
[[enum.variants]]
name = "High"
value = "0x10"

[[plugin_contract]]
name = "demo.Meter"
version = "2.1.0"

[[plugin_contract.functions]]
name = "read"
params = [{ name = "channel", type = "u8" }, { name = "level", type = "Level" }]
return = "f64"

[[plugin_contract.functions]]
name = "label"
params = [{ name = "text", type = "StringView" }]
return = "StringView"

[[plugin_contract.functions]]
name = "reset"

[[host_contract]]
name = "host.clock"
version = "1.0.0"
singleton = true

[[host_contract.functions]]
name = "now"
return = "u64"
"""

NEW = """
[[enum]]
name = "Level"
repr = "u16"
variants = [{ name = "Low", value = 0 }, { name = "High", value = 16 }]

[[guest_contract]]
name = "demo.Meter"
version = "2.1.0"

[[guest_contract.functions]]
name = "read"
params = [{ name = "channel", type = "u8" }, { name = "level", type = "Level" }]
return = { type = "f64", docs = "the reading" }

[[guest_contract.functions]]
name = "label"
params = [{ name = "text", type = "StringView" }]
return = { type = "StringView" }

[[guest_contract.functions]]
name = "reset"
return = "void"

[[host_contract]]
name = "host.clock"
version = "1.0.0"

[[host_contract.functions]]
name = "now"
return = { type = "u64" }
"""


def test_both_dialects_give_the_same_contract_spec() -> None:
    old, new = parse_api(OLD), parse_api(NEW)
    assert old.guest_contracts == new.guest_contracts
    assert old.host_contracts == new.host_contracts
    assert old.enums == new.enums
    meter = old.contract("demo.Meter@2")
    assert meter.major == 2 and meter.function_names == ["read", "label", "reset"]
    assert meter.functions[0].returns is PRIMITIVES["f64"]
    assert meter.functions[2].returns is None
    assert dict(old.enum("Level").variants) == {"Low": 0, "High": 16}


def test_the_deprecated_contract_table_is_a_guest_contract() -> None:
    spec = parse_api(OLD.replace("plugin_contract", "contract"))
    assert spec.guest_contracts == parse_api(OLD).guest_contracts


def test_two_guest_tables_are_refused() -> None:
    text = OLD + '\n[[guest_contract]]\nname = "demo.Other"\nversion = "1.0.0"\n'
    with pytest.raises(ApiSpecError, match="one table") as info:
        parse_api(text, path="/a/api.toml")
    assert info.value.key == "guest_contract" and info.value.path == "/a/api.toml"


def _enum(*values: str, repr: str = "u32") -> str:
    rows = "".join(f'[[enum.variants]]\nname = "V{i}"\nvalue = "{v}"\n' for i, v in enumerate(values))
    return f'[[enum]]\nname = "Flags"\nrepr = "{repr}"\nbitflag = true\n{rows}'


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (("0", "1", "1 << 1", "V1 | V2"), [0, 1, 2, 3]),
        (("0b101", "0o17", "0x1_0", "(V0 | V1) << 1"), [5, 15, 16, 30]),
        (("1 << 4 | 1", "(1 << 4) | 1", "1 << (1 | 2)"), [17, 17, 8]),
        (("~0",), [0xFFFFFFFF]),
    ],
)
def test_enum_values_as_expressions(values: tuple[str, ...], expected: list[int]) -> None:
    spec = parse_api(_enum(*values))
    assert [v for _, v in spec.enum("Flags").variants] == expected
    assert spec.enum("Flags").bitflag


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2 + 1", "unexpected '+"),
        ("V9", "not a variant declared before"),
        ("V1", "not a variant declared before"),  # itself: only earlier variants
        ("1 <<", "ends too early"),
        ("(1 | 2", "not closed"),
        ("1 2", "unexpected '2'"),
        ("__import__('os').system('true')", "unexpected"),
        ("1 << 65", "shift count"),
        ("", "empty"),
        ("1 << 40", "does not fit u32"),
    ],
)
def test_bad_enum_expressions_name_the_file_and_the_key(value: str, words: str) -> None:
    with pytest.raises(ApiSpecError, match=words) as info:
        parse_api(_enum("1", value), path="/x/api.toml")
    assert info.value.path == "/x/api.toml"
    assert info.value.key == "enum[0].variants[1].value"
    assert str(info.value).startswith("/x/api.toml, key enum[0].variants[1].value: ")


def test_the_evaluator_only_knows_its_grammar() -> None:
    assert evaluate("A | B << 2", {"A": 1, "B": 1}) == 5
    for text in ("1 + 1", "A.b", "'x'", "1 >> 1", "-1", "1 & 1"):
        with pytest.raises(EnumExprError):
            evaluate(text, {"A": 1})
    with pytest.raises(EnumExprError, match="nested"):
        evaluate("(" * 200 + "1" + ")" * 200, {})


STRUCTS = """
[[types]]
name = "Outer"
docs = "holds an Inner, declared after it"
fields = [{ name = "inner", type = "Inner" }, { name = "tag", type = "StringView" }, { name = "blob", type = "Buffer" }]

[[types]]
name = "Inner"
fields = [{ name = "x", type = "i32" }, { name = "flag", type = "bool" }]

[[plugin_contract]]
name = "demo.Shapes"
version = "1.0.0"

[[plugin_contract.functions]]
name = "make"
params = [{ name = "seed", type = "Buffer" }]
return = "Outer"
"""


def test_structs_and_buffer() -> None:
    spec = parse_api(STRUCTS)
    outer, inner = spec.struct("Outer"), spec.struct("Inner")
    assert [t.name for t in spec.types] == ["Outer", "Inner"]
    assert [f.name for f in outer.fields] == ["inner", "tag", "blob"]
    assert outer.fields[0].type is inner
    assert outer.docs == "holds an Inner, declared after it"
    fn = spec.contract("demo.Shapes").functions[0]
    assert fn.params[0].type is PRIMITIVES["Buffer"] and fn.params[0].type.kind == "bytes"
    assert isinstance(fn.returns, StructType) and fn.returns is outer
    # cffi's view of the layout (Buffer is 24 bytes: ptr, len, cap)
    assert outer.cdecl == (
        "struct { struct { int32_t x; bool flag; } inner; StringView tag; "
        "struct { void* ptr; size_t len; size_t cap; } blob; }"
    )
    made = outer.python(inner=inner.python(x=1, flag=True), tag="t", blob=b"b")
    assert made.inner.x == 1


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[[types]]\nname = "A"\nfields = [{ name = "b", type = "B" }]\n'
         '[[types]]\nname = "B"\nfields = [{ name = "a", type = "A" }]\n', "types[0]", "contains itself"),
        ('[[types]]\nname = "A"\nfields = [{ name = "x", type = "no" }]\n', "types[0].fields[0].type", "unknown type"),
        ('[[types]]\nname = "A"\nfields = [{ name = "end", type = "u8" }]\n', "types[0].fields[0].name", "not usable"),
        ('[[types]]\nname = "A"\nfields = []\n', "types[0].fields", "non-empty"),
        ('[[types]]\nname = "StringView"\nfields = [{ name = "x", type = "u8" }]\n', "types[0].name", "clashes"),
        ('[[types]]\nname = "A"\nfields = [{ name = "x", type = "u8" }, { name = "x", type = "u8" }]\n',
         "types[0].fields[1].name", "twice"),
        ('[[enum]]\nname = "A"\n[[types]]\nname = "A"\nfields = [{ name = "x", type = "u8" }]\n', "types[0].name",
         "clashes"),
    ],
)  # fmt: skip
def test_bad_structs_name_the_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ApiSpecError, match=words) as info:
        parse_api(text, path="/x/api.toml")
    assert info.value.key == key


def test_load_api_reads_the_old_dialect_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "api.toml"
    path.write_text(OLD, "utf-8")
    spec = load_api(path)
    assert spec.path == str(path)
    assert spec.contract("demo.Meter@2").function_names == ["read", "label", "reset"]
