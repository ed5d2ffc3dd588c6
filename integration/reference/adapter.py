"""Drive the reference runtime (polyplug 0.1.3, PyPI wheels) the way the suite drives luaplug.

The reference's own Python host API (``polyplug.Runtime`` plus
``polyplug_loaders_lua.register_lua_loader``) creates the runtime and loads, reloads and
unloads bundles. Everything else goes through the C ``HostApi`` it hands out, with
luaplug's ABI-mode FFI (:data:`luaplug.abi.ffi`, spec §12): contracts are found with
``find_guest_contract``, resolved to a ``GuestContractInterface*`` with
``resolve_guest_contract``, and called through ``dispatch.vm.call``.

polyplug is imported lazily, so this module imports (and :func:`reference_available`
answers) in environments without it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import luaplug
from luaplug.abi import ffi
from luaplug.ids import bundle_id, guest_contract_id

__all__ = [
    "REFERENCE_VERSION",
    "ReferenceContract",
    "ReferenceRuntime",
    "ReferenceRuntimeError",
    "reference_available",
    "vendored_copy",
]

#: The polyplug release the spec was checked against (all three distributions).
REFERENCE_VERSION: Final = "0.1.3"
_DISTRIBUTIONS: Final = ("polyplug", "polyplug-abi", "polyplug-loaders-lua")
_NULL_INDEX: Final = 0xFFFFFFFF
# The reference wraps every loader failure in this prefix; the rest is the spec's text.
_INIT_FAILED: Final = re.compile(r"init failed for bundle `(?P<bundle>[^`]*)`: (?P<error>.*)", re.DOTALL)

Address = Any
"""An address: an ``int``, a cffi pointer, or (for the arena) a :class:`luaplug.CallArena`."""


class ReferenceRuntimeError(RuntimeError):
    """The reference runtime refused an operation.

    :ivar message: the reference's text, verbatim (``get_last_error``)
    :ivar bundle: the bundle name of an ``init failed for bundle `<name>`: ...`` text, else ``None``
    :ivar error: the text after that prefix (the loader's own text, comparable with
        :attr:`luaplug.LoadError.error`), else :attr:`message`
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message: str = message
        m = _INIT_FAILED.fullmatch(message)
        self.bundle: str | None = m["bundle"] if m else None
        self.error: str = m["error"] if m else message


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Turn the ``RuntimeError`` polyplug raises into :class:`ReferenceRuntimeError`."""
    try:
        yield
    except ReferenceRuntimeError:
        raise
    except RuntimeError as exc:
        raise ReferenceRuntimeError(str(exc)) from exc


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


def _native_lib(module: str, base: str) -> Path | None:
    pkg = _package_dir(module)
    return None if pkg is None else pkg / "_native" / "linux-x64" / f"lib{base}.so"


def reference_available() -> str | None:
    """``None`` when the reference runtime can be used here, else why not (a skip reason)."""
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the reference runtime is driven on linux x86_64 only, not {sys.platform}/{platform.machine()}"
    for dist in _DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return (
                f"{dist} is not installed (the reference runtime: "
                f"pip install polyplug=={REFERENCE_VERSION} polyplug-abi=={REFERENCE_VERSION} "
                f"polyplug-loaders-lua=={REFERENCE_VERSION}, or tox -e reference)"
            )
        if version != REFERENCE_VERSION:
            return f"{dist} {version} is installed; the suite is written against {REFERENCE_VERSION}"
    for module, base in (("polyplug", "polyplug"), ("polyplug_loaders_lua", "polyplug_lua")):
        lib = _native_lib(module, base)
        if lib is None or not lib.is_file():
            return f"the {module} wheel lacks its native library ({lib})"
    return None


def _import_reference() -> tuple[Any, Any]:
    """Import polyplug with ``POLYPLUG_LIB`` naming the wheel's own library (spec §15)."""
    reason = reference_available()
    if reason is not None:
        raise ReferenceRuntimeError(reason)
    lib = _native_lib("polyplug", "polyplug")
    assert lib is not None
    # polyplug.Runtime dlopens POLYPLUG_LIB or a bare soname the system does not have;
    # an explicit, existing setting is respected (the package's import honours it too).
    current = os.environ.get("POLYPLUG_LIB", "")
    if not (current and Path(current).is_file()):
        os.environ["POLYPLUG_LIB"] = str(lib)
    import polyplug
    import polyplug_loaders_lua

    return polyplug, polyplug_loaders_lua


