"""C data helpers the suite's tests share (arguments and results of contract calls)."""

from __future__ import annotations

from typing import Any

from luaplug.abi import ffi


def address(ptr: Any) -> int:
    """The address of a cffi pointer, as an int."""
    return int(ffi.cast("uintptr_t", ptr))


def string_arg(data: bytes) -> tuple[Any, Any]:
    """A ``StringView*`` over ``data`` and the buffer it borrows (keep both alive)."""
    buf = ffi.new("uint8_t[]", data or b"\0")
    sv = ffi.new("StringView*")
    sv.ptr = buf
    sv.len = len(data)
    return sv, buf


def rep_arg(piece: bytes, n: int) -> tuple[Any, Any]:
    """The greeter's ``rep`` arguments (``{StringView s; uint32_t n}``) and the buffer they borrow."""
    buf = ffi.new("uint8_t[]", piece)
    arg = ffi.new("struct { StringView s; uint32_t n; } *")
    arg.s.ptr, arg.s.len, arg.n = buf, len(piece), n
    return arg, buf


def text_of(sv: Any) -> bytes:
    """The bytes a ``StringView`` points at."""
    return bytes(ffi.buffer(sv.ptr, sv.len))
