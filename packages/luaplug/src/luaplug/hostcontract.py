"""Host contracts: services the host provides to bundles (runtime-semantics "Host contracts").

:class:`HostContract` turns a Python object and a typed declaration (an ``api.toml``
``[[host_contract]]`` or :func:`luaplug.typed.contract` with ``kind="host"``) into a real C
``HostContractInterface`` with native dispatch, so a guest reaches it through
``HostApi.get_host_contract`` / ``resolve_host_contract_interface`` and calls
``functions[fn_id](instance, args, out, AbiError*)``.

``dispatch.native`` (offset 64) is the ``NativeDispatch``
``{uint32_t function_count @64; fn* functions @72}``. Arguments arrive as spec §14 packs them (none: ``args``
unused; one: a pointer to the value; more: the arg-pack struct, C layout); a scalar result
is written to ``out`` when it is not null, a ``StringView`` result is copied into
``HostApi.alloc`` memory the caller frees with ``host.free(host, ptr, len, 1)``.

A Python exception in a host function is logged with its traceback (logger
``luaplug.hostcontract``) and the guest gets ``HostContractCallFailed`` (102) with the text
``"<name@major>.<function>: <ExceptionType>: <exception text>"`` in ``AbiError.message`` and
through ``HostApi.get_last_error``; it never unwinds through Lua. A
:class:`~luaplug.DispatchError` whose Lua error carries that text chains the exception
(``__cause__``).

:class:`HostContractTable` holds the host contracts of one runtime, from Python
(:meth:`luaplug.Runtime.provide`) and from guests (``HostApi.register_host_contract``), with
the version negotiation of ``get_host_contract`` and the staging that keeps loads
all-or-nothing; :class:`HostEntry` is one registered host contract as it keeps it.
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from . import _hostfailures, _libc, reentry
from .abi import AbiErrorCode, DispatchType
from .abi import core_ffi as ffi
from .errors import ApiSpecError, DuplicateProvider
from .events import emit
from .ids import host_contract_id

if TYPE_CHECKING:  # luaplug.typed is imported on first use: importing luaplug stays light
    from .epoch import Collector
    from .typed.spec import ApiSpec, ContractSpec, FunctionSpec
    from .typed.types import TypeSpec

__all__ = [
    "HostContract",
    "HostContractTable",
    "HostEntry",
    "guest_entry",
    "host_spec",
    "resolve_impl",
    "version_matches",
]

_log: Final = logging.getLogger("luaplug.hostcontract")


class _LastError(Protocol):
    """A ``HostApi`` (:class:`luaplug.hostapi.HostApi`), as a host contract reports through it."""

    def set_last_error(self, text: str) -> None: ...


#: A native host function: ``fn(instance, args, out, AbiError* out_err)``. The instance
#: (``HostContractInstance``, one pointer) travels in the same register as a ``void*``.
_HOST_FN: Final = "void(*)(void*, const void*, void*, AbiError*)"
_FAILED: Final = int(AbiErrorCode.HostContractCallFailed)


def _u(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


# -- argument and result values (their offsets: luaplug.typed.layout) ----------------


def _read(t: TypeSpec, address: int) -> object:
    if t.kind in ("struct", "bytes"):
        from .typed.values import load_at

        return load_at(t, address)
    if t.kind == "string":
        sv = ffi.cast("StringView*", address)
        n = int(sv.len)
        if n == 0:
            return ""
        if sv.ptr == ffi.NULL:
            raise ValueError("a StringView argument has a null pointer and a length")
        return ffi.unpack(ffi.cast("char*", sv.ptr), n).decode("utf-8")
    value = ffi.cast(f"{t.ctype}*", address)[0]
    if t.kind == "enum":
        try:
            return t.python(value)
        except ValueError:
            return value
    return value


def _copy_out(data: bytes) -> int:
    """``data`` in ``malloc`` memory the receiver frees (``host.free``); its address."""
    p = _libc.malloc(len(data), 1)
    if not p:
        raise MemoryError(f"allocating {len(data)} bytes for a result failed")
    ffi.memmove(ffi.cast("uint8_t*", p), data, len(data))
    return p


def _write(t: TypeSpec, address: int, value: object) -> None:
    if t.kind in ("struct", "bytes"):
        from .typed.values import store_at

        store_at(t, address, value, f"the {t.name} result", _copy_out)
        return
    if t.kind == "string":
        if isinstance(value, str):
            data = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        else:
            raise TypeError(f"expected str or bytes for a StringView result, got {type(value).__name__}")
        sv = ffi.cast("StringView*", address)
        if not data:
            sv.ptr, sv.len = ffi.NULL, 0
            return
        p = _libc.malloc(len(data), 1)
        if not p:
            raise MemoryError(f"allocating {len(data)} bytes for a StringView result failed")
        ffi.memmove(ffi.cast("uint8_t*", p), data, len(data))
        sv.ptr, sv.len = ffi.cast("const uint8_t*", p), len(data)
        return
    if t.kind == "bool" and not isinstance(value, bool):
        raise TypeError(f"expected bool, got {type(value).__name__}")
    if t.kind in ("int", "enum") and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"expected int for a {t.name} result, got {type(value).__name__}")
    if t.kind == "enum" and int(value) not in {v for _, v in t.variants}:  # type: ignore[call-overload]
        raise ValueError(f"{value!r} is not a {t.name} value")
    ffi.cast(f"{t.ctype}*", address)[0] = value


class _Function:
    """One host function: unpack, call the impl's method, pack the result."""

    def __init__(self, contract: HostContract, fn: FunctionSpec) -> None:
        self.contract = contract
        self.fn = fn
        from .typed.layout import layout
        from .typed.types import python_name

        self.method = python_name(fn.name)
        self.types = tuple(p.type for p in fn.params)
        self.offsets = layout(fn).offsets()

    def __call__(self, inst: Any, args: Any, out: Any, err: Any) -> None:
        text: str | None = None
        try:
            code, text = self.contract._invoke(self, _u(inst), _u(args), _u(out))
        except BaseException:  # never unwind into C
            code = _FAILED
        if err != ffi.NULL:
            err.code = code
            if text is None:
                err.message.ptr = ffi.NULL
                err.message.len = 0
            else:
                err.message.ptr, err.message.len = self.contract._message(text)

    def run(self, impl: object, args: int, out: int) -> None:
        if self.types and not args:
            raise ValueError(f"{self.fn.name}() got a null args pointer")
        values = [_read(t, args + off) for t, off in zip(self.types, self.offsets, strict=True)]
        result = getattr(impl, self.method)(*values)
        if self.fn.returns is None:
            return
        if out:
            _write(self.fn.returns, out, result)


