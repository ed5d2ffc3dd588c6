"""The C ``HostApi`` a runtime hands to its bundles (spec §12).

Each runtime owns one ``HostApi`` struct whose function pointers are cffi
callbacks shared by every runtime; ``HostApi.runtime`` holds a cffi handle
to the :class:`HostApi` object, through which a callback reaches its
runtime. A callback never lets a Python exception escape into C: failures
become error codes (or NULL) and a log line.

Lifetimes: the struct, the revision counter and the handle live as long as
the :class:`HostApi` object. Runtimes keep theirs until close, and arenas
keep a reference to the host they allocate from.

A runtime answers the callbacks through the :class:`HostServices` object it owns
(:class:`luaplug.runtime.RuntimeServices`).
"""

from __future__ import annotations

import logging
import struct
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from . import _libc, reentry
from .abi import NULL_HANDLE_INDEX, AbiErrorCode, LogLevel
from .abi import core_ffi as ffi
from .errors import host_contract_interface_not_found, host_contract_unavailable
from .events import emit

__all__ = [
    "HostApi",
    "HostServices",
    "NativeLookups",
    "NativePeers",
    "default_host",
    "guest_logger",
    "set_native_peers",
]

#: Logger guest messages arrive at (``HostApi.log``); the guest's scope is kept
#: in the record attribute ``scope`` and prefixed to the message.
guest_logger: Final = logging.getLogger("luaplug.guest")
_log: Final = logging.getLogger("luaplug.hostapi")

TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")
_LEVELS: Final = {
    LogLevel.Error: logging.ERROR,
    LogLevel.Warn: logging.WARNING,
    LogLevel.Info: logging.INFO,
    LogLevel.Debug: logging.DEBUG,
    LogLevel.Trace: TRACE,
}

# Static error texts for AbiError.message: module-level bytes never move or die.
_NO_RUNTIME: Final = ffi.new("char[]", b"no runtime behind this HostApi")
_NO_LOADERS: Final = b"register_loader: luaplug runs its own Lua loader only; loaders cannot be registered"
_NO_LOADERS_C: Final = ffi.new("char[]", _NO_LOADERS)
_NULL_LOADER: Final = ffi.new("char[]", b"null pointer in register_loader")
_NULL_PATH: Final = {
    "load_bundle": ffi.new("char[]", b"null path pointer in load_bundle"),
    "reload_bundle": ffi.new("char[]", b"null path pointer in reload_bundle"),
}
_NOT_UTF8: Final = ffi.new("char[]", b"the bundle path is not valid UTF-8")
_ON_STACK: Final = ffi.new("char[]", b"the bundle is on this thread's call stack")

# Element layouts of the arrays the HostApi hands out: (struct format, alignment).
_BUNDLE_IDS: Final = (struct.Struct("<Q"), 8)  # uint64_t bundle ids
_HANDLES: Final = (struct.Struct("<II"), 4)  # GuestContractHandle
_DEPENDENCIES: Final = (struct.Struct("<QI4xQ"), 8)  # DependencyInfo (24 bytes)


class HostServices(Protocol):
    """What a runtime offers its ``HostApi`` callbacks."""

    def _host_find(self, contract_id: int, min_major: int) -> tuple[int, int] | None: ...

    def _host_resolve(self, index: int, generation: int) -> Any: ...

    def _host_register(self, desc: Any, iface: Any) -> tuple[int, str]: ...

    def _host_get_host_contract(self, contract_id: int, min_version: int) -> tuple[int, int]: ...

    def _host_resolve_host_contract(self, contract_id: int, min_version: int) -> Any: ...

    def _host_register_host_contract(self, iface: Any) -> tuple[int, str]: ...

    def _host_list_bundles(self) -> list[int]: ...

    def _host_find_all(self, contract_id: int, min_major: int) -> list[tuple[int, int]]: ...

    def _host_dependencies(self) -> list[tuple[int, int, int]]: ...

    def _host_load_bundle(self, path: str) -> tuple[int, str]: ...

    def _host_reload_bundle(self, path: str) -> tuple[int, str]: ...

    def _host_unload_bundle(self, bundle: int) -> tuple[int, str]: ...

    def _host_publish_peers(self, publish: Callable[[bytes, bytes], object]) -> None: ...