def vendored_copy(bundle_dir: str | Path, tmp_dir: str | Path) -> Path:
    """Copy ``bundle_dir`` under ``tmp_dir`` with luaplug's guest SDK modules vendored into it.

    The wheels ship no Lua SDK (spec §15); bundle files win over the SDK (a bundle that
    vendors its own ``abi.lua`` keeps it), as on ``package.path``.

    :returns: the copy's directory (``tmp_dir / bundle_dir.name``)
    """
    src = Path(bundle_dir)
    dest = Path(tmp_dir) / src.name
    shutil.copytree(src, dest)
    for module in luaplug.sdk_path().glob("*.lua"):
        target = dest / module.name
        if not target.exists():
            shutil.copyfile(module, target)
    return dest


def _addr(value: Address) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, luaplug.CallArena):
        return value.address
    return int(ffi.cast("uintptr_t", value))


class ReferenceRuntime:
    """One polyplug 0.1.3 runtime with its Lua loader registered.

    :param hot_reload: create the runtime with ``hot_reload_enabled`` (needed by :meth:`reload`)
    :param on_event: called with a :class:`luaplug.Event` for every reload phase the reference
        reports (its ``on_reload`` callback)
    :raises ReferenceRuntimeError: polyplug is not usable here (see :func:`reference_available`)

    Bundles are named by their manifest ``name``. Close it (or use it as a context
    manager) before dropping it: closing destroys the native runtime, and every
    :class:`ReferenceContract` of it refuses calls afterwards.
    """

    def __init__(self, hot_reload: bool = False, on_event: Callable[[luaplug.Event], object] | None = None) -> None:
        polyplug, loaders_lua = _import_reference()
        config = None
        if hot_reload:
            from polyplug_abi import RuntimeConfig

            config = RuntimeConfig()
            config.hot_reload_enabled = True
        on_reload = None
        if on_event is not None:

            def on_reload(phase: Any) -> None:
                on_event(
                    luaplug.Event(luaplug.Phase(int(phase.type)), int(phase.bundle_id), phase.bundle_name, phase.reason)
                )

        with _mapped_errors():
            self._rt: Any = polyplug.Runtime(config=config, on_reload=on_reload)
            loaders_lua.register_lua_loader(self._rt)
        self.hot_reload: bool = hot_reload
        self._host_address: int = int(self._rt.host)
        self._host: Any = ffi.cast("const HostApi*", self._host_address)
        self._revision: Any = self._host.revision_counter(self._host)
        self._paths: dict[str, Path] = {}

    # -- lifecycle ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._host_address == 0

    def close(self) -> None:
        """Destroy the native runtime (its VMs, contracts and ``HostApi``); idempotent."""
        if self._host_address:
            self._host_address = 0
            self._host = ffi.NULL
            self._revision = ffi.NULL
            # polyplug.Runtime has no close(); its finalizer destroys the runtime once
            # and zeroes its pointer, so calling it here is safe and idempotent.
            self._rt.__del__()

    def __enter__(self) -> ReferenceRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._host_address:
            raise ReferenceRuntimeError("the reference runtime is closed")

    # -- properties ---------------------------------------------------------------

    @property
    def host_api_address(self) -> int:
        """Address of the reference's ``HostApi`` (for ``luaplug.CallArena(cap, host=address)``)."""
        self._check_open()
        return self._host_address

    @property
    def host(self) -> Any:
        """The ``HostApi*`` as a cffi pointer (luaplug's declarations)."""
        self._check_open()
        return self._host

    @property
    def revision(self) -> int:
        """The registry revision counter (``HostApi.revision_counter``)."""
        self._check_open()
        return int(self._revision[0])

    @property
    def bundles(self) -> dict[str, Path]:
        """The bundles loaded through this adapter, by name, with the path each came from."""
        return dict(self._paths)

    # -- bundles ------------------------------------------------------------------

    def load(self, path: str | Path) -> str:
        """Load the bundle directory ``path``; its manifest ``name``.

        :raises ReferenceRuntimeError: the reference refused the bundle (its text verbatim)
        """
        self._check_open()
        path = Path(path)
        with _mapped_errors():
            self._rt.load_bundle(path)
        name = _manifest_name(path)
        self._paths[name] = path
        return name

    def reload(self, name: str) -> None:
        """Hot-reload bundle ``name`` from the path it was loaded from.

        :raises KeyError: no bundle ``name`` was loaded through this adapter
        :raises ReferenceRuntimeError: the reference refused (hot reload disabled, a broken new version)
        """
        self._check_open()
        path = self._paths[name]
        with _mapped_errors():
            self._rt.reload_bundle(path)

    def unload(self, name: str) -> None:
        """Unload bundle ``name`` (by ``bundle_id(name)``, so unknown names reach the reference too).

        :raises ReferenceRuntimeError: the reference refused
        """
        self._check_open()
        with _mapped_errors():
            self._rt.unload_bundle(bundle_id(name))
        self._paths.pop(name, None)

    def register_host_contract(self, iface: Any) -> int:
        """``HostApi.register_host_contract`` with a ``HostContractInterface*``; the ``AbiError`` code.

        The caller keeps the interface alive for the runtime's life (a :class:`luaplug.HostContract`).
        """
        self._check_open()
        err = ffi.new("AbiError*")
        self._host.register_host_contract(self._host, ffi.cast("const HostContractInterface*", iface), err)
        return int(err.code)

    # -- contracts ----------------------------------------------------------------

    def find(self, name: str, major: int, min_major: int | None = None) -> tuple[int, int] | None:
        """``find_guest_contract`` for ``name@major``: ``(index, generation)``, or ``None`` (null handle)."""
        self._check_open()
        cid = guest_contract_id(name, major)
        h = self._host.find_guest_contract(self._host, cid, major if min_major is None else min_major)
        if h.index == _NULL_INDEX:
            return None
        return int(h.index), int(h.generation)

    def contract(self, name_at_major: str) -> ReferenceContract:
        """The contract ``"name@major"``, found and resolved through the ``HostApi``.

        :raises ReferenceRuntimeError: no such contract is registered
        """
        name, sep, major_text = name_at_major.rpartition("@")
        if not sep or not name or not major_text.isdigit():
            raise ValueError(f"contract name must look like 'name@major', got {name_at_major!r}")
        found = self.find(name, int(major_text))
        if found is None:
            raise ReferenceRuntimeError(f"contract {name_at_major} is not registered")
        return ReferenceContract(self, name_at_major, guest_contract_id(name, int(major_text)), found)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"bundles={sorted(self._paths)}"
        return f"<ReferenceRuntime polyplug {REFERENCE_VERSION} {state}>"


