"""The C ABI of luaplug against polyplug-abi 0.1.3's own declarations (its generated ``polyplug_abi.abi``).

Compared, in both directions (nothing missing, nothing extra): every struct and union (size,
alignment, field names in order, offsets, field types), every function-pointer field (return
type, parameter count and types), every enum (names and values) and ``POLYPLUG_ABI_VERSION``.
Three declarations are checked against the one authority:

- ``luaplug.abi.ffi`` (and the Python enums of ``luaplug.abi``);
- the guest SDK's ``ffi.cdef`` text (``abi.lua``), as one LuaJIT state declares it when a bundle
  requires the SDK, parsed as C, plus what LuaJIT itself computes for it (``ffi.sizeof``,
  ``ffi.offsetof``, the enum constants through ``ffi.C``) and the SDK's Lua enum tables.

Types are compared by ABI class: ctypes spells every pointer ``c_void_p`` and ``size_t`` as
``c_ulong`` (the same as ``uint64_t`` on x86_64), so a pointer is ``ptr`` whatever it points to
(unless it points to a function) and ``size_t`` is ``u64``.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import cffi
import pytest

from luaplug import abi as luaplug_abi

from .adapter import reference_available

_REASON = reference_available()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

_SPEC = importlib.util.find_spec("luaplug")
assert _SPEC is not None and _SPEC.origin is not None
SDK_DIR = Path(_SPEC.origin).resolve().parent / "sdk"

Desc = Any
"""A type's ABI class: ``"u32"``, ``"ptr"``, ``("struct", name)``, ``("fn", result, params)``..."""

_CTYPES_SCALARS: dict[Any, str] = {
    ctypes.c_bool: "bool",
    ctypes.c_uint8: "u8",
    ctypes.c_uint16: "u16",
    ctypes.c_uint32: "u32",
    ctypes.c_uint64: "u64",  # also c_size_t and c_ulong: one type on x86_64
    ctypes.c_int32: "i32",
    ctypes.c_int64: "i64",
    ctypes.c_void_p: "ptr",
}

_CFFI_SCALARS = {
    "_Bool": "bool",
    "uint8_t": "u8",
    "uint16_t": "u16",
    "uint32_t": "u32",
    "uint64_t": "u64",
    "size_t": "u64",
    "uintptr_t": "u64",
    "int32_t": "i32",
    "int64_t": "i64",
}


# -- polyplug-abi's side (ctypes) ---------------------------------------------------------------


def _ctypes_desc(t: Any) -> Desc:
    if t is None:
        return "void"
    if t in _CTYPES_SCALARS:
        return _CTYPES_SCALARS[t]
    if isinstance(t, type) and issubclass(t, ctypes.Structure):
        return ("struct", t.__name__)
    if isinstance(t, type) and issubclass(t, ctypes.Union):
        return ("union", t.__name__)
    if isinstance(t, type) and issubclass(t, ctypes.Array):
        return ("array", _ctypes_desc(t._type_), t._length_)
    if isinstance(t, type) and hasattr(t, "_argtypes_") and hasattr(t, "_restype_"):  # CFUNCTYPE(...)
        return ("fn", _ctypes_desc(t._restype_), tuple(_ctypes_desc(a) for a in t._argtypes_))
    raise AssertionError(f"unmapped ctypes type {t!r}")


def _reference_aggregates(mod: ModuleType) -> dict[str, tuple[str, int, int, list[tuple[str, Desc, int]]]]:
    """name -> (kind, size, align, [(field, desc, offset)]) of every struct and union of ``mod``."""
    out = {}
    for name, obj in vars(mod).items():
        if not isinstance(obj, type) or obj.__module__ != mod.__name__:
            continue
        if issubclass(obj, ctypes.Structure | ctypes.Union):
            kind = "struct" if issubclass(obj, ctypes.Structure) else "union"
            fields = [(f, _ctypes_desc(t), getattr(obj, f).offset) for f, t in obj._fields_]
            out[name] = (kind, ctypes.sizeof(obj), ctypes.alignment(obj), fields)
    return out