class NativePeers(Protocol):
    """Peer lookups answered in C (``find``, ``resolve``, ``create``/``destroy`` an instance:
    the addresses of its HostApi functions), from a table per ``HostApi`` that the core keeps:
    the registry's providers at one revision (the lookups section of ``luaplug_entry.h``;
    :class:`NativeLookups` serves it from a backend's compiled module).

    ``new(host_size, find, resolve)`` makes a table (its address, 0 on failure) whose lookups fall back to
    these Python callbacks while it is stale or routed to Python; ``publish(table, rows, slots)``
    replaces its content (rows: ``=QIIII`` contract id, major, index, generation, 0, sorted by
    contract id then registration order; slots: ``@NII`` interface address, generation, 0 per
    handle index) and clears its staleness.
    """

    find: int
    resolve: int
    create: int
    destroy: int

    def new(self, host_size: int, py_find: int, py_resolve: int) -> int: ...

    def free(self, table: int) -> None: ...

    def stale(self, table: int) -> None: ...

    def route_python(self, table: int, delta: int) -> None: ...

    def publish(self, table: int, rows: bytes, slots: bytes) -> bool: ...


class NativeLookups:
    """:class:`NativePeers` over a compiled module that ran ``luaplug_lookups_init``
    (``luaplug_entry.h``): its ``lookups_*`` functions."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.find, self.resolve, self.create, self.destroy = (int(a) for a in module.lookups_functions())

    def new(self, host_size: int, py_find: int, py_resolve: int) -> int:
        return int(self._module.lookups_new(host_size, py_find, py_resolve))

    def free(self, table: int) -> None:
        self._module.lookups_free(table)

    def stale(self, table: int) -> None:
        self._module.lookups_stale(table)

    def route_python(self, table: int, delta: int) -> None:
        self._module.lookups_route_python(table, delta)

    def publish(self, table: int, rows: bytes, slots: bytes) -> bool:
        return bool(self._module.lookups_publish(table, rows, slots))


_native_peers: NativePeers | None = None
_native_peers_lock: Final = threading.Lock()


def set_native_peers(peers: NativePeers) -> bool:
    """Answer peer lookups of every runtime's ``HostApi`` in C from now on (a runtime made
    earlier switches at its next registry change). Whether ``peers`` is the provider now.

    The first provider stays for the process; a later one is not used. Every table must
    come from one compiled copy of the lookups, whose functions read it: each compiled module
    has its own (the ``HostApi`` size the functions find a table by, its live tables)."""
    global _native_peers
    with _native_peers_lock:
        if _native_peers is None:
            _native_peers = peers
        return _native_peers is peers


_HOST_SIZE: Final = ffi.sizeof("HostApi")


def _address(fn: Any) -> int:
    return int(ffi.cast("uintptr_t", fn))


def _string(sv: Any) -> str:
    if sv.ptr == ffi.NULL or sv.len == 0:
        return ""
    return bytes(ffi.buffer(sv.ptr, sv.len)).decode("utf-8", "replace")


def _owner(host: Any) -> HostApi | None:
    if host == ffi.NULL or host.runtime == ffi.NULL:
        return None
    owner: HostApi = ffi.from_handle(host.runtime)
    return owner


def _services(host: Any) -> HostServices | None:
    owner = _owner(host)
    return None if owner is None else owner.services


def _set_err(err: Any, code: int, message: Any = None) -> None:
    if err != ffi.NULL:
        err.code = code
        err.message.ptr = ffi.cast("const uint8_t*", message) if message is not None else ffi.NULL
        err.message.len = len(ffi.string(message)) if message is not None else 0


def _on_error(exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
    _log.error("HostApi callback raised", exc_info=(exc_type, exc, tb) if exc_type else None)  # type: ignore[arg-type]


# --- the callbacks -------------------------------------------------------------


@ffi.callback("uint8_t*(*)(const HostApi*, size_t, size_t)", onerror=_on_error)
def _cb_alloc(host: Any, size: int, align: int) -> Any:
    return ffi.cast("uint8_t*", _libc.malloc(size, align))


@ffi.callback("void(*)(const HostApi*, uint8_t*, size_t, size_t)", onerror=_on_error)
def _cb_free(host: Any, ptr: Any, size: int, align: int) -> None:
    _libc.free(int(ffi.cast("uintptr_t", ptr)))


@ffi.callback("void(*)(const HostApi*, uint32_t, StringView, StringView)", onerror=_on_error)
def _cb_log(host: Any, level: int, scope: Any, message: Any) -> None:
    pylevel = _LEVELS.get(level, logging.INFO)  # type: ignore[call-overload]
    if not guest_logger.isEnabledFor(pylevel):
        return
    scope_text = _string(scope)
    # Deferred when this thread holds a runtime lock (a guest logging during init).
    with reentry.user_code():  # handlers are host code running inside a Lua call
        emit(guest_logger, pylevel, "[%s] %s", scope_text, _string(message), extra={"scope": scope_text})


@ffi.callback("GuestContractHandle(*)(const HostApi*, uint64_t, uint32_t)", onerror=_on_error)
def _cb_find(host: Any, contract_id: int, min_major: int) -> Any:
    owner = _owner(host)
    services = owner.services if owner is not None else None
    if services is None:
        return {"index": NULL_HANDLE_INDEX, "generation": 0}
    found = services._host_find(contract_id, min_major)
    if owner is not None and owner._peers:
        owner.refresh_peers()
    if found is None:
        return {"index": NULL_HANDLE_INDEX, "generation": 0}
    return {"index": found[0], "generation": found[1]}


@ffi.callback("const GuestContractInterface*(*)(const HostApi*, GuestContractHandle)", onerror=_on_error)
def _cb_resolve(host: Any, handle: Any) -> Any:
    owner = _owner(host)
    services = owner.services if owner is not None else None
    if services is None or handle.index == NULL_HANDLE_INDEX:
        return ffi.NULL
    iface = services._host_resolve(handle.index, handle.generation)
    if owner is not None and owner._peers:
        owner.refresh_peers()
    return iface


@ffi.callback(
    "void(*)(const HostApi*, const PluginDescriptor*, const GuestContractInterface*, AbiError*)", onerror=_on_error
)
def _cb_register(host: Any, desc: Any, iface: Any, err: Any) -> None:
    services = _services(host)
    if services is None:
        _set_err(err, AbiErrorCode.Generic, _NO_RUNTIME)
        return
    if desc == ffi.NULL or iface == ffi.NULL:
        _set_err(err, AbiErrorCode.InvalidPointer)
        return
    code, _text = services._host_register(desc, iface)
    _set_err(err, code)


@ffi.callback(
    "void(*)(const HostApi*, const GuestContractInterface*, const void*, GuestContractInstance*)",
    onerror=_on_error,
)
def _cb_create_instance(host: Any, iface: Any, args: Any, out: Any) -> None:
    if out == ffi.NULL:
        return
    out.data = ffi.NULL
    out.contract_id = 0
    if iface == ffi.NULL or iface.create_instance == ffi.NULL:
        return
    iface.create_instance(iface.dispatch.vm.loader_data, host, args, out)


@ffi.callback("void(*)(const HostApi*, const GuestContractInterface*, GuestContractInstance)", onerror=_on_error)
def _cb_destroy_instance(host: Any, iface: Any, inst: Any) -> None:
    if iface == ffi.NULL or iface.destroy_instance == ffi.NULL:
        return
    iface.destroy_instance(iface.dispatch.vm.loader_data, host, inst)


@ffi.callback("const uint64_t*(*)(const HostApi*)", onerror=_on_error)
def _cb_revision(host: Any) -> Any:
    if host == ffi.NULL or host.runtime == ffi.NULL:
        return ffi.NULL
    owner: HostApi = ffi.from_handle(host.runtime)
    return owner.revision


def _array(layout: tuple[struct.Struct, int], rows: Sequence[Any]) -> dict[str, Any]:
    """An ``Array`` of ``rows`` packed with ``layout``, in ``host.alloc`` memory the caller
    frees with ``host.free(host, items, len * element size, align)``; empty (null items, the
    element's alignment) when there are none or the allocation fails."""
    fmt, align = layout
    if rows:
        data = b"".join(fmt.pack(*row) if isinstance(row, tuple) else fmt.pack(row) for row in rows)
        addr = _libc.malloc(len(data), align)
        if addr:
            ffi.memmove(ffi.cast("void*", addr), data, len(data))
            return {"items": ffi.cast("void*", addr), "len": len(rows), "align": align}
        _log.error("HostApi: allocating an array of %d bytes failed", len(data))
    return {"items": ffi.NULL, "len": 0, "align": align}


@ffi.callback("Array(*)(const HostApi*, uint64_t, uint32_t)", onerror=_on_error)
def _cb_find_all(host: Any, contract_id: int, min_major: int) -> Any:
    services = _services(host)
    return _array(_HANDLES, services._host_find_all(contract_id, min_major) if services is not None else [])


@ffi.callback("Array(*)(const HostApi*)", onerror=_on_error)
def _cb_list_bundles(host: Any) -> Any:
    services = _services(host)
    return _array(_BUNDLE_IDS, services._host_list_bundles() if services is not None else [])


@ffi.callback("Array(*)(const HostApi*)", onerror=_on_error)
def _cb_get_dependencies(host: Any) -> Any:
    services = _services(host)
    return _array(_DEPENDENCIES, services._host_dependencies() if services is not None else [])


@ffi.callback("HostContractInstance(*)(const HostApi*, uint64_t, uint32_t)", onerror=_on_error)
def _cb_get_host_contract(host: Any, contract_id: int, min_version: int) -> Any:
    # The instance by value; null data when there is none, the reason then in get_last_error.
    services = _services(host)
    if services is None:
        return {"data": ffi.NULL}
    try:
        code, data = services._host_get_host_contract(contract_id, min_version)
    except Exception:  # never into C: a failed factory is the host contract's failure
        _log.error("get_host_contract failed", exc_info=True)
        code, data = AbiErrorCode.HostContractCallFailed, 0
    owner: HostApi = ffi.from_handle(host.runtime)
    if code != AbiErrorCode.Ok:
        owner.set_last_error(host_contract_unavailable(code, contract_id, min_version))
        return {"data": ffi.NULL}
    owner.set_last_error("")  # what the instance factory gave, null included
    return {"data": ffi.cast("void*", data)}


@ffi.callback("const HostContractInterface*(*)(const HostApi*, uint64_t, uint32_t)", onerror=_on_error)
def _cb_resolve_host_contract(host: Any, contract_id: int, min_version: int) -> Any:
    services = _services(host)
    if services is None:
        return ffi.NULL
    iface = services._host_resolve_host_contract(contract_id, min_version)
    if iface == ffi.NULL:  # a success leaves the last error as it was
        owner: HostApi = ffi.from_handle(host.runtime)
        owner.set_last_error(host_contract_interface_not_found(contract_id, min_version))
    return iface


def _path_op(host: Any, data: Any, size: int, err: Any, name: str) -> None:
    """``load_bundle`` / ``reload_bundle``: ``data`` holds ``size`` bytes of a UTF-8 path."""
    owner = _owner(host)
    services = owner.services if owner is not None else None
    if owner is None or services is None:
        _set_err(err, AbiErrorCode.Generic, _NO_RUNTIME)
        return
    if data == ffi.NULL:
        owner.set_last_error(ffi.string(_NULL_PATH[name]).decode())
        _set_err(err, AbiErrorCode.InvalidPointer, _NULL_PATH[name])
        return
    try:
        path = bytes(ffi.buffer(data, size)).decode("utf-8")
    except UnicodeDecodeError as exc:
        owner.set_last_error(f"{name}: the bundle path is not valid UTF-8 ({exc})")
        _set_err(err, AbiErrorCode.Generic, _NOT_UTF8)
        return
    op = services._host_load_bundle if name == "load_bundle" else services._host_reload_bundle
    _finish(owner, err, *op(path))


def _finish(owner: HostApi, err: Any, code: int, text: str) -> None:
    """Report a bundle operation's result: the text goes to ``get_last_error``."""
    if code != AbiErrorCode.Ok:
        owner.set_last_error(text)
    _set_err(err, code, _ON_STACK if code == AbiErrorCode.ReentrantCall else None)


@ffi.callback("void(*)(const HostApi*, const uint8_t*, size_t, AbiError*)", onerror=_on_error)
def _cb_load_bundle(host: Any, data: Any, size: int, err: Any) -> None:
    _path_op(host, data, size, err, "load_bundle")


@ffi.callback("void(*)(const HostApi*, const uint8_t*, size_t, AbiError*)", onerror=_on_error)
def _cb_reload_bundle(host: Any, data: Any, size: int, err: Any) -> None:
    _path_op(host, data, size, err, "reload_bundle")


@ffi.callback("void(*)(const HostApi*, const HostContractInterface*, AbiError*)", onerror=_on_error)
def _cb_register_host_contract(host: Any, iface: Any, err: Any) -> None:
    services = _services(host)
    if services is None:
        _set_err(err, AbiErrorCode.Generic, _NO_RUNTIME)
        return
    if iface == ffi.NULL:
        _set_err(err, AbiErrorCode.InvalidPointer)
        return
    code, _text = services._host_register_host_contract(iface)
    _set_err(err, code)


@ffi.callback("void(*)(const HostApi*, void*, AbiError*)", onerror=_on_error)
def _cb_register_loader(host: Any, loader: Any, err: Any) -> None:
    owner = _owner(host)
    if loader == ffi.NULL:
        if owner is not None:
            owner.set_last_error("null pointer in register_loader")
        _set_err(err, AbiErrorCode.InvalidPointer, _NULL_LOADER)
        return
    if owner is not None:
        owner.set_last_error(_NO_LOADERS.decode())
    _set_err(err, AbiErrorCode.Generic, _NO_LOADERS_C)


@ffi.callback("void(*)(const HostApi*, uint64_t, AbiError*)", onerror=_on_error)
def _cb_unload_bundle(host: Any, bundle: int, err: Any) -> None:
    owner = _owner(host)
    services = owner.services if owner is not None else None
    if owner is None or services is None:
        _set_err(err, AbiErrorCode.Generic, _NO_RUNTIME)
        return
    _finish(owner, err, *services._host_unload_bundle(bundle))


@ffi.callback("size_t(*)(const HostApi*, uint8_t*, size_t)", onerror=_on_error)
def _cb_get_last_error(host: Any, buf: Any, cap: int) -> int:
    text = _last_error_bytes(host)
    n = min(len(text), cap)
    if n and buf != ffi.NULL:
        ffi.memmove(buf, text, n)
    return n


@ffi.callback("size_t(*)(const HostApi*)", onerror=_on_error)
def _cb_get_error_len(host: Any) -> int:
    return len(_last_error_bytes(host))


def _last_error_bytes(host: Any) -> bytes:
    if host == ffi.NULL or host.runtime == ffi.NULL:
        return b""
    owner: HostApi = ffi.from_handle(host.runtime)
    return owner.last_error()


class HostApi:
    """One ``HostApi`` C struct and what it needs alive.

    :param services: the runtime behind it, or ``None`` for the allocator-only
        default host (every lookup then fails cleanly)
    """

    def __init__(self, services: HostServices | None) -> None:
        self.services = services
        self._handle = ffi.new_handle(self)
        # SAFETY: the struct, the counter and the handle are owned by this object.
        self.revision: Any = ffi.new("uint64_t*", 0)
        self._errors = threading.local()
        # The struct is followed by one word: the address of its C peer table (0: none).
        self._mem = ffi.new("char[]", _HOST_SIZE + 8)
        self.struct = ffi.cast("HostApi*", self._mem)
        self._peer_word: Any = ffi.cast("uintptr_t*", self._mem + _HOST_SIZE)
        self._peers = 0
        self._peers_python = 0
        self._peers_lock = threading.Lock()
        s = self.struct
        s.runtime = self._handle if services is not None else ffi.NULL
        s.register_guest_contract = _cb_register
        s.alloc = _cb_alloc
        s.free = _cb_free
        s.find_guest_contract = _cb_find
        s.find_all_guest_contracts = _cb_find_all
        s.resolve_guest_contract = _cb_resolve
        s.get_host_contract = _cb_get_host_contract
        s.resolve_host_contract_interface = _cb_resolve_host_contract
        s.list_bundles = _cb_list_bundles
        s.get_dependencies = _cb_get_dependencies
        s.load_bundle = _cb_load_bundle
        s.reload_bundle = _cb_reload_bundle
        s.register_host_contract = _cb_register_host_contract
        s.register_loader = _cb_register_loader
        s.get_last_error = _cb_get_last_error
        s.get_error_len = _cb_get_error_len
        s.unload_bundle = _cb_unload_bundle
        s.log = _cb_log
        s.create_guest_instance = _cb_create_instance
        s.destroy_guest_instance = _cb_destroy_instance
        s.revision_counter = _cb_revision
        s.reserved = ffi.NULL
        self.address: int = int(ffi.cast("uintptr_t", s))
        self._attach_peers()

    # -- peer lookups in C (NativePeers) --------------------------------------------

    def _attach_peers(self) -> None:
        """Answer find/resolve/create/destroy in C when a backend offers it (never for the
        allocator-only host)."""
        native = _native_peers
        if self._peers or native is None or not hasattr(self.services, "_host_publish_peers"):
            return  # none offered, the allocator-only host, or services that cannot publish
        table = native.new(_HOST_SIZE, _address(_cb_find), _address(_cb_resolve))
        if not table:
            return
        with self._peers_lock:
            native.route_python(table, self._peers_python)
            self._peer_word[0] = table
            self._peers = table
        weakref.finalize(self, native.free, table)
        s = self.struct
        s.find_guest_contract = ffi.cast(ffi.typeof(_cb_find), native.find)
        s.resolve_guest_contract = ffi.cast(ffi.typeof(_cb_resolve), native.resolve)
        s.create_guest_instance = ffi.cast(ffi.typeof(_cb_create_instance), native.create)
        s.destroy_guest_instance = ffi.cast(ffi.typeof(_cb_destroy_instance), native.destroy)

    def peers_changed(self) -> None:
        """The registry changed: the C table is not read again until republished. Called
        before the change is visible."""
        if self._peers and _native_peers is not None:
            _native_peers.stale(self._peers)
        elif _native_peers is not None:
            self._attach_peers()

    def route_peers_to_python(self, delta: int) -> None:
        """While the count is positive (a bundle's init runs), lookups go through Python."""
        with self._peers_lock:
            self._peers_python += delta
            if self._peers and _native_peers is not None:
                _native_peers.route_python(self._peers, delta)

    def refresh_peers(self) -> None:
        """Republish the C table from the registry (after a lookup the table could not answer)."""
        services, native = self.services, _native_peers
        if services is not None and native is not None and self._peers and not self._peers_python:
            table = self._peers
            services._host_publish_peers(lambda rows, slots: native.publish(table, rows, slots))

    def bump_revision(self) -> None:
        """Mark a registry change (load, reload, unload)."""
        self.revision[0] = (self.revision[0] + 1) & 0xFFFFFFFFFFFFFFFF

    def set_last_error(self, text: str) -> None:
        """Record the calling thread's last error (``get_last_error``)."""
        self._errors.text = text.encode("utf-8", "replace")

    def last_error(self) -> bytes:
        """The calling thread's last error text."""
        return getattr(self._errors, "text", b"")

    def detach(self) -> None:
        """Cut the link to the runtime: lookups fail cleanly from now on."""
        self.route_peers_to_python(1)
        self.services = None


_default: HostApi | None = None
_default_lock: Final = threading.Lock()


def default_host() -> HostApi:
    """The allocator-only ``HostApi`` used by standalone arenas."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = HostApi(None)
    return _default
