"""Typed proxies: call a contract's functions with Python values.

:func:`bind` turns a :class:`~luaplug.typed.spec.ContractSpec` and a loaded contract into a
:class:`TypedProxy` with one method per function. Each method packs its arguments exactly
like generated glue reads them (spec §14): no param -> a null ``args``; one param -> a
pointer to that value; two or more -> the arg-pack struct, fields in declaration order, C
layout. It reads the out slot and copies a returned ``StringView`` out of the proxy's own
:class:`~luaplug.CallArena`, which is reset before every call.

The per-call path is compiled once per function at bind time (Python source built from the
signature, like :mod:`dataclasses` does): the argument struct, the out slot and their
addresses are preallocated, and a call does the field stores, one backend dispatch and
the result read, nothing else. When the instance's entry is a backend's native one, a function
whose params and result are all scalars or strings gets the C method of ``luaplug_entry.h``
(``typed_call``) instead, which stores exact ``int``/``float``/``bool``/``str`` values in C,
decodes a string result in C, and hands every other call to the compiled method.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..abi import AbiErrorCode, ffi
from ..arena import CallArena
from ..errors import ContractNotFoundError, DispatchError, LuaplugError, RuntimeClosedError
from .apitoml import load_api
from .layout import SCALAR_FORMATS, STRING_FORMAT, layout, scalar_format
from .spec import ApiSpec, ContractSpec, FunctionSpec
from .types import EnumType, ScalarType, TypeSpec, python_name
from .values import load, store

if TYPE_CHECKING:
    from ..contract import Contract, Instance
    from ..hostapi import HostApi

__all__ = ["TypedProxy", "bind"]


class _Runtime(Protocol):
    """A :class:`luaplug.Runtime`, as a proxy uses it."""

    @property
    def host_api(self) -> HostApi: ...

    def contract(self, name: str, major: int = 1, *, bundle: Any = None) -> Contract: ...

    def _adopt(self, proxy: TypedProxy) -> None: ...


_log: Final = logging.getLogger("luaplug.typed")
_STALE: Final = int(AbiErrorCode.StaleHandle)
_FLT_MAX: Final = 3.4028234663852886e38
_INFS: Final = (math.inf, -math.inf)
#: a StringView whose ``ptr`` reads as ``char*``: ``ffi.unpack`` then yields bytes
_SV_OUT: Final = "struct { const char* ptr; size_t len; }"
#: Bytes of a string argument copied into the proxy's own buffer (longer ones are wrapped).
_INPUT_BUFFER: Final = 256


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _arg_error(exc: Exception, fn: str, param: str, tname: str) -> Exception:
    """The same exception type, naming the function and the parameter."""
    return type(exc)(f"{fn}() argument {param!r} ({tname}): {exc}")


def _string_arg(value: object, fn: str, param: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            data.decode("utf-8")  # a StringView is UTF-8 text: refused before the call, as a str never is
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{fn}() argument {param!r} (StringView): the bytes are not UTF-8 ({exc.reason} at index "
                f"{exc.start}); declare the parameter as Buffer for binary data"
            ) from None
        return data
    raise TypeError(f"{fn}() argument {param!r} (StringView): expected str or bytes, not {type(value).__name__}")


#: The Python class whose values take the ``memoryview`` store of a param of each kind; any
#: other object (a subclass, an ``__index__`` object) takes cffi's store and its errors.
_EXACT: Final = {"int": "int", "float": "float", "bool": "bool"}


def _view(cdata: Any, fmt: str) -> Any:
    """A ``memoryview`` of the slot ``cdata`` points at, items of format ``fmt``."""
    view: Any = memoryview(ffi.buffer(cdata))
    return view.cast(fmt)


class _Compiled:
    """One function's preallocated memory and the source of its call path."""

    def __init__(self, spec: ContractSpec, fn_id: int, fn: FunctionSpec) -> None:
        self.fn_id = fn_id
        self.fn = fn
        shape = layout(fn)
        self.arena_backed = shape.arena_backed
        self.single = shape.kind == "single"
        self.names: dict[str, Any] = {}
        if shape.kind == "none":
            self.args_address = 0
        else:
            # One param: its value; several: a struct with the layout of <ContractStruct><FnPascal>Args.
            self.args = ffi.new(f"{shape.anonymous_pointee()} *")
            self.args_address = _address(self.args)
        if fn.returns is None:
            self.out_address = 0
        elif fn.returns.kind == "string":
            self.out = ffi.new(f"{_SV_OUT} *")
            self.out_address = _address(self.out)
            # SAFETY: aliases self.out (ptr, len) for as long as this object lives.
            self.names["_lp_outw"] = _view(self.out, "Q")
        else:
            self.out = ffi.new(f"{fn.returns.cdecl}*")
            self.out_address = _address(self.out)

        # Built now: building it fills self.names with the helpers it refers to.
        self.code: Any = compile(self.source(), f"<luaplug typed {fn.name}>", "exec")

    def source(self) -> str:
        """Python source of ``def _make(<closure values>): def <fn>(...): ...; return <fn>``.

        With a string param, ``<fn>`` handles strings that fit the proxy's input buffers, and
        ``_lp_general`` (which ``<fn>`` hands a longer one to) any string.
        """
        fn = self.fn
        pnames = [python_name(p.name) for p in fn.params]
        pnames = [f"{n}_" if n.startswith("_lp") else n for n in pnames]
        helpers: list[str] = []
        lines = self._function(fn.name, pnames, helpers, general=False)
        if any(p.type.kind == "string" for p in fn.params):
            lines = self._function("_lp_general", pnames, [], general=True) + lines
        closure = "_lp_call, _lp_retry, _lp_arena, _lp_arena_words, _lp_base, _lp_cap, _lp_arena_mv"
        inner = "\n".join(f"    {line}" for line in [*helpers, *lines])
        return f"def _make({closure}):\n{inner}\n    return {fn.name}\n"

    def _function(self, name: str, pnames: list[str], helpers: list[str], general: bool) -> list[str]:
        fn = self.fn
        body: list[str] = []
        if any(p.type.kind in ("struct", "bytes") for p in fn.params):
            self.names["_lp_keep"] = []
            body.append("_lp_keep.clear()")
        for i, (p, local) in enumerate(zip(fn.params, pnames, strict=True)):
            if p.type.kind == "string":
                body += self._pack_string(i, p.name, local, self.single, pnames, general)
            else:
                body += self._pack(i, p.name, p.type, local, self.single, helpers)
        if fn.returns is not None and fn.returns.kind == "string":
            body.append("_lp_outw[1] = 0")
        if self.arena_backed:
            # Reset the arena: a full reset once overflow blocks exist, else rewind cur.
            body += [
                "if _lp_arena_words[4]: _lp_arena.reset()",
                "else: _lp_arena_words[0] = _lp_base",
            ]
            call = f"_lp_call({self.fn_id}, {self.args_address}, {self.out_address}, _lp_arena)"
        elif self.args_address or self.out_address:
            call = f"_lp_call({self.fn_id}, {self.args_address}, {self.out_address})"
        else:
            call = f"_lp_call({self.fn_id})"
        tail = [
            "try:",
            f"    {call}",
            "except _lp_DispatchError as _lp_e:",
            f"    if not _lp_retry(_lp_e, {self.fn_id}): raise",
            *self._unpack(fn.returns),
        ]
        body += tail
        if general:
            # A long string's StringView points at its own buffer during the call only, also
            # when a later argument is refused before the call.
            restore = [
                f"    _lp_svw_{i}[0] = _lp_inaddr_{i}" for i, p in enumerate(fn.params) if p.type.kind == "string"
            ]
            body = ["try:", *(f"    {line}" for line in body), "finally:", *restore]
        return [f"def {name}({', '.join(pnames)}):"] + [f"    {line}" for line in body]

    def _pack_string(self, i: int, name: str, local: str, single: bool, pnames: list[str], general: bool) -> list[str]:
        fname = self.fn.name
        sv = "_lp_args" if single else f"_lp_sv_{i}"
        if f"_lp_inbuf_{i}" not in self.names:
            self.names[f"_lp_str_{i}"] = lambda v, _p=name: _string_arg(v, fname, _p)
            slot = self.args if single else ffi.addressof(self.args, name)
            if not single:
                self.names[sv] = getattr(self.args, name)
            # SAFETY: the word view aliases the StringView inside self.args, and the input
            # buffer is this object's; both live as long as the compiled method. Between calls
            # the StringView points at the input buffer (only _lp_general points it elsewhere,
            # and puts it back before it returns).
            words = _view(slot, "Q")
            inbuf = ffi.new("uint8_t[]", _INPUT_BUFFER)
            words[0] = _address(inbuf)
            self.names[f"_lp_svw_{i}"] = words
            self.names[f"_lp_inbuf_{i}"] = inbuf
            self.names[f"_lp_inmv_{i}"] = memoryview(ffi.buffer(inbuf))
            self.names[f"_lp_inaddr_{i}"] = _address(inbuf)
        lines = [
            f"_lp_b{i} = {local}.encode() if {local}.__class__ is str else _lp_str_{i}({local})",
            f"_lp_n{i} = len(_lp_b{i})",
        ]
        if general:
            lines += [
                f"if _lp_n{i} <= {_INPUT_BUFFER}:",
                f"    _lp_inmv_{i}[:_lp_n{i}] = _lp_b{i}",
                "else:",
                f"    _lp_k{i} = _lp_from_buffer('uint8_t[]', _lp_b{i})",
                f"    {sv}.ptr = _lp_k{i}",
            ]
        else:
            # Short strings are copied into the buffer of our own (cheaper than wrapping).
            lines += [
                f"if _lp_n{i} > {_INPUT_BUFFER}: return _lp_general({', '.join(pnames)})",
                f"_lp_inmv_{i}[:_lp_n{i}] = _lp_b{i}",
            ]
        return [*lines, f"_lp_svw_{i}[1] = _lp_n{i}"]

    def _pack(self, i: int, name: str, t: TypeSpec, local: str, single: bool, helpers: list[str]) -> list[str]:
        fname = self.fn.name
        self.names[f"_lp_err_{i}"] = lambda exc, _p=name, _t=t.name: _arg_error(exc, fname, _p, _t)
        target = "_lp_args[0]" if single else f"_lp_args.{name}"
        slot = self.args if single else ffi.addressof(self.args, name)
        if t.kind in ("struct", "bytes"):
            self.names[f"_lp_slot_{i}"] = slot
            self.names[f"_lp_store_{i}"] = lambda v, slot, keep, _t=t, _p=name: store(
                _t, slot, v, keep, f"{fname}() argument {_p!r} ({_t.name})"
            )
            return [f"_lp_store_{i}({local}, _lp_slot_{i}, _lp_keep)"]
        # A scalar: the checked store (cffi's conversion, the named errors) is a helper; a value
        # of the exact Python class goes through a memoryview instead, and only a value that
        # memoryview refuses (out of range) takes the helper, which then raises its error.
        checked = [
            f"def _lp_set_{i}({local}):",
            "    try:",
            f"        {target} = {local}",
            "    except (TypeError, OverflowError) as _lp_e:",
            f"        raise _lp_err_{i}(_lp_e) from None",
        ]
        helpers += checked
        if t.kind == "float" and isinstance(t, ScalarType) and t.name == "f32":
            # memoryview narrows a double to float without an overflow check: no fast store.
            helpers.append(
                f"    if {target} in _lp_infs and {local} not in _lp_infs: "
                f"raise _lp_err_{i}(OverflowError('{local} does not fit float'))"
            )
            return [f"_lp_set_{i}({local})"]
        self.names[f"_lp_view_{i}"] = _view(slot, SCALAR_FORMATS[t.cdecl])
        if isinstance(t, EnumType):
            self.names[f"_lp_cls_{i}"] = (int, t.python)
            exact = f"{local}.__class__ in _lp_cls_{i}"
        else:
            exact = f"{local}.__class__ is {_EXACT[t.kind]}"
        lines = [
            f"if {exact}:",
            "    try:",
            f"        _lp_view_{i}[0] = {local}",
            "    except (ValueError, OverflowError):",
            f"        _lp_set_{i}({local})",
            "else:",
            f"    _lp_set_{i}({local})",
        ]
        if isinstance(t, EnumType) and not t.bitflag:
            self.names[f"_lp_valid_{i}"] = frozenset(v for _, v in t.variants)
            lines.append(
                f"if {local} not in _lp_valid_{i}: "
                f"raise _lp_err_{i}(ValueError(f'{{{local}!r}} is not a {t.name} value'))"
            )
        return lines

    def _unpack(self, t: TypeSpec | None) -> list[str]:
        if t is None:
            return ["return None"]
        if t.kind == "string":
            return [
                "_lp_n = _lp_outw[1]",
                "if not _lp_n: return ''",
                # The arena's first allocation (the usual case): slice from its start.
                "_lp_o = _lp_outw[0] - _lp_base",
                "if not _lp_o and _lp_n <= _lp_cap:",
                "    return _lp_arena_mv[:_lp_n].decode()",
                # Elsewhere in the arena's primary buffer: slice it; else read by pointer.
                "if 0 <= _lp_o and _lp_o + _lp_n <= _lp_cap:",
                "    return _lp_arena_mv[_lp_o:_lp_o + _lp_n].decode()",
                "_lp_p = _lp_out.ptr",
                "if not _lp_p: _lp_null_string()",
                "return _lp_unpack(_lp_p, _lp_n).decode()",
            ]
        if t.kind in ("struct", "bytes"):
            self.names["_lp_load"] = lambda out, _t=t: _load_result(_t, out)
            return ["return _lp_load(_lp_out)"]
        if t.kind == "bool":
            return ["return _lp_out[0]"]  # cffi refuses a _Bool byte other than 0 or 1
        self.names["_lp_result"] = _view(self.out, SCALAR_FORMATS[t.cdecl])
        if isinstance(t, EnumType):
            self.names["_lp_members"] = {int(m.value): m for m in t.python}
            return ["_lp_v = _lp_result[0]", "return _lp_members.get(_lp_v, _lp_v)"]
        return ["return _lp_result[0]"]

    def build(self, proxy: TypedProxy) -> Callable[..., Any]:
        """The method, closed over the proxy's current dispatch."""
        ns: dict[str, Any] = {
            "_lp_args": getattr(self, "args", None),
            "_lp_out": getattr(self, "out", None),
            "_lp_from_buffer": ffi.from_buffer,
            "_lp_unpack": ffi.unpack,
            "_lp_infs": _INFS,
            "_lp_null_string": _null_string,
            "_lp_DispatchError": DispatchError,
            **self.names,
        }
        exec(self.code, ns)  # our own source, built from validated identifiers
        method: Callable[..., Any] = ns["_make"](
            proxy.instance.call,
            proxy._retry,
            proxy._arena,
            proxy._arena_words,
            proxy._arena_base,
            proxy._arena.capacity,
            proxy._arena_view,
        )
        method.__qualname__ = f"TypedProxy.{self.fn.name}"
        method.__doc__ = f"{self.fn.signature()}\n\n{self.fn.docs}".rstrip()
        return self._native(proxy, method) or method

    def _native(self, proxy: TypedProxy, method: Callable[..., Any]) -> Callable[..., Any] | None:
        """The method packed in C by the backend's call entry (``typed_call`` of ``luaplug_entry.h``),
        falling back to ``method`` for every call it does not serve; ``None`` when the function has a
        param or result that is neither a scalar nor a string, or the instance's entry is not a
        native one."""
        call = proxy.instance.call
        factory = getattr(type(getattr(call, "__self__", None)), "typed_call", None)
        if factory is None:
            return None
        shape = layout(self.fn)
        slots = shape.scalar_slots(strings=True)
        returns = shape.returns
        result_format = (
            None if returns is None else STRING_FORMAT if returns.kind == "string" else scalar_format(returns)
        )
        if slots is None or (returns is not None and result_format is None):
            return None
        params: list[tuple[str, int, type | None, frozenset[int] | None]] = []
        for i, (p, (fmt, offset)) in enumerate(zip(shape.params, slots, strict=True)):
            if isinstance(p.type, EnumType):
                params.append((fmt, offset, p.type.python, self.names.get(f"_lp_valid_{i}")))
            else:
                params.append((fmt, offset, None, None))
        result = None
        if result_format is not None:
            result = (result_format, self.names["_lp_members"] if isinstance(shape.returns, EnumType) else None)
        strings = None
        if result_format == STRING_FORMAT or any(fmt == STRING_FORMAT for fmt, _ in slots):
            # The C method's own arena (a call never shares the proxy's with the Python method),
            # and one made for a call while that one is in use; both closed with the proxy.
            arena = proxy._new_arena() if result_format == STRING_FORMAT else None
            strings = (_INPUT_BUFFER, arena, proxy._spare_arena, _null_string)
        native: Callable[..., Any] | None = factory(
            call,
            method,
            proxy._retry,
            DispatchError,
            self.fn_id,
            shape.size(),
            tuple(params),
            result,
            _bad_bool,
            self.fn.name,
            method.__doc__ or "",
            strings,
        )
        return native