def _manifest_name(path: Path) -> str:
    manifest = path / "manifest.toml" if path.is_dir() else path.parent / "manifest.toml"
    with manifest.open("rb") as f:
        return str(tomllib.load(f)["name"])


class ReferenceContract:
    """A guest contract of a :class:`ReferenceRuntime`, called through its C interface.

    The handle is resolved again whenever the runtime's revision counter moved (a
    reload keeps the handle and swaps the interface; an unload makes it stale).

    :ivar name: ``"name@major"``
    :ivar contract_id: ``guest_contract_id(name, major)``
    :ivar handle: ``(index, generation)`` from ``find_guest_contract``
    """

    def __init__(self, runtime: ReferenceRuntime, name: str, contract_id: int, handle: tuple[int, int]) -> None:
        self.runtime: ReferenceRuntime = runtime
        self.name: str = name
        self.contract_id: int = contract_id
        self.handle: tuple[int, int] = handle
        self._seen_revision: int = -1
        self._iface: Any = ffi.NULL
        # Per-thread scratch structs: dispatch from several threads at once is allowed.
        self._scratch = threading.local()
        self.resolve()

    def resolve(self) -> Any:
        """The ``GuestContractInterface*`` the handle names now (cffi pointer).

        :raises ReferenceRuntimeError: the runtime is closed or the handle went stale
        """
        rt = self.runtime
        revision = rt.revision
        if revision != self._seen_revision or self._iface == ffi.NULL:
            host = rt.host
            h = ffi.new("GuestContractHandle*", {"index": self.handle[0], "generation": self.handle[1]})
            iface = host.resolve_guest_contract(host, h[0])
            if iface == ffi.NULL:
                self._iface = ffi.NULL
                raise ReferenceRuntimeError(f"contract {self.name}: the handle is stale")
            self._iface = iface
            self._seen_revision = revision
        return self._iface

    @property
    def iface(self) -> Any:
        """Alias of :meth:`resolve`."""
        return self.resolve()

    @property
    def vm_call(self) -> Any:
        """The raw cffi function pointer ``dispatch.vm.call`` (``VmCallFn``, spec §12).

        Call it as ``vm_call(loader_data, GuestContractInstance, fn_id, args, out, arena, AbiError*)``;
        it stays valid until the next reload or unload of the bundle.
        """
        return self.resolve().dispatch.vm.call

    @property
    def loader_data(self) -> Any:
        """The ``VmLoaderData`` (by value) to pass as the first argument of :attr:`vm_call`."""
        return self.resolve().dispatch.vm.loader_data

    def dispatch(
        self, fn_id: int, args_addr: Address = 0, out_addr: Address = 0, arena_addr: Address = 0, instance: int = 0
    ) -> int:
        """Call function ``fn_id`` through ``dispatch.vm.call``; the ``AbiError`` code.

        :param args_addr: address of the argument struct (int or cffi pointer), 0 for none
        :param out_addr: address of the out slot, 0 for none
        :param arena_addr: address of a ``CallArena`` (or a :class:`luaplug.CallArena`), 0 for none
        :param instance: an id from :meth:`create_instance`, 0 for the default impl
        :raises OverflowError: ``fn_id`` is not a ``uint32``
        """
        if not 0 <= fn_id <= 0xFFFFFFFF:
            raise OverflowError(f"fn_id {fn_id} is not a uint32")
        vm = self.resolve().dispatch.vm
        inst, err = self._scratch_structs()
        inst.data = ffi.cast("void*", instance)
        inst.contract_id = self.contract_id
        err.code = 0xFFFFFFFF  # the callee must write it
        vm.call(
            vm.loader_data,
            inst[0],
            fn_id,
            ffi.cast("const void*", _addr(args_addr)),
            ffi.cast("void*", _addr(out_addr)),
            ffi.cast("CallArena*", _addr(arena_addr)),
            err,
        )
        return int(err.code)

    def _scratch_structs(self) -> tuple[Any, Any]:
        scratch = self._scratch
        try:
            return scratch.inst, scratch.err
        except AttributeError:
            scratch.inst = ffi.new("GuestContractInstance*")
            scratch.err = ffi.new("AbiError*")
            return scratch.inst, scratch.err

    @property
    def last_error(self) -> Any:
        """The calling thread's ``AbiError`` of its last :meth:`dispatch` (cffi struct pointer)."""
        return self._scratch_structs()[1]

    def create_instance(self) -> int:
        """A new instance through ``HostApi.create_guest_instance``; its id (0: the factory failed)."""
        iface = self.resolve()
        host = self.runtime.host
        out = ffi.new("GuestContractInstance*")
        host.create_guest_instance(host, iface, ffi.NULL, out)
        return int(ffi.cast("uintptr_t", out.data))

    def destroy_instance(self, instance: int) -> None:
        """Drop instance ``instance`` through ``HostApi.destroy_guest_instance``."""
        iface = self.resolve()
        host = self.runtime.host
        inst = ffi.new("GuestContractInstance*")
        inst.data = ffi.cast("void*", instance)
        inst.contract_id = self.contract_id
        host.destroy_guest_instance(host, iface, inst[0])

    def __repr__(self) -> str:
        return f"<ReferenceContract {self.name} handle={self.handle}>"
