"""C data helpers the suite's tests share (arguments and results of contract calls)."""

from __future__ import annotations

import threading
from typing import Any

from luaplug.abi import ffi

#: How often :func:`wait_gate` looks at a gate before it gives up: a bound on a hang (about a
#: minute of half-millisecond waits on the thread), not a measurement; nothing reads a clock.
GATE_POLLS = 120_000


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


def wait_gate(gate: Any, thread: threading.Thread) -> None:
    """Wait until the handler a call on ``thread`` runs sets ``gate[0]`` (a ``gate`` bundle's
    cell): fails instead of hanging when the call returns without it, or when it never does."""
    for _ in range(GATE_POLLS):
        if gate[0] != 0:
            return
        assert thread.is_alive(), "the holding call returned without entering the gate handler"
        thread.join(0.0005)  # returns at once when the thread ends
    raise AssertionError("the holding call never entered the gate handler")