def _load_result(t: TypeSpec, out: Any) -> object:
    try:
        return load(t, out)
    except ValueError as exc:
        raise DispatchError(AbiErrorCode.InvalidPointer, lua_error=f"the guest's {t.name} result: {exc}") from None


def _bad_bool(address: int) -> bool:
    """Read a ``bool`` result the way cffi does: a byte other than 0 or 1 raises."""
    return bool(ffi.cast("bool *", address)[0])


def _null_string() -> None:
    raise DispatchError(AbiErrorCode.InvalidPointer, lua_error="the guest returned a null StringView with a length")


class _Host:
    """The ``HostApi`` owner a proxy's arenas keep (a runtime, as :class:`CallArena` takes it)."""

    __slots__ = ("host_api",)

    def __init__(self, host_api: HostApi) -> None:
        self.host_api = host_api


class TypedProxy:
    """A contract with one Python method per function (``proxy.add(2, 3) -> 5``).

    Made by :meth:`luaplug.Runtime.bind`. The proxy owns a fresh instance (or uses the
    default impl, which follows hot reloads) and a call arena. Methods raise
    :class:`TypeError`/:class:`OverflowError`/:class:`ValueError` for bad arguments before
    anything is called, and :class:`~luaplug.DispatchError` when the call fails.

    Not thread-safe: use one proxy per thread (they are cheap). Only calls packed in C (see
    the module docstring) use memory of their own per call.
    """

    def __init__(
        self,
        runtime: _Runtime,
        spec: ContractSpec,
        *,
        instance: bool = True,
        arena_capacity: int = 4096,
        bundle: Any = None,
    ) -> None:
        self._spec = spec
        self._contract: Contract = runtime.contract(spec.name, spec.major, bundle=bundle)
        self._owns_instance = instance
        self._instance: Instance | None = self._contract.create_instance() if instance else self._contract.default
        self._closed = False
        self._arena = CallArena(arena_capacity, host=runtime)
        self._host = _Host(runtime.host_api)
        #: The arenas of the methods packed in C (see _new_arena): each lives as long as its method
        #: (a reload installs new ones) and is closed with the proxy.
        self._native_arenas: weakref.WeakSet[CallArena] = weakref.WeakSet()
        # SAFETY: the words alias the arena's C struct, which the arena owns until close().
        self._arena_words: Any = _view(ffi.cast("CallArena*", self._arena.address), "Q")
        self._arena_base: int = self._arena_words[2]
        # SAFETY: a view of the arena's primary buffer, which lives until close(); results the
        # guest bumped there are sliced out of it without a pointer round trip.
        self._arena_view: Any = ffi.buffer(ffi.cast("uint8_t*", self._arena_base), self._arena.capacity)
        self._compiled = [_Compiled(spec, i, fn) for i, fn in enumerate(spec.functions)]
        self._install()
        runtime._adopt(self)

    def _new_arena(self) -> CallArena:
        """An arena like the proxy's, for a method packed in C; closed with the proxy."""
        arena = self._spare_arena()
        self._native_arenas.add(arena)
        return arena

    def _spare_arena(self) -> CallArena:
        """A fresh arena like the proxy's, over the same ``HostApi``."""
        return CallArena(self._arena.capacity, host=self._host)

    def _install(self) -> None:
        for c in self._compiled:
            setattr(self, python_name(c.fn.name), c.build(self))

    # -- failures -----------------------------------------------------------------

    def _retry(
        self,
        exc: DispatchError,
        fn_id: int,
        args: int | None = None,
        out: int | None = None,
        arena: CallArena | None = None,
    ) -> bool:
        """A call failed with ``exc``. A proxy of the default impl follows a reload: it
        rebinds and calls again (``True``); every other failure is named after the function
        (:meth:`DispatchError.name_function`) and re-raised (``False``). ``args``/``out``/``arena``:
        what the failed call passed (``None``: the function's preallocated ones, the proxy's arena)."""
        c = self._compiled[fn_id]
        if exc.code == _STALE and not (self._owns_instance or self._closed):
            try:
                fresh: Instance | None = self._contract.default
            except ContractNotFoundError:
                fresh = None
            if fresh is not None and fresh is not self._instance:
                self._instance = fresh
                self._install()
                try:
                    fresh.call(
                        fn_id,
                        c.args_address if args is None else args,
                        c.out_address if out is None else out,
                        arena if arena is not None else self._arena if c.arena_backed else None,
                    )
                except DispatchError as again:
                    again.name_function(c.fn.name)
                    raise
                return True
        exc.name_function(c.fn.name)
        return False

    # -- introspection and lifetime -----------------------------------------------

    @property
    def spec(self) -> ContractSpec:
        """The contract declaration the proxy was built from."""
        return self._spec

    @property
    def instance(self) -> Instance:
        """The instance the proxy calls (id 0 for the default impl).

        :raises ValueError: the proxy is closed
        """
        if self._instance is None:
            raise ValueError("the proxy is closed")
        return self._instance

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Destroy the proxy's instance (not the default impl) and free its arena."""
        self._shut(_closed_method)

    def _release(self) -> None:
        """Close the proxy because its runtime closes: its methods raise :class:`RuntimeClosedError`."""
        self._shut(_runtime_closed_method)

    def _shut(self, closed_method: Callable[[str, str], Callable[..., Any]]) -> None:
        if self._closed:
            return
        self._closed = True
        inst, self._instance = self._instance, None
        for c in self._compiled:
            setattr(self, python_name(c.fn.name), closed_method(self._spec.key, c.fn.name))
        if inst is not None and self._owns_instance:
            try:
                inst.destroy()
            except LuaplugError:
                _log.warning("destroying the instance of %s failed", self._spec.key, exc_info=True)
        self._arena.close()
        for arena in list(self._native_arenas):
            arena.close()

    def __enter__(self) -> TypedProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        TypedProxy.close(self)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not functions of the contract.
        if name.startswith("_"):
            raise AttributeError(name)
        names = ", ".join(self._spec.function_names)
        raise AttributeError(f"contract {self._spec.key} has no function {name!r} (has: {names})")

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(python_name(n) for n in self._spec.function_names)})

    def __repr__(self) -> str:
        state = "closed" if self._instance is None else f"instance #{self._instance.id}"
        return f"<TypedProxy {self._spec.key} {state}>"


