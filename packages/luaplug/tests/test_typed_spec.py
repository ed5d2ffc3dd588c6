"""Contract declarations: ``api.toml`` parsing, the Python declaration API, the Lua glue text."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

from luaplug import ApiSpecError, typed
from luaplug.typed import PRIMITIVES, load_api, parse_api
from luaplug.typed.luagen import generate_lua, lua_identifier, write_lua
from luaplug.typed.types import pascal_case

API = """
[[enum]]
name = "Mode"
repr = "u16"
variants = [{ name = "Off", value = 0 }, { name = "On", value = 7 }]

[[guest_contract]]
name = "pipeline.Decoder"
version = "2.1.0"
docs = "decodes"

[[guest_contract.functions]]
name = "decode"
params = [{ name = "input", type = "StringView", docs = "bytes" }]
return = { type = "StringView", docs = "text" }

[[guest_contract.functions]]
name = "set_mode"
params = [{ name = "mode", type = "Mode" }, { name = "level", type = "u8" }]
return = "void"

[[guest_contract.functions]]
name = "reset"

[[host_contract]]
name = "host.Clock"
version = "1.0.0"

[[host_contract.functions]]
name = "now"
return = "u64"
"""


def test_parse_a_full_file() -> None:
    api = parse_api(API, path="api.toml")
    dec = api.contract("pipeline.Decoder@2")
    assert dec is api.contract("pipeline.Decoder")
    assert (dec.major, dec.key, dec.kind, dec.docs) == (2, "pipeline.Decoder@2", "guest", "decodes")
    assert dec.struct_name == "PipelineDecoderContract"
    decode, set_mode, reset = dec.functions
    assert decode.params[0].type is PRIMITIVES["StringView"]
    assert decode.params[0].docs == "bytes"
    assert decode.returns is PRIMITIVES["StringView"]
    assert set_mode.returns is None and reset.returns is None and reset.params == ()
    assert dec.args_struct_name(set_mode) == "PipelineDecoderContractSetModeArgs"
    mode = api.enum("Mode")
    assert set_mode.params[0].type is mode
    assert issubclass(mode.python, enum.IntEnum)
    assert mode.python.On == 7 and mode.ctype == "uint16_t"
    clock = api.contract("host.Clock@1")
    assert clock.kind == "host" and clock.functions[0].returns is PRIMITIVES["u64"]
    assert decode.signature() == "decode(input: StringView) -> StringView"


def test_every_builtin_type() -> None:
    names = "i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 bool StringView".split()
    params = ", ".join(f'{{ name = "p{i}", type = "{t}" }}' for i, t in enumerate(names))
    text = '[[guest_contract]]\nname = "t.All"\nversion = "1.0.0"\n[[guest_contract.functions]]\nname = "f"\n'
    api = parse_api(text + f"params = [{params}]\n")
    fn = api.contract("t.All@1").functions[0]
    assert [p.type.name for p in fn.params] == names
    assert [p.type.ctype for p in fn.params][:4] == ["int8_t", "int16_t", "int32_t", "int64_t"]
    assert PRIMITIVES["u64"].hi == 2**64 - 1 and PRIMITIVES["i8"].lo == -128


def test_the_older_plugin_contract_table() -> None:
    api = parse_api('[[plugin_contract]]\nname = "old.Style"\nversion = "3.0.0"\n')
    assert api.guest_contracts[0].key == "old.Style@3"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[[guest_contract]]\nversion = '1.0.0'\n", "guest_contract[0].name", "missing"),
        ("[[guest_contract]]\nname = 'a.B'\n", "guest_contract[0].version", "missing"),
        ("[[guest_contract]]\nname = 'a.B'\nversion = 1\n", "guest_contract[0].version", "string"),
        ("[[guest_contract]]\nname = 'a.B'\nversion = 'one'\n", "guest_contract[0].version", "x.y.z"),
        (
            "[[guest_contract]]\nname = 'a.B'\nversion = '1.0.0'\n[[guest_contract.functions]]\nname = 'f'\n"
            "params = [{ name = 'x', type = 'i128' }]\n",
            "guest_contract[0].functions[0].params[0].type",
            "unknown type 'i128'",
        ),
        (
            "[[guest_contract]]\nname = 'a.B'\nversion = '1.0.0'\n[[guest_contract.functions]]\nname = 'f'\n"
            "return = { type = 'Nope' }\n",
            "guest_contract[0].functions[0].return.type",
            "unknown type",
        ),
        (
            "[[guest_contract]]\nname = 'a.B'\nversion = '1.0.0'\n[[guest_contract.functions]]\nname = 'f'\n"
            "[[guest_contract.functions]]\nname = 'f'\n",
            "guest_contract[0].functions[1]",
            "declared twice",
        ),
        (
            "[[guest_contract]]\nname = 'a.B'\nversion = '1.0.0'\n[[guest_contract.functions]]\nname = 'f'\n"
            "params = [{ name = 'x', type = 'i8' }, { name = 'x', type = 'i8' }]\n",
            "guest_contract[0].functions[0].params[1]",
            "twice",
        ),
        (
            "[[guest_contract]]\nname = 'a.B'\nversion = '1.0.0'\n[[guest_contract.functions]]\nname = 'bad name'\n",
            "guest_contract[0].functions[0]",
            "identifier",
        ),
        ("[[enum]]\nname = 'E'\nrepr = 'f32'\n", "enum[0]", "integer type"),
        (
            "[[enum]]\nname = 'E'\nrepr = 'u8'\nvariants = [{ name = 'A', value = 256 }]\n",
            "enum[0].variants[0].value",
            "does not fit u8",
        ),
        ("[[enum]]\nname = 'i32'\n", "enum[0].name", "clashes"),
        ("guest_contract = 3\n", "guest_contract", "array of tables"),
    ],
)
def test_errors_name_the_file_and_the_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ApiSpecError) as info:
        parse_api(text, path="/x/api.toml")
    assert info.value.path == "/x/api.toml"
    assert info.value.key == key
    assert words in str(info.value)
    assert str(info.value).startswith("/x/api.toml, key ")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ApiSpecError, match="cannot read"):
        load_api(tmp_path / "none.toml")
    bad = tmp_path / "api.toml"
    bad.write_text("[[guest_contract]\n", "utf-8")
    with pytest.raises(ApiSpecError, match="not valid TOML") as info:
        load_api(bad)
    assert info.value.path == str(bad.resolve())


def test_load_api_rereads_a_changed_file(tmp_path: Path) -> None:
    f = tmp_path / "api.toml"
    f.write_text('[[guest_contract]]\nname = "a.B"\nversion = "1.0.0"\n', "utf-8")
    assert load_api(f).guest_contracts[0].major == 1
    f.write_text('[[guest_contract]]\nname = "a.B"\nversion = "22.0.0"\n', "utf-8")
    assert load_api(f).guest_contracts[0].major == 22


def test_contract_lookup_errors() -> None:
    api = parse_api(API)
    with pytest.raises(ApiSpecError, match=r"declared: pipeline\.Decoder@2, host\.Clock@1"):
        api.contract("pipeline.Decoder@1")
    with pytest.raises(ApiSpecError, match="name@major"):
        api.contract("pipeline.Decoder@x")


def test_the_python_declaration_api() -> None:
    class Level(enum.IntEnum):
        LOW = 1
        HIGH = 9

    level = typed.enum("Level", "u8", Level)
    assert level.python is Level
    color = typed.enum("Color", "i32", {"Red": 0}, Green=1)
    assert color.python.Green == 1
    spec = typed.contract(
        "demo.Thing@3",
        typed.function("f", [("a", "i32"), ("b", level, "docs of b")], returns="bool", docs="f docs"),
        typed.function("g", {"c": color}),
        typed.function("h", [("x", Level)], returns="void"),
    )
    assert spec.version == "3.0.0" and spec.key == "demo.Thing@3"
    f, g, h = spec.functions
    assert f.params[1].docs == "docs of b" and f.returns is PRIMITIVES["bool"]
    assert g.params[0].type is color and g.returns is None
    assert h.params[0].type.python is Level and h.returns is None
    assert typed.api(spec).contract("demo.Thing").key == "demo.Thing@3"


@pytest.mark.parametrize(
    "build",
    [
        lambda: typed.function("f", [("x", "nope")]),
        lambda: typed.function("f", [("int", "i32")]),  # a C keyword cannot name a field
        lambda: typed.function("1f"),
        lambda: typed.contract("a@1", typed.function("f"), typed.function("f")),
        lambda: typed.contract("a@1", version="2.0.0"),
        lambda: typed.enum("E", "u8", {"A": -1}),
        lambda: typed.function("f", [("x",)]),
    ],
)
def test_bad_python_declarations(build: object) -> None:
    with pytest.raises(ApiSpecError):
        build()  # type: ignore[operator]


def test_names() -> None:
    assert pascal_case("pipeline.Decoder") == "PipelineDecoder"
    assert pascal_case("my_pkg.get_name") == "MyPkgGetName"
    assert lua_identifier("typed-calc") == "typed_calc"
    assert lua_identifier("9lives") == "_9lives"


def test_lua_glue_text(tmp_path: Path) -> None:
    api = parse_api(API, path="/somewhere/api.toml")
    text = generate_lua(api, "my-decoder")
    assert "-- contracts.lua: generated by `luaplug codegen` from api.toml; do not edit." in text
    assert "function M.set_my_decoder_factory(factory, contract)" in text
    assert "function M.register_my_decoder(registrations)" in text
    assert "M.Mode = { Off = 0, On = 7 }" in text
    assert (
        'cdef_once("PipelineDecoderContractSetModeArgs", '
        '"typedef struct PipelineDecoderContractSetModeArgs { uint16_t mode; uint8_t level; } '
        'PipelineDecoderContractSetModeArgs;")'
    ) in text
    assert 'registrations["pipeline.Decoder"] = {' in text
    assert "contract_version = 2," in text
    assert "host.Clock" not in text.split("-- Plugin")[1].splitlines()[0]  # host contracts get no glue
    assert "local r = self:decode(to_str(ffi.cast(args_t, args_ptr)[0]))" in text
    assert "alloc_string_arena(arena_alloc, arena_ptr, r)" in text
    with pytest.raises(ApiSpecError, match="host contract"):
        generate_lua(api, "p", ["host.Clock@1"])
    out = write_lua(api, "p", tmp_path / "new")
    assert out == tmp_path / "new" / "contracts.lua" and out.is_file()


def test_lua_keywords_as_names() -> None:
    spec = typed.contract("k.W@1", typed.function("repeat", [("end", "i32"), ("b", "i32")], returns="i32"))
    text = generate_lua(typed.api(spec), "k")
    assert 'self["repeat"](self, a["end"], a.b)' in text
