"""The §14 call layout (luaplug.typed.layout): how args are passed, where the result goes.

The offsets are checked against ctypes, an implementation of the C struct layout independent
of cffi (which the layout module uses).
"""

from __future__ import annotations

import ctypes

import pytest

from luaplug import typed
from luaplug.typed import PRIMITIVES, FieldSpec, FunctionSpec, StructType
from luaplug.typed.layout import layout, pack_decls, scalar_format

SHADE = typed.enum("Shade", "u8", {"Dark": 0})
STAMP = StructType("Stamp", (FieldSpec("tag", PRIMITIVES["u8"]), FieldSpec("serial", PRIMITIVES["u64"])))
MIX = {"a": "u8", "b": "f64", "c": SHADE, "d": "StringView", "e": "bool", "f": "i16", "g": STAMP, "h": "f32"}
DECODER = typed.contract(
    "pipeline.Decoder@1",
    typed.function("ping"),
    typed.function("decode", {"input": "StringView"}, returns="StringView"),
    typed.function("mix", {**MIX, "i": "Buffer"}, returns="u32"),
    typed.function("get_stamp", {"a": "i64", "b": "i8"}, returns=STAMP),
    typed.function("get_buf", returns="Buffer"),
    typed.function("is_on", {"s": SHADE}, returns=SHADE),
)
SCALARS = typed.function("scalars", {"a": "bool", "b": "i64", "c": "f32", "d": SHADE, "e": "u16"}, returns="f64")


class _SV(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Buffer(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t), ("cap", ctypes.c_size_t)]


class _Stamp(ctypes.Structure):
    _fields_ = [("tag", ctypes.c_uint8), ("serial", ctypes.c_uint64)]


class _Mix(ctypes.Structure):
    _fields_ = [
        ("a", ctypes.c_uint8),
        ("b", ctypes.c_double),
        ("c", ctypes.c_uint8),
        ("d", _SV),
        ("e", ctypes.c_bool),
        ("f", ctypes.c_int16),
        ("g", _Stamp),
        ("h", ctypes.c_float),
        ("i", _Buffer),
    ]


class _GetStamp(ctypes.Structure):
    _fields_ = [("a", ctypes.c_int64), ("b", ctypes.c_int8)]


class _Scalars(ctypes.Structure):
    _fields_ = [
        ("a", ctypes.c_bool),
        ("b", ctypes.c_int64),
        ("c", ctypes.c_float),
        ("d", ctypes.c_uint8),
        ("e", ctypes.c_uint16),
    ]


def _fn(name: str) -> FunctionSpec:
    return next(f for f in (*DECODER.functions, SCALARS) if f.name == name)


def test_no_param_means_no_args_slot() -> None:
    shape = layout(_fn("ping"))
    assert shape.kind == "none"
    assert shape.offsets() == ()
    with pytest.raises(ValueError, match="no args slot"):
        shape.pointee("Unused")


def test_one_param_is_a_pointer_to_its_value() -> None:
    shape = layout(_fn("decode"))
    assert shape.kind == "single"
    assert shape.pointee("PipelineDecoderContractDecodeArgs") == "StringView"
    assert shape.offsets() == (0,)
    assert layout(_fn("is_on")).pointee("X") == "uint8_t"  # an enum travels as its repr


@pytest.mark.parametrize(("name", "struct"), [("mix", _Mix), ("get_stamp", _GetStamp), ("scalars", _Scalars)])
def test_several_params_are_a_struct_with_c_layout(name: str, struct: type[ctypes.Structure]) -> None:
    shape = layout(_fn(name))
    assert shape.kind == "struct"
    expected = tuple(getattr(struct, field).offset for field, _ in struct._fields_)
    assert shape.offsets() == expected
    assert [p.name for p in shape.params] == [field for field, _ in struct._fields_]


def test_the_anonymous_pack_is_the_named_one() -> None:
    from luaplug.abi import ffi

    shape = layout(_fn("mix"))
    ctype = ffi.typeof(f"{shape.anonymous_pointee()} *").item
    assert ffi.sizeof(ctype) == ctypes.sizeof(_Mix)
    assert tuple(ffi.offsetof(ctype, p.name) for p in shape.params) == shape.offsets()
    assert layout(_fn("decode")).anonymous_pointee() == "StringView"


def test_pack_names_and_declarations_follow_spec_14() -> None:
    packs = dict(pack_decls(DECODER.struct_name, DECODER.functions))
    # Only functions with two or more params have a pack: <ContractStruct><FnPascal>Args.
    assert sorted(packs) == ["PipelineDecoderContractGetStampArgs", "PipelineDecoderContractMixArgs"]
    assert packs["PipelineDecoderContractGetStampArgs"] == (
        "typedef struct PipelineDecoderContractGetStampArgs { int64_t a; int8_t b; } "
        "PipelineDecoderContractGetStampArgs;"
    )
    assert layout(_fn("mix")).pointee("PipelineDecoderContractMixArgs") == "PipelineDecoderContractMixArgs"


@pytest.mark.parametrize(
    ("name", "backed"),
    [("ping", False), ("decode", True), ("mix", False), ("get_stamp", True), ("get_buf", True), ("is_on", False)],
)
def test_results_of_variable_size_use_the_arena(name: str, backed: bool) -> None:
    assert layout(_fn(name)).arena_backed is backed


@pytest.mark.parametrize(
    ("name", "size"), [("ping", 0), ("decode", ctypes.sizeof(_SV)), ("mix", ctypes.sizeof(_Mix)), ("scalars", 24)]
)
def test_the_args_size_has_the_tail_padding(name: str, size: int) -> None:
    assert layout(_fn(name)).size() == size
    assert layout(_fn("get_stamp")).size() == ctypes.sizeof(_GetStamp) == 16


def test_scalar_slots_give_each_param_its_memoryview_format_and_offset() -> None:
    offsets = tuple(getattr(_Scalars, f).offset for f, _ in _Scalars._fields_)
    assert layout(_fn("scalars")).scalar_slots() == tuple(zip(("?", "q", "f", "B", "H"), offsets, strict=True))
    assert layout(_fn("is_on")).scalar_slots() == (("B", 0),)  # an enum: its repr's format
    assert layout(_fn("ping")).scalar_slots() == ()
    assert layout(_fn("get_stamp")).scalar_slots() == (("q", 0), ("b", 8))  # only the params count
    assert layout(_fn("decode")).scalar_slots() is None  # a StringView
    assert layout(_fn("mix")).scalar_slots() is None  # strings, a struct, a Buffer
    assert [scalar_format(PRIMITIVES[n]) for n in ("u64", "f64", "bool", "StringView", "Buffer")] == [
        "Q",
        "d",
        "?",
        None,
        None,
    ]
    assert scalar_format(STAMP) is None and scalar_format(SHADE) == "B"
