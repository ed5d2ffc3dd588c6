"""The reference's natural path: Python values in, Python values out, through ctypes.

A polyplug 0.1.3 Python host calls a guest contract through a caller class that polyplugc
generates from the contract's ``api.toml``; the types come from the ``polyplug_abi`` wheel
(ctypes). This module is such a caller for the call cases' contracts (``iso.Adder@1``
``add``/``noop`` and ``iso.Greeter@1`` ``greet``), written here with the same work per call
as the generated code does:

- read the registry's revision counter through the pointer cached at creation and compare it
  with the revision the caller resolved against (when it moved: resolve the handle again and
  make a fresh instance);
- for a function whose result needs memory (``greet``), rewind the caller's ``CallArena``
  (``cur = base``, every overflow block's ``used`` back to its header), else pass a null arena;
- point at the argument struct and a fresh out value, take the interface from its pointer, make
  a fresh ``AbiError``, branch on the dispatch type and call ``dispatch.vm.call``;
- raise on a non-zero code, and return the out value.

The host side builds the argument struct from its Python values and decodes the returned
``StringView`` with ``polyplug_abi``'s helpers (:class:`NaturalAdder`, :class:`NaturalGreeter`).
polyplug is imported only when a caller is made.
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

#: Bytes of a caller's inline arena buffer (the generated callers' default).
ARENA_BYTES: Final = 512


class NaturalError(RuntimeError):
    """A call through a natural caller failed; ``code`` is the ``AbiError`` code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class AddArgs(ctypes.Structure):
    """``iso.Adder@1`` ``add``'s argument struct (two ``int32_t``)."""

    _fields_ = [("a", ctypes.c_int32), ("b", ctypes.c_int32)]


class NaturalCaller:
    """One contract of a reference runtime, called through ctypes like a generated caller.

    :param host_address: the reference's ``HostApi*``
    :param handle: ``(index, generation)`` from ``find_guest_contract``
    :param arena: whether the caller owns a call arena (its contract returns strings)
    """

    def __init__(self, host_address: int, handle: tuple[int, int], arena: bool) -> None:
        import polyplug_abi as abi

        self._abi = abi
        self._host = host_address
        self._handle = handle
        api = ctypes.cast(host_address, ctypes.POINTER(abi.HostApi)).contents
        self._revision_ptr: int = api.revision_counter(host_address) or 0
        self._interface = 0
        self._instance = abi.GuestContractInstance()
        self._revision = -1
        if not self._resolve():
            raise NaturalError("the contract is not registered", int(abi.AbiErrorCode.NotFound))
        self._arena: Any = None
        if arena:
            self._arena_buf = ctypes.create_string_buffer(ARENA_BYTES)
            base = ctypes.addressof(self._arena_buf)
            self._arena = abi.CallArena(cur=base, end=base + ARENA_BYTES, base=base, host=host_address)
        self._header = ctypes.sizeof(abi.ArenaOverflowBlock)

    def _resolve(self) -> bool:
        """Resolve the handle again and make a fresh instance (the old one went with its VM);
        ``False`` when the contract is gone."""
        abi = self._abi
        api = ctypes.cast(self._host, ctypes.POINTER(abi.HostApi)).contents
        interface = api.resolve_guest_contract(self._host, abi.GuestContractHandle(*self._handle)) or 0
        if not interface:
            return False
        instance = abi.GuestContractInstance()
        api.create_guest_instance(self._host, interface, None, ctypes.byref(instance))
        self._interface, self._instance, self._revision = interface, instance, self._live_revision()
        return True

    def _live_revision(self) -> int:
        if not self._revision_ptr:
            return 0
        return int(ctypes.c_uint64.from_address(self._revision_ptr).value)

    def _reset_arena(self) -> None:
        arena = self._arena
        arena.cur = arena.base
        block = arena.first_overflow or 0
        while block:
            header = self._abi.ArenaOverflowBlock.from_address(block)
            header.used = self._header
            block = header.next or 0

    def call(self, fn_id: int, args: Any, out: Any, arena: bool) -> Any:
        """Call ``fn_id`` with ``args`` (a ctypes struct or ``None``); the out value ``out`` (or ``None``).

        :raises NaturalError: the registry changed since the caller resolved, or the call failed
        """
        abi = self._abi
        if self._live_revision() != self._revision and not self._resolve():
            raise NaturalError("the contract is gone", int(abi.AbiErrorCode.NotFound))
        if arena:
            self._reset_arena()
        args_ptr = ctypes.cast(ctypes.byref(args), ctypes.c_void_p) if args is not None else None
        out_ptr = ctypes.cast(ctypes.byref(out), ctypes.c_void_p) if out is not None else None
        interface = ctypes.cast(self._interface, ctypes.POINTER(abi.GuestContractInterface)).contents
        err = abi.AbiError()
        if interface.dispatch_type != abi.DispatchType.VirtualMachine:
            raise NaturalError("a native guest: not part of this benchmark", int(abi.AbiErrorCode.Generic))
        vm = interface.dispatch.vm
        arena_ptr = ctypes.byref(self._arena) if arena else None
        vm.call(vm.loader_data, self._instance, fn_id, args_ptr, out_ptr, arena_ptr, ctypes.byref(err))
        if err.code != abi.AbiErrorCode.Ok:
            raise NaturalError(f"the call failed (code {err.code})", int(err.code))
        return out


class NaturalAdder:
    """``iso.Adder@1`` as a polyplug host calls it: ``add(40, 2) -> 42``, ``noop()``."""

    def __init__(self, host_address: int, handle: tuple[int, int]) -> None:
        self._caller = NaturalCaller(host_address, handle, arena=False)

    def add(self, a: int, b: int) -> int:
        out = self._caller.call(0, AddArgs(a, b), ctypes.c_int32(), arena=False)
        return int(out.value)

    def noop(self) -> None:
        self._caller.call(1, None, None, arena=False)


class NaturalGreeter:
    """``iso.Greeter@1`` as a polyplug host calls it: ``greet("world") -> "hello, world"``."""

    def __init__(self, host_address: int, handle: tuple[int, int]) -> None:
        import polyplug_abi as abi

        self._caller = NaturalCaller(host_address, handle, arena=True)
        self._view = abi.bytes_as_view
        self._str = abi.to_str
        self._sv = abi.StringView

    def greet(self, name: str) -> str:
        data = name.encode("utf-8")  # kept alive by this frame for the whole call
        out = self._caller.call(0, self._view(data), self._sv(), arena=True)
        text: str = self._str(out)
        return text