def _closed_method(_contract: str, name: str) -> Callable[..., Any]:
    def closed(*_args: object, **_kwargs: object) -> Any:
        raise ValueError(f"{name}(): the proxy is closed")

    return closed


def _runtime_closed_method(contract: str, name: str) -> Callable[..., Any]:
    def closed(*_args: object, **_kwargs: object) -> Any:
        raise RuntimeClosedError(f"{contract}.{name}(): the runtime is closed (called after Runtime.close())")

    return closed


def _resolve_spec(api: ApiSpec | ContractSpec | str | os.PathLike[str], contract: str | None) -> ContractSpec:
    if isinstance(api, ContractSpec):
        if contract is not None and contract not in (api.name, api.key):
            raise LuaplugError(f"the declaration is {api.key}, not {contract}")
        return api
    spec = api if isinstance(api, ApiSpec) else load_api(api)
    if contract is None:
        if len(spec.guest_contracts) != 1:
            declared = ", ".join(c.key for c in spec.guest_contracts) or "none"
            raise LuaplugError(f"name the contract to bind (declared: {declared})")
        return spec.guest_contracts[0]
    return spec.contract(contract)


def bind(
    runtime: _Runtime,
    api: ApiSpec | ContractSpec | str | os.PathLike[str],
    contract: str | None = None,
    *,
    instance: bool = True,
    arena_capacity: int = 4096,
    bundle: Any = None,
) -> TypedProxy:
    """A :class:`TypedProxy` for ``contract`` as ``api`` declares it.

    :param api: an ``api.toml`` path, a parsed :class:`ApiSpec`, or one :class:`ContractSpec`
    :param contract: ``"name@major"`` (may be omitted when ``api`` declares one guest contract)
    :param instance: ``True``: a fresh instance owned by the proxy; ``False``: the default impl
    :param arena_capacity: bytes of the proxy's call arena (more is served by overflow blocks)
    :param bundle: the providing bundle to call (a name or a :class:`~luaplug.Bundle`);
        ``None``: the first-loaded provider (:meth:`luaplug.Runtime.providers`)
    :raises ApiSpecError: the declaration is invalid or does not declare ``contract``
    :raises ContractNotFoundError: no loaded bundle provides it (or ``bundle`` does not)
    """
    spec = _resolve_spec(api, contract)
    return TypedProxy(runtime, spec, instance=instance, arena_capacity=arena_capacity, bundle=bundle)