def _reference_enums(mod: ModuleType) -> dict[str, dict[str, int]]:
    return {
        name: {m.name: int(m.value) for m in obj}
        for name, obj in vars(mod).items()
        if isinstance(obj, type) and issubclass(obj, enum.IntEnum) and obj.__module__ == mod.__name__
    }


# -- a cffi FFI's side ----------------------------------------------------------------------------


def _cffi_desc(t: Any) -> Desc:
    if t.kind == "void":
        return "void"
    if t.kind == "primitive":
        if t.cname not in _CFFI_SCALARS:
            raise AssertionError(f"unmapped C type {t.cname}")
        return _CFFI_SCALARS[t.cname]
    if t.kind == "enum":
        return "u32"
    if t.kind == "function":  # cffi's ctype of a function pointer
        assert not t.ellipsis, t.cname
        return ("fn", _cffi_desc(t.result), tuple(_cffi_desc(a) for a in t.args))
    if t.kind == "pointer":
        return "ptr"
    if t.kind in ("struct", "union"):
        return (t.kind, t.cname.split(" ", 1)[1] if t.cname.startswith(("struct ", "union ")) else t.cname)
    if t.kind == "array":
        return ("array", _cffi_desc(t.item), t.length)
    raise AssertionError(f"unmapped C type {t.cname} ({t.kind})")


def _cffi_aggregates(ffi: Any) -> dict[str, tuple[str, int, int, list[tuple[str, Desc, int]]]]:
    _typedefs, structs, unions = ffi.list_types()
    out = {}
    for kind, names in (("struct", structs), ("union", unions)):
        for name in names:
            t = ffi.typeof(f"{kind} {name}")
            fields = [(f, _cffi_desc(ft.type), ft.offset) for f, ft in t.fields]
            out[name] = (kind, ffi.sizeof(t), ffi.alignof(t), fields)
    return out


def _cffi_enums(ffi: Any) -> dict[str, dict[str, int]]:
    """Enum name -> {variant: value}, the C constants spelt ``<Enum>_<Variant>``."""
    out: dict[str, dict[str, int]] = {}
    typedefs, _structs, _unions = ffi.list_types()
    for name in typedefs:
        t = ffi.typeof(name)
        if t.kind != "enum":
            continue
        variants = {}
        for constant, value in t.relements.items():
            prefix, _, variant = constant.partition("_")
            assert prefix == name and variant, f"{name}: constant {constant} is not {name}_<Variant>"
            variants[variant] = value
        out[name] = variants
    return out


def _differences(theirs: dict[str, Any], ours: dict[str, Any], what: str) -> list[str]:
    diffs = [f"{what}: {n} missing" for n in sorted(theirs.keys() - ours.keys())]
    diffs += [f"{what}: {n} is extra (not in polyplug-abi)" for n in sorted(ours.keys() - theirs.keys())]
    for n in sorted(theirs.keys() & ours.keys()):
        if theirs[n] != ours[n]:
            diffs.append(f"{what}: {n}: polyplug-abi {theirs[n]!r} != ours {ours[n]!r}")
    return diffs


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    import polyplug_abi.abi

    return polyplug_abi.abi


@pytest.fixture(scope="module")
def sdk() -> tuple[Any, str]:
    """A LuaJIT state that required the SDK (``polyplug_guest``) and every C declaration it got."""
    from lupa.luajit21 import LuaRuntime

    lua = LuaRuntime()
    package = lua.globals().package
    package.path = f"{SDK_DIR.as_posix()}/?.lua;{package.path}"
    capture = lua.eval("""function()
        local ffi = require("ffi")
        local real, seen = ffi.cdef, {}
        ffi.cdef = function(text) seen[#seen + 1] = text; return real(text) end
        local ok, err = pcall(require, "polyplug_guest")
        ffi.cdef = real
        if not ok then error(err, 0) end
        return table.concat(seen, "\\n")
    end""")
    text = str(capture())
    assert "HostApi" in text, "the SDK declared nothing"
    return lua, text


@pytest.fixture(scope="module")
def lua(sdk: tuple[Any, str]) -> Any:
    return sdk[0]


@pytest.fixture(scope="module")
def sdk_ffi(sdk: tuple[Any, str]) -> Any:
    """The SDK's declarations parsed as C."""
    parsed = cffi.FFI()
    parsed.cdef(sdk[1])
    return parsed