def _on_callback_error(exc_type: Any, exc: Any, tb: Any) -> None:
    _log.error("host contract callback raised", exc_info=(exc_type, exc, tb))


def _create_impl(this: Any, args: Any, out: Any) -> None:
    if out == ffi.NULL:
        return
    out.data = ffi.NULL
    if this == ffi.NULL or this.user_data == ffi.NULL:
        return
    owner: HostContract = ffi.from_handle(this.user_data)
    out.data = ffi.cast("void*", owner._create_instance())


def _destroy_impl(this: Any, inst: Any) -> None:
    if this == ffi.NULL or this.user_data == ffi.NULL:
        return
    owner: HostContract = ffi.from_handle(this.user_data)
    owner._destroy_instance(_u(inst.data))


# Module-level: the C pointers stay valid for the process's life.
_create: Final = ffi.callback(
    "void(*)(const HostContractInterface*, const void*, HostContractInstance*)",
    _create_impl,
    onerror=_on_callback_error,
)
_destroy: Final = ffi.callback(
    "void(*)(const HostContractInterface*, HostContractInstance)", _destroy_impl, onerror=_on_callback_error
)


class HostContract:
    """A Python object served to bundles as a host contract.

    :param spec: the contract's declaration (its functions in function-id order)
    :param impl: with ``singleton=True``, the object whose methods (named as the declared
        functions) serve every caller; with ``singleton=False``, a factory (a class, or any
        callable without arguments) called once per instance a guest creates
    :param singleton: ``HostContractInterface.singleton``
    :param host_address: the ``HostApi`` written to ``HostContractInterface.runtime`` (0: none)
    :param host_api: the runtime's :class:`~luaplug.hostapi.HostApi`, whose ``get_last_error``
        reports a failed call (``None``: the ``AbiError`` message only)
    :raises TypeError: ``impl`` lacks a declared function, or is not a factory when it must be
    """

    def __init__(
        self,
        spec: ContractSpec,
        impl: object,
        *,
        singleton: bool = True,
        host_address: int = 0,
        host_api: _LastError | None = None,
    ) -> None:
        if not singleton and not callable(impl):
            raise TypeError(f"host contract {spec.key}: singleton=False needs a factory (a callable), not {impl!r}")
        from .typed.types import python_name

        if singleton:
            missing = [fn.name for fn in spec.functions if not callable(getattr(impl, python_name(fn.name), None))]
            if missing:
                raise TypeError(f"host contract {spec.key}: {impl!r} lacks the function(s) {', '.join(missing)}")
        self.spec: Final = spec
        self.singleton: Final = singleton
        self._impl = impl
        self._lock = threading.Lock()
        self._instances: dict[int, object] = {}
        self._ids = itertools.count(1)
        self._host_api = host_api
        # The AbiError message of this thread's last failed call (valid until its next failure).
        self._messages = threading.local()
        self._functions = [_Function(self, fn) for fn in spec.functions]
        # SAFETY: the handle, the callbacks, the function table and the interface are owned
        # by this object, which the runtime keeps for its whole life (the spec's "must stay
        # alive for the runtime's life").
        self._handle = ffi.new_handle(self)
        self._callbacks = [ffi.callback(_HOST_FN, f, onerror=_on_callback_error) for f in self._functions]
        self._table = ffi.new("void*[]", max(1, len(self._callbacks)))
        for i, cb in enumerate(self._callbacks):
            self._table[i] = ffi.cast("void*", cb)
        version = [int(x) for x in spec.version.split(".")] + [0, 0]
        iface = ffi.new("HostContractInterface*")
        iface.contract_id = host_contract_id(spec.name, spec.major)
        iface.contract_version.major = version[0]
        iface.contract_version.minor = version[1]
        iface.contract_version.patch = version[2]
        iface.singleton = singleton
        iface.dispatch_type = DispatchType.Native
        iface.runtime = ffi.cast("void*", host_address)
        iface.user_data = self._handle
        iface.create_instance = _create
        iface.destroy_instance = _destroy
        iface.dispatch.native.function_count = len(self._callbacks)
        iface.dispatch.native.functions = self._table
        self.interface: Final[Any] = iface

    @property
    def contract_id(self) -> int:
        """``host_contract_id(name, major)``."""
        return int(self.interface.contract_id)

    @property
    def key(self) -> str:
        """``"name@major"``."""
        return self.spec.key

    @property
    def address(self) -> int:
        """Address of the ``HostContractInterface``."""
        return _u(self.interface)

    @property
    def live_instances(self) -> int:
        """Instances guests created and did not destroy yet."""
        return len(self._instances)

    # -- called from C --------------------------------------------------------------

    def _create_instance(self) -> int:
        try:
            with reentry.user_code():
                impl = self._impl if self.singleton else self._impl()  # type: ignore[operator]
        except Exception:
            emit(_log, logging.ERROR, "host contract %s: creating an instance failed", self.key, exc_info=True)
            return 0
        with self._lock:
            iid = next(self._ids)
            self._instances[iid] = impl
        return iid

    def _destroy_instance(self, iid: int) -> None:
        with self._lock:
            self._instances.pop(iid, None)

    def _invoke(self, fn: _Function, iid: int, args: int, out: int) -> tuple[int, str | None]:
        """Run ``fn`` on instance ``iid``: the code and, on failure, the text the guest gets."""
        impl = self._instances.get(iid)
        if impl is None:
            emit(_log, logging.ERROR, "host contract %s: %s() on unknown instance %#x", self.key, fn.fn.name, iid)
            return int(AbiErrorCode.InvalidPointer), self._failed(f"{self.key}.{fn.fn.name}: unknown instance {iid:#x}")
        try:
            with reentry.user_code():
                fn.run(impl, args, out)
        except Exception as exc:
            emit(_log, logging.ERROR, "host contract %s function %s raised", self.key, fn.fn.name, exc_info=True)
            detail = str(exc)
            text = f"{self.key}.{fn.fn.name}: {type(exc).__name__}" + (f": {detail}" if detail else "")
            _hostfailures.record(text, exc)
            return _FAILED, self._failed(text)
        return 0, None

    def _failed(self, text: str) -> str:
        """Report a failed call through ``get_last_error`` (when the host is known); ``text``."""
        if self._host_api is not None:
            self._host_api.set_last_error(text)
        return text

    def _message(self, text: str) -> tuple[Any, int]:
        """``text`` in C memory kept until this thread's next failed call: ``(pointer, length)``."""
        data = text.encode("utf-8", "replace")
        # SAFETY: the guest reads AbiError.message right after the call returns, on this thread;
        # the buffer lives until the next failure on the same thread replaces it.
        buf = ffi.new("char[]", data)
        self._messages.buf = buf
        return ffi.cast("const uint8_t*", buf), len(data)

    def __repr__(self) -> str:
        return f"<HostContract {self.key} singleton={self.singleton}>"