# -- luaplug.abi ----------------------------------------------------------------------------------


def test_luaplug_abi_structs_and_signatures(reference: ModuleType) -> None:
    assert _differences(_reference_aggregates(reference), _cffi_aggregates(luaplug_abi.ffi), "luaplug.abi.ffi") == []


def test_luaplug_abi_enums(reference: ModuleType) -> None:
    theirs = _reference_enums(reference)
    assert _differences(theirs, _cffi_enums(luaplug_abi.ffi), "luaplug.abi.ffi enum") == []
    ours = {
        name: {m.name: int(m.value) for m in obj}
        for name, obj in vars(luaplug_abi).items()
        if isinstance(obj, type) and issubclass(obj, enum.IntEnum) and obj.__module__ == luaplug_abi.__name__
    }
    assert _differences(theirs, ours, "luaplug.abi enum class") == []
    assert luaplug_abi.POLYPLUG_ABI_VERSION == reference.POLYPLUG_ABI_VERSION


def test_the_core_ffi_is_the_same(reference: ModuleType) -> None:
    """The precompiled FFI luaplug runs on declares the same (plus its own internal word views)."""
    ours = _cffi_aggregates(luaplug_abi.core_ffi)
    ours.pop("InstanceWords")
    assert _differences(_reference_aggregates(reference), ours, "luaplug.abi.core_ffi") == []
    assert _differences(_reference_enums(reference), _cffi_enums(luaplug_abi.core_ffi), "core_ffi enum") == []


# -- the Lua SDK ----------------------------------------------------------------------------------


def test_sdk_structs_and_signatures(reference: ModuleType, sdk_ffi: Any) -> None:
    assert _differences(_reference_aggregates(reference), _cffi_aggregates(sdk_ffi), "SDK cdef") == []


def test_sdk_enums(reference: ModuleType, sdk_ffi: Any, lua: Any) -> None:
    theirs = _reference_enums(reference)
    assert _differences(theirs, _cffi_enums(sdk_ffi), "SDK cdef enum") == []
    constant = lua.eval('function(name) return tonumber(require("ffi").C[name]) end')
    in_luajit = {e: {v: constant(f"{e}_{v}") for v in variants} for e, variants in theirs.items()}
    assert _differences(theirs, in_luajit, "LuaJIT ffi.C constant") == []
    # The SDK's Lua tables (polyplug_guest.AbiErrorCode & co.) agree where they exist.
    table = lua.eval('function(name) local t = require("polyplug_guest")[name]; return t end')
    for name, variants in theirs.items():
        t = table(name)
        if t is not None:
            assert dict(t.items()) == variants, name


def test_sdk_layouts_as_luajit_computes_them(reference: ModuleType, lua: Any) -> None:
    """LuaJIT's own sizes, alignments and offsets of every declared struct and union."""
    size = lua.eval('function(t) return require("ffi").sizeof(t) end')
    align = lua.eval('function(t) return require("ffi").alignof(t) end')
    offset = lua.eval('function(t, f) return require("ffi").offsetof(t, f) end')
    theirs, ours = {}, {}
    for name, (_kind, sz, al, fields) in _reference_aggregates(reference).items():
        theirs[name] = (sz, al, [(f, off) for f, _desc, off in fields])
        ours[name] = (size(name), align(name), [(f, offset(name, f)) for f, _desc, _off in fields])
    assert _differences(theirs, ours, "LuaJIT layout") == []


def test_the_comparison_sees_a_moved_field(reference: ModuleType) -> None:
    """The comparison itself: two fields swapped (both offsets move, the size stays) is a difference."""
    broken = cffi.FFI()
    declared = "uint64_t contract_id; uint32_t min_version; uint64_t bundle_id;"
    assert declared in luaplug_abi.ABI_CDEF
    broken.cdef(
        luaplug_abi.ABI_CDEF.replace(declared, "uint64_t contract_id; uint64_t bundle_id; uint32_t min_version;")
    )
    diffs = _differences(_reference_aggregates(reference), _cffi_aggregates(broken), "broken")
    assert len(diffs) == 1 and diffs[0].startswith("broken: DependencyInfo: ")