# -- entries of the runtime's table ------------------------------------------------------


@dataclass(eq=False)
class HostEntry:
    """One registered host contract.

    :ivar iface: the ``HostContractInterface*`` handed out (the registry's own memory)
    :ivar owner: the bundle id that registered it (0: the host, from Python)
    """

    contract_id: int
    iface: Any
    owner: int
    owner_name: str
    keepalive: list[object] = field(default_factory=list)
    singleton_data: int = 0
    #: ``"name@major"`` when known (a contract served from Python), else ""
    name: str = ""

    @property
    def version(self) -> tuple[int, int]:
        return int(self.iface.contract_version.major), int(self.iface.contract_version.minor)


def guest_entry(iface: Any, owner: int, owner_name: str) -> HostEntry:
    """A :class:`HostEntry` over a registry-owned copy of a guest's ``HostContractInterface``."""
    own = ffi.new("HostContractInterface*")
    ffi.memmove(own, iface, ffi.sizeof("HostContractInterface"))
    return HostEntry(int(own.contract_id), own, owner, owner_name, keepalive=[own])


def resolve_impl(impl: object, singleton: bool) -> tuple[object, bool]:
    """What :class:`HostContract` gets for a decorated ``impl``: a class becomes its
    instance for a singleton, and stays a factory otherwise."""
    if singleton and isinstance(impl, type) and not issubclass(impl, enum.Enum):
        return impl(), True
    return impl, singleton


def host_spec(
    contract: str | ContractSpec, api: ApiSpec | ContractSpec | str | os.PathLike[str] | None
) -> ContractSpec:
    """The declaration of host contract ``contract`` (``"name@major"``) in ``api``.

    :raises ApiSpecError: not declared as a host contract (or no declaration given)
    """
    from .typed.apitoml import load_api
    from .typed.spec import ApiSpec, ContractSpec

    if isinstance(contract, ContractSpec):
        return contract
    if isinstance(api, ContractSpec):
        if contract not in (api.name, api.key):
            raise ApiSpecError(f"the declaration is {api.key}, not {contract}")
        return api
    if api is None:
        raise ApiSpecError(f"host contract {contract}: give its declaration (api=an api.toml path or a ContractSpec)")
    spec = api if isinstance(api, ApiSpec) else load_api(api)
    base, _, ver = contract.partition("@")
    major = ver.split(".")[0]
    found = [c for c in spec.host_contracts if c.name == base and (not major or str(c.major) == major)]
    if len(found) != 1:
        declared = ", ".join(c.key for c in spec.host_contracts) or "none"
        what = "is ambiguous: give its major" if found else "is not declared as a [[host_contract]]"
        raise ApiSpecError(f"host contract {contract!r} {what} (declared: {declared})", path=spec.path)
    return found[0]


# -- the table of a runtime's host contracts ------------------------------------------------


def version_matches(version: tuple[int, int], min_version: int) -> bool:
    """Whether ``(major, minor)`` satisfies ``min_version`` = ``(major << 16) | minor`` (0: any)."""
    if min_version == 0:
        return True
    return version[0] == (min_version >> 16) and version[1] >= (min_version & 0xFFFF)


def _duplicate(entry: HostEntry, other: HostEntry) -> str:
    """Why ``entry`` is refused: ``other`` has its id (named by contract when either knows it)."""
    name = entry.name or other.name
    what = f"{name} (id {entry.contract_id:#018x})" if name else f"{entry.contract_id:#018x}"
    by = "the host (Runtime.provide)" if other.owner == 0 and other.owner_name == "<host>" else other.owner_name
    return f"host contract {what} is already registered (by {by})"


class HostContractTable:
    """The host contracts of one runtime.

    Guest registrations made during a load are staged under the loading bundle and
    published by :meth:`commit` with its contracts, or dropped by :meth:`discard`.
    """

    def __init__(self, collector: Collector) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, HostEntry] = {}
        #: how many of ``_entries`` each owner has (an owner without any is not searched for)
        self._owned: dict[int, int] = {}
        self._staged: dict[int, list[HostEntry]] = {}
        self._collector = collector

    def _publish_locked(self, entry: HostEntry) -> None:
        replaced = self._entries.get(entry.contract_id)
        if replaced is not None:
            self._disown_locked(replaced.owner, 1)
        self._entries[entry.contract_id] = entry
        self._owned[entry.owner] = self._owned.get(entry.owner, 0) + 1

    def _disown_locked(self, owner: int, count: int) -> None:
        left = self._owned.get(owner, 0) - count
        if left > 0:
            self._owned[owner] = left
        else:
            self._owned.pop(owner, None)

    def _conflict(self, cid: int, owner: int, replacing: int | None) -> HostEntry | None:
        found = self._entries.get(cid)
        if found is not None and not (replacing is not None and found.owner == replacing):
            return found
        for e in self._staged.get(owner, ()):
            if e.contract_id == cid:
                return e
        return None

    def add(self, entry: HostEntry) -> None:
        """Publish ``entry`` now.

        :raises DuplicateProvider: the contract id is registered already
        """
        with self._lock:
            other = self._conflict(entry.contract_id, -1, None)
            if other is not None:
                raise DuplicateProvider(entry.owner_name, _duplicate(entry, other), contract=entry.name or other.name)
            self._publish_locked(entry)

    def stage(self, entry: HostEntry, *, replacing: bool) -> str | None:
        """Hold ``entry`` until its bundle's load commits; why it is refused, else ``None``."""
        with self._lock:
            other = self._conflict(entry.contract_id, entry.owner, entry.owner if replacing else None)
            if other is not None:
                return _duplicate(entry, other)
            self._staged.setdefault(entry.owner, []).append(entry)
        return None

    def commit(self, owner: int, *, replacing: bool) -> None:
        """Publish what ``owner``'s load staged (a reload first withdraws its previous ones)."""
        with self._lock:
            staged = self._staged.pop(owner, [])
            old = self._withdraw_locked(owner) if replacing else []
            for e in staged:
                self._publish_locked(e)
        self._release(old)

    def discard(self, owner: int) -> None:
        """Drop what ``owner``'s failed load staged."""
        with self._lock:
            dropped = self._staged.pop(owner, [])
        self._release(dropped)

    def withdraw(self, owner: int) -> list[HostEntry]:
        """Remove every host contract ``owner`` registered (its VM is going away)."""
        with self._lock:
            old = self._withdraw_locked(owner)
        self._release(old)
        return old

    def _withdraw_locked(self, owner: int) -> list[HostEntry]:
        if owner not in self._owned:
            return []  # the usual bundle registers no host contract: nothing to search
        old = [e for e in self._entries.values() if e.owner == owner]
        for e in old:
            del self._entries[e.contract_id]
        self._disown_locked(owner, len(old))
        return old

    def _release(self, entries: list[HostEntry]) -> None:
        # SAFETY: a guest may still hold an interface pointer it resolved; the memory goes
        # only after every pinned call returned.
        self._collector.release([e.keepalive for e in entries])

    def find(self, contract_id: int, min_version: int) -> tuple[int, HostEntry | None]:
        """``(code, entry)``: ``Ok`` with the entry, ``HostContractNotFound`` or ``HostContractVersionMismatch``."""
        entry = self._entries.get(contract_id)
        if entry is None:
            return int(AbiErrorCode.HostContractNotFound), None
        if not version_matches(entry.version, min_version):
            return int(AbiErrorCode.HostContractVersionMismatch), None
        return 0, entry

    def instance(self, entry: HostEntry) -> int:
        """A ``HostContractInstance.data`` for ``entry``: the cached one of a singleton, else a new one."""
        if entry.iface.singleton and entry.singleton_data:
            return entry.singleton_data
        out = ffi.new("HostContractInstance*")
        if entry.iface.create_instance == ffi.NULL:
            return 0
        entry.iface.create_instance(entry.iface, ffi.NULL, out)
        data = int(ffi.cast("uintptr_t", out.data))
        if entry.iface.singleton and data:
            with self._lock:
                if entry.singleton_data:  # another thread won the race: keep its instance
                    extra, data = data, entry.singleton_data
                else:
                    entry.singleton_data, extra = data, 0
            if extra and entry.iface.destroy_instance != ffi.NULL:
                entry.iface.destroy_instance(entry.iface, {"data": ffi.cast("void*", extra)})
        return data

    def entries(self) -> list[HostEntry]:
        """Every published entry, in registration order."""
        with self._lock:
            return list(self._entries.values())
