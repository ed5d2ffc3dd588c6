"""The Lua loader protocol (spec §2-§10) over any :class:`~luaplug.backend.Engine`.

Everything engine-independent of a load lives here: source resolution, package paths, the
untrusted-mode hardening, running the entry chunk and ``polyplug_init`` (the texts of their
failures are in :mod:`luaplug.errors`), the providers of the contracts it registered (with
their C interfaces), and the reclamation of retired VMs through the epoch. A load returns what
it loaded (:class:`Loaded`); the runtime commits it to its registry, all or nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ..abi import AbiErrorCode
from ..abi import core_ffi as ffi
from ..contract import error_text, log_call_failure, log_create_failure
from ..errors import (
    MEMORY_TEXT,
    ApiSpecError,
    InitFailed,
    InvalidSourceEncoding,
    LuaError,
    LuaMemoryError,
    LuaplugError,
    LuaSyntaxError,
    ManifestError,
    ManifestMissingFile,
    init_error_text,
    init_failed,
    lua_error,
    missing_entry_file,
    script_load_failed,
)
from ..manifest import BundleSource, BytesSource, CodeSource, PathSource, read_bytes
from ..reentry import CELL_DEPTH, CELL_THREAD
from ..registry import Registration
from ..sdk import sdk_path
from .engine import (
    CAP_NESTED_SAME_BUNDLE,
    DEFAULT_OPTIONS,
    Engine,
    EngineState,
    FastCall,
    StateOptions,
)
from .interface import PythonBackedContract

if TYPE_CHECKING:
    from ..epoch import Collector
    from ..manifest import Manifest

__all__ = ["EngineContract", "Loaded", "LuaLoader"]

_log: Final = logging.getLogger("luaplug.loader")


# Deadlock detection for peer calls served through Python (engines whose VM lock
# is taken inside the engine): the state each thread may be blocked on, under
# _waits_lock. A state's holder is read from its cell (the thread running Lua
# in it). A thread about to wait on a state whose chain of holders and their
# waits leads back to itself is refused: mutual peer calls from two threads
# fail one call instead of hanging both. Used while no lock-order graph is registered.
_waits_lock: Final = threading.Lock()
_waiting: dict[int, EngineState] = {}
# The registered lock-order graph (set_wait_graph): then every wait is recorded in it, so a
# cycle through VMs of every engine is seen. (begin, end).
_wait_graph: tuple[Callable[[int], int], Callable[[], None]] | None = None
# The same graph's C functions, for C peer interfaces (luaplug_entry.h): begin, end; 0: none.
# Allocated once for the process (its address is handed out). A C reader that finds begin
# non-zero finds the end of the same graph beside it (see set_wait_graph).
_wait_graph_c: Final = ffi.new("uintptr_t[2]")
_graph_lock: Final = threading.Lock()


def set_wait_graph(
    begin: Callable[[int], int],
    end: Callable[[], None],
    *,
    addresses: tuple[int, int] | None = None,
    replace: bool = True,
) -> bool:
    """Record peer-call waits in a backend's lock-order graph from now on: ``begin(cell_address)``
    (the prelude cell of the state about to be waited on) answers 0 and records the wait, or -1
    when it would close a cycle; ``end()`` ends the calling thread's latest wait.

    One graph serves the process at a time: a graph registered later replaces it for the waits
    that begin from then on (a wait already begun ends in the graph it began in). luaplug-cffi
    registers its graph (which also sees its own VM locks) when its engine is imported and
    replaces any other; luaplug-lupa registers the core header's (``luaplug_entry.h``) with
    ``replace=False``, so it serves only while no other graph is registered.

    :param addresses: the addresses of the same two functions in C (``int begin(uintptr_t)``,
        ``void end(void)``), which C peer interfaces then call directly
    :param replace: ``False``: register only when no graph is registered yet
    :returns: whether this graph is now the registered one
    """
    global _wait_graph
    with _graph_lock:
        if not replace and _wait_graph is not None:
            return False
        # A C peer reads both slots without Python in between: begin is cleared first (C peers
        # use the Python path meanwhile, which reads _wait_graph whole) and set last.
        _wait_graph_c[0] = 0
        _wait_graph = (begin, end)
        if addresses is not None:
            _wait_graph_c[1] = addresses[1]
            _wait_graph_c[0] = addresses[0]
        else:
            _wait_graph_c[1] = 0
        return True


def wait_graph_address() -> int:
    """Address of a ``uintptr_t[2]``: the C functions of the registered lock-order graph (see
    :func:`set_wait_graph`), both 0 when none is registered in C. Valid for the process."""
    return int(ffi.cast("uintptr_t", _wait_graph_c))


_DEADLOCK_TEXT: Final = "peer call refused: it would deadlock (mutual calls between bundle VMs on two threads)"


def _holder(state: EngineState) -> int | None:
    cell = state.cell
    thread = cell[CELL_THREAD]
    return int(thread) if cell[CELL_DEPTH] != 0 and thread != 0 else None


def _closes_cycle(target: EngineState, me: int) -> bool:
    """Whether ``me`` waiting on ``target`` would close a cycle (``_waits_lock`` held)."""
    holder = _holder(target)
    for _ in range(len(_waiting) + 1):
        if holder is None:
            return False
        if holder == me:
            return True
        waits_on = _waiting.get(holder)
        if waits_on is None:
            return False
        nxt = _holder(waits_on)
        if nxt == holder:  # it holds what it waited for: it runs, it does not wait
            return False
        holder = nxt
    return True


#: What ends a wait: the token of :func:`_wait_for`, passed back to :func:`_done_waiting`.
WaitToken = Callable[[], None]


def _end_table_wait() -> None:
    """End the calling thread's wait in the Python table (its latest replaced any earlier one)."""
    with _waits_lock:
        _waiting.pop(threading.get_ident(), None)


def _wait_for(state: EngineState) -> WaitToken | None:
    """Record that this thread may block on ``state``: a token for :func:`_done_waiting`, or
    ``None`` when waiting would close a cycle (then nothing is recorded). The token ends the
    wait where it was recorded, whatever graph is registered by then."""
    graph = _wait_graph
    if graph is not None:
        return graph[1] if graph[0](state.cell_address) == 0 else None
    me = threading.get_ident()
    with _waits_lock:
        if _closes_cycle(state, me):
            return None
        _waiting[me] = state
    return _end_table_wait


def _done_waiting(token: WaitToken) -> None:
    """End the wait :func:`_wait_for` answered ``token`` for (on the thread that began it)."""
    token()


class EngineContract(PythonBackedContract):
    """A contract served by the prelude of one engine state."""

    def __init__(
        self, state: EngineState, cidx: int, name: str, major: int, plugin_name: str, nfuncs: int, nested: bool
    ) -> None:
        self.state = state
        self.cidx = cidx
        self.contract_name = name
        self.major = major
        self.plugin_name = plugin_name
        self.function_count = nfuncs
        self._dispatcher: FastCall = state.dispatcher(cidx)
        # Engines that cannot re-enter a running state refuse such calls here.
        self._guard_reentry = not nested
        self._pending_destroy: list[int] = []
        self._iface: Any = None

    @property
    def dispatcher(self) -> FastCall:
        return self._dispatcher

    def _blocked(self) -> bool:
        return self._guard_reentry and self.state.active_on_this_thread()

    def _wait(self) -> WaitToken | None:
        """Record that this thread may block on the state: a token for :func:`_done_waiting`, or
        ``None`` when it must not wait (the state runs on this thread and cannot be re-entered,
        or waiting would deadlock; :meth:`_blocked` tells which)."""
        graph = _wait_graph
        if graph is not None:
            # The graph refuses a wait on a state this thread is running in (its holder is this
            # thread): one call covers the re-entry check.
            return graph[1] if graph[0](self.state.cell_address) == 0 else None
        return None if self._blocked() else _wait_for(self.state)

    def create_instance(self) -> int:
        if self.state.retired:
            return 0
        token = self._wait()
        if token is None:
            if not self._blocked():
                log_create_failure(_DEADLOCK_TEXT)
            return 0
        try:
            self._drain()
            res = self.state.call_prelude("create", self.cidx)
        except LuaplugError as exc:
            self.create_failed_from_c(exc)
            return 0
        finally:
            _done_waiting(token)
        iid = int(res[0]) if res and res[0] else 0
        if not iid:
            self.create_failed_from_c(res)
        return iid

    def create_failed_from_c(self, failure: object) -> None:
        """Log a failed ``create``: what the prelude answered (``(0, reason)``) or what it raised
        (an exception of the engine's callables is mapped first; one that is not luaplug's is
        raised again)."""
        if isinstance(failure, BaseException):
            exc = self.state.engine_error(failure)
            if not isinstance(exc, LuaplugError):
                raise exc
            log_create_failure(str(exc))
            return
        res = failure if isinstance(failure, tuple) else (failure,)
        log_create_failure(error_text(res[1]) if len(res) > 1 else "unknown error")

    def destroy_failed_from_c(self, failure: BaseException) -> None:
        """Log what a ``destroy`` raised (mapped as in :meth:`create_failed_from_c`)."""
        exc = self.state.engine_error(failure)
        if not isinstance(exc, LuaplugError):
            raise exc
        _log.error("Lua destroy_instance failed: %s", exc)

    def destroy_instance(self, instance_id: int) -> None:
        if not instance_id or self.state.retired:
            return
        token = self._wait()
        if token is None:
            # The VM runs on this thread and cannot be re-entered, or waiting would deadlock:
            # drop the instance at the next safe entry instead.
            self._pending_destroy.append(instance_id)
            return
        try:
            self._drain()
            self.state.call_prelude("destroy", self.cidx, instance_id)
        except LuaplugError as exc:
            self.destroy_failed_from_c(exc)
        finally:
            _done_waiting(token)

    def _drain(self) -> None:
        while self._pending_destroy:
            self.state.call_prelude("destroy", self.cidx, self._pending_destroy.pop())

    def dispatch_from_c(self, fn_id: int, instance_id: int, args: int, out: int, arena: int) -> int:
        # A peer call: it may block on the VM, held by another thread.
        token = self._wait()
        if token is None:
            if not self._blocked():
                log_call_failure(_DEADLOCK_TEXT)
            return AbiErrorCode.ReentrantCall
        try:
            result = self._dispatcher(fn_id, instance_id, args, out, arena)
        finally:
            _done_waiting(token)
        return 0 if result == 0 else self.call_failed_from_c(result)

    def call_failed_from_c(self, result: Any) -> int:
        """The code of the dispatcher's non-zero ``result`` for a foreign caller, its Lua error logged."""
        if isinstance(result, tuple):
            log_call_failure(error_text(result[1]))
            return int(result[0])
        if result == 1:
            log_call_failure(self.state.last_error_text() or "")
        return int(result)

    def last_error_text(self) -> str | None:
        return self.state.last_error_text()

    def drop_vm(self) -> None:
        """Forget the VM's dispatcher once the VM is closed: every later call answers ``StaleHandle``.

        An engine whose VM lives as long as something references it (lupa) then frees it at
        once instead of when the cyclic GC finds this contract's cycle through its C handle.
        """
        self._dispatcher = _stale_call

    def bound_dispatcher(self, instance_id: int) -> Any:
        if self._blocked():
            # Binding may enter the VM, which is running on this thread.
            return super().bound_dispatcher(instance_id)
        try:
            bound = self.state.bound_dispatcher(self.cidx, instance_id)
        except LuaplugError:
            # Retired or closed meanwhile (a racing unload): the generic path
            # answers StaleHandle without entering the VM.
            bound = None
        return bound if bound is not None else super().bound_dispatcher(instance_id)

    @property
    def reentry_blocked(self) -> Any:
        return self._blocked if self._guard_reentry else None

    def native_entry(self, instance_id: int, instance: Any, mode: int) -> Any:
        if self._blocked():
            return None  # building an entry may enter the VM, which is running on this thread
        return self.state.native_entry(self.cidx, instance_id, instance, mode)

    def interface(self) -> Any:
        if self._iface is None:
            self._iface = self.state.interface(self, self.cidx)
        return self._iface


def _stale_call(*_args: object) -> int:
    """The dispatcher of a contract whose VM was closed."""
    return int(AbiErrorCode.StaleHandle)


def _close_vm(state: EngineState, providers: list[EngineContract]) -> None:
    """Close ``state`` and drop its contracts' references to it (the reclamation of a retired VM)."""
    state.close()
    for provider in providers:
        provider.drop_vm()


def _set_up(state: EngineState, host: int, options: StateOptions) -> None:
    """Wire a fresh state's prelude to its engine and this runtime (the prelude's ``setup``);
    the state is closed when that fails."""
    try:
        capped = 1 if options.memory_limit is not None else 0
        alloc = state.arena_alloc_address
        state.call_prelude("setup", host, state.cell_address, state.thread_fn_address, alloc, capped)
    except BaseException:
        state.close()
        raise


def _check_inside(bundle_dir: str, manifest: Manifest) -> None:
    """Refuse an entry file that resolves outside the bundle directory (symlinks followed).

    The manifest refuses absolute and ``..`` paths already; this catches a symlink.
    :raises ManifestError: naming the key, never the file's content
    """
    entry = os.path.join(bundle_dir, manifest.file)
    if not os.path.islink(entry) and os.path.dirname(manifest.file) == "":
        return  # a plain file right in the bundle directory (the usual case: one lstat)
    real_dir = os.path.realpath(bundle_dir)
    real = os.path.realpath(entry)
    if os.path.commonpath([real_dir, real]) != real_dir:
        raise ManifestError(
            f"manifest parse error for {manifest.manifest_path}: key `file`: "
            f"{manifest.file!r} resolves outside the bundle directory",
            path=str(manifest.manifest_path),
            key="file",
        )


def _realpath_address() -> int:
    """Address of the C library's ``realpath(3)``: an untrusted bundle's ``require`` resolves
    symlinks with it before it opens a module file."""
    global _REALPATH
    if _REALPATH is None:
        import ctypes  # untrusted loads only

        _REALPATH = ctypes.cast(ctypes.CDLL(None).realpath, ctypes.c_void_p).value or 0
    return _REALPATH


_REALPATH: int | None = None


def _value_glue(manifest: Manifest, bundle_dir: str | None) -> str:
    """The value glue of an untrusted bundle: from the manifest's ``api`` file (none: no contracts).

    :raises ManifestError: the file resolves outside the bundle directory
    :raises ApiSpecError: the file is missing, malformed, or declares what untrusted bundles cannot use
    """
    from ..typed.apitoml import load_api  # untrusted loads only
    from ..typed.spec import ApiSpec
    from ..typed.valueglue import generate_value_glue

    if not manifest.api or bundle_dir is None:
        return generate_value_glue(ApiSpec())
    real_dir = os.path.realpath(bundle_dir)
    path = os.path.realpath(os.path.join(bundle_dir, manifest.api))
    if os.path.commonpath([real_dir, path]) != real_dir:
        raise ManifestError(
            f"manifest parse error for {manifest.manifest_path}: key `api`: "
            f"{manifest.api!r} resolves outside the bundle directory",
            path=str(manifest.manifest_path),
            key="api",
        )
    return generate_value_glue(load_api(path))


class Loaded:
    """A bundle a loader set up, not yet published: its VM and the registrations of its contracts.

    The runtime commits :attr:`registrations` to its registry, then hands it back to
    :meth:`LuaLoader.adopt` (the VM serves) or, when the commit failed,
    :meth:`LuaLoader.discard` (the VM is closed).
    """

    __slots__ = ("chunk", "manifest", "options", "registrations", "state")

    def __init__(
        self,
        manifest: Manifest,
        state: EngineState,
        registrations: list[Registration],
        options: StateOptions,
        chunk: str,
    ) -> None:
        self.manifest = manifest
        self.state = state
        self.registrations = registrations
        self.options = options
        #: the entry chunk's name (what error texts call the file)
        self.chunk = chunk


@functools.lru_cache(maxsize=1)
def _sdk_dir() -> str:
    """The SDK directory as ``package.path`` entries spell it (forward slashes)."""
    return str(sdk_path()).replace("\\", "/")


def _entry_text(manifest: Manifest) -> str:
    """The entry file's path as error texts show it (pathlib's normal form)."""
    from pathlib import Path

    return str(Path(manifest.path) / manifest.file)


class LuaLoader:
    """The ``lua`` loader of one runtime, on one engine.

    Locking: ``_lock`` guards ``_live`` only; Lua never runs under it.
    """

    name = "lua"

    def __init__(self, engine: Engine, collector: Collector) -> None:
        self.engine = engine
        self._collector = collector
        self._nested = CAP_NESTED_SAME_BUNDLE in engine.capabilities
        self._lock = threading.Lock()
        self._live: dict[int, EngineState] = {}
        self._options: dict[int, StateOptions] = {}
        #: the contracts each serving VM provides (dropped with it)
        self._providers: dict[int, list[EngineContract]] = {}

    # -- the protocol -------------------------------------------------------------

    def load(
        self, manifest: Manifest, source: BundleSource, host_address: int, options: StateOptions = DEFAULT_OPTIONS
    ) -> Loaded:
        """Set the bundle up in a fresh VM with ``options``: what it registers, not yet published.

        :raises LoadError: with the spec's text; no VM stays open
        """
        return self._load(manifest, source, host_address, options)

    def reload(self, manifest: Manifest, host_address: int) -> Loaded:
        """:meth:`load` from the bundle's path, with the options it was loaded with."""
        options = self._options.get(manifest.id, DEFAULT_OPTIONS)
        return self._load(manifest, PathSource(manifest.path), host_address, options)

    def adopt(self, loaded: Loaded) -> None:
        """Serve the bundle from ``loaded``'s VM (its registrations are committed); a VM it
        supersedes is reclaimed with a batch, once no call is in it."""
        m = loaded.manifest
        providers = [r.provider for r in loaded.registrations if isinstance(r.provider, EngineContract)]
        with self._lock:
            old = self._live.get(m.id)
            old_providers = self._providers.get(m.id, [])
            self._live[m.id] = loaded.state
            self._options[m.id] = loaded.options
            self._providers[m.id] = providers
        if old is not None:
            # A superseded VM is closed with a batch of them, off the reload path.
            self._reclaim(old, old_providers, batched=True)

    @staticmethod
    def discard(loaded: Loaded) -> None:
        """Close ``loaded``'s VM (its registrations were not committed)."""
        loaded.state.retire()
        loaded.state.close()

    def unload(self, bundle_id: int, *, batched: bool = False) -> None:
        """Retire the bundle's VM and reclaim it once no call is in it.

        :param batched: reclaim it with a batch (:meth:`Collector.retire
            <luaplug.epoch.Collector.retire>`; the caller collects), not at once
        """
        with self._lock:
            state = self._live.pop(bundle_id, None)
            self._options.pop(bundle_id, None)
            providers = self._providers.pop(bundle_id, [])
        if state is not None:
            self._reclaim(state, providers, batched=batched)

    def close(self) -> None:
        """Unload every VM this loader still owns (in batches: the caller collects)."""
        with self._lock:
            states = [(state, self._providers.get(bid, [])) for bid, state in self._live.items()]
            self._live.clear()
            self._options.clear()
            self._providers.clear()
        for state, providers in states:
            self._reclaim(state, providers, batched=True)

    def live_instances(self, bundle_id: int) -> int:
        """Live instances in the bundle's serving VM (counted without entering it)."""
        with self._lock:
            state = self._live.get(bundle_id)
        return 0 if state is None else state.live_instances()

    def running_here(self, bundle_id: int) -> bool:
        """Whether the bundle's serving VM runs Lua on the calling thread (it is on this thread's call stack)."""
        with self._lock:
            state = self._live.get(bundle_id)
        return state is not None and state.active_on_this_thread()

    @property
    def live_states(self) -> int:
        """How many VMs are serving (superseded ones awaiting reclaim excluded)."""
        return len(self._live)

    # -- internals ----------------------------------------------------------------

    def _reclaim(self, state: EngineState, providers: list[EngineContract], *, batched: bool = False) -> None:
        state.retire()
        # SAFETY: retired first, deferred second: a call that starts after the
        # retire returns StaleHandle without running Lua; one already in flight
        # (Python pin or the VM's in-flight count) holds the close back.
        close = functools.partial(_close_vm, state, providers)
        if batched:
            self._collector.retire(close, busy=state.in_flight)
        else:
            self._collector.defer(close, busy=state.in_flight)

    @staticmethod
    def resolve_source(manifest: Manifest, source: BundleSource) -> tuple[str, str, str | None]:
        """``(source_text, chunk_name, bundle_dir)`` for a load."""
        if isinstance(source, PathSource):
            if not manifest.file:
                raise ManifestMissingFile(manifest.name)
            # One open() on a string path (every load reads its entry file): no pathlib.
            bundle_dir = os.fspath(manifest.path)
            entry = os.path.join(bundle_dir, manifest.file)
            try:
                _check_inside(bundle_dir, manifest)
                raw = read_bytes(entry)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):  # ValueError: a NUL
                raise InitFailed(manifest.name, missing_entry_file(_entry_text(manifest))) from None
            except OSError as exc:
                raise InitFailed(manifest.name, f"Lua script load failed at {_entry_text(manifest)}: {exc}") from exc
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidSourceEncoding(manifest.name, source_kind="file", path=_entry_text(manifest)) from exc
            return text, os.path.basename(entry), bundle_dir
        if isinstance(source, CodeSource):
            try:
                source.code.encode("utf-8")  # a str with lone surrogates has no UTF-8 form
            except UnicodeEncodeError as exc:
                raise InvalidSourceEncoding(manifest.name, source_kind="code") from exc
            return source.code, manifest.name, None
        if isinstance(source, BytesSource):
            try:
                return bytes(source.data).decode("utf-8"), manifest.name, None
            except UnicodeDecodeError as exc:
                raise InvalidSourceEncoding(manifest.name) from exc
        raise TypeError(f"unknown bundle source {source!r}")

    def _load(self, manifest: Manifest, source: BundleSource, host_address: int, options: StateOptions) -> Loaded:
        text, chunk, bundle_dir = self.resolve_source(manifest, source)
        try:
            state = self.engine.new_state(host_address=host_address, bundle=manifest.name, options=options)
            _set_up(state, host_address, options)
        except LuaMemoryError as exc:
            # A cap too small for the VM and luaplug's prelude.
            raise init_failed(manifest.name, f"Lua VM init failed: {exc}", MEMORY_TEXT) from exc
        except LuaplugError as exc:
            raise InitFailed(manifest.name, f"Lua VM init failed: {exc}") from exc
        try:
            regs = self._init(state, manifest, text, chunk, bundle_dir, host_address, options)
        except BaseException:
            state.retire()
            state.close()
            raise
        return Loaded(manifest, state, regs, options, chunk)

    def _init(
        self,
        state: EngineState,
        manifest: Manifest,
        text: str,
        chunk: str,
        bundle_dir: str | None,
        host_address: int,
        options: StateOptions,
    ) -> list[Registration]:
        sdk = _sdk_dir()
        # polyplug's loader prepends its guest-SDK and ABI-module directories as two entries;
        # luaplug ships both in one directory, so the same entry twice keeps package.path
        # entry for entry the shape a bundle sees on the reference.
        try:
            if bundle_dir is not None:
                d = bundle_dir.replace("\\", "/")
                path = f"{d}/?.lua;{d}/?.init.lua;{sdk}/?.lua;{sdk}/?.lua"
                state.call_prelude("prepend_package", "path", path, "cpath", f"{d}/?.so")
            else:
                state.call_prelude("prepend_package", "path", f"{sdk}/?.lua;{sdk}/?.lua")
        except LuaError as exc:  # out of memory under a cap
            cause = MEMORY_TEXT if isinstance(exc, LuaMemoryError) and not str(exc) else str(exc)
            raise InitFailed(manifest.name, f"Lua VM init failed: {cause}") from exc
        if options.instruction_limit or options.untrusted:
            confined: tuple[str, str, int] = ("", "", 0)
            glue = ""
            if options.untrusted:
                real_dir = "" if bundle_dir is None else os.path.realpath(bundle_dir).replace("\\", "/")
                # No SDK root: every SDK module needs the ffi an untrusted bundle does not get.
                confined = (real_dir, "", _realpath_address())
                try:
                    glue = _value_glue(manifest, bundle_dir)
                except ApiSpecError as exc:
                    raise InitFailed(manifest.name, f"untrusted bundle: its api.toml: {exc}") from exc
            try:
                # SAFETY: the part's bytes stay alive until load_part returns (it copies them).
                part = ffi.from_buffer(state.prelude_part("harden"))
                state.call_prelude("load_part", int(ffi.cast("uintptr_t", part)), len(part))
                state.call_prelude("harden", options.instruction_limit or 0, 1 if options.untrusted else 0, *confined)
                if options.untrusted:
                    # By address, as the part: the prelude copies the text under the cap.
                    glue_text = glue.encode("utf-8")
                    glue_buf = ffi.from_buffer(glue_text)
                    state.call_prelude("values", int(ffi.cast("uintptr_t", glue_buf)), len(glue_text))
            except LuaError as exc:
                cause = MEMORY_TEXT if isinstance(exc, LuaMemoryError) and not str(exc) else str(exc)
                raise InitFailed(manifest.name, f"Lua VM init failed: {cause}") from exc
        if text.startswith("\x1b"):
            # LuaJIT marks bytecode with an ESC first byte; only source text is accepted.
            raise InitFailed(manifest.name, script_load_failed(chunk, "precompiled bytecode is refused"))
        try:
            state.run_chunk(text, chunk)
        except LuaError as exc:
            cause = MEMORY_TEXT if isinstance(exc, LuaMemoryError) and not str(exc) else str(exc)
            error = lua_error(cause, syntax=isinstance(exc, LuaSyntaxError))
            raise init_failed(manifest.name, script_load_failed(chunk, error), cause) from exc
        # SAFETY: ctx and the path bytes stay alive until init returns (locals).
        path_text = (bundle_dir if bundle_dir is not None else str(manifest.manifest_path)).encode("utf-8")
        path_buf = ffi.new("char[]", path_text)
        ctx = ffi.new("BundleInitContext*")
        ctx.bundle_id = manifest.id
        ctx.bundle_path.ptr = ffi.cast("const uint8_t*", path_buf)
        ctx.bundle_path.len = len(path_text)
        try:
            res = state.call_prelude("init", host_address, int(ffi.cast("uintptr_t", ctx)), chunk)
        except LuaError as exc:
            cause = MEMORY_TEXT if isinstance(exc, LuaMemoryError) and not str(exc) else str(exc)
            error = init_error_text("init_error", [cause], chunk)
            raise init_failed(manifest.name, error, cause, file=chunk) from exc
        if not res or res[0] != "ok":
            kind = str(res[1]) if len(res) > 1 else "?"
            # The Lua error text, for the errors that carry one (memory, budget).
            cause = str(res[2]) if kind == "init_error" else str(res[3]) if kind == "factory_failed" else ""
            raise init_failed(manifest.name, init_error_text(kind, list(res[2:]), chunk), cause, file=chunk)
        count = int(res[1])
        regs = []
        for i in range(count):
            name, major, plugin, nfuncs = res[2 + 4 * i : 6 + 4 * i]
            provider = EngineContract(state, i + 1, str(name), int(major), str(plugin), int(nfuncs), self._nested)
            iface = provider.interface()
            regs.append(
                Registration(
                    contract_id=provider.contract_id,
                    contract_name=provider.contract_name,
                    major=provider.major,
                    plugin_name=provider.plugin_name,
                    bundle_id=manifest.id,
                    bundle_name=manifest.name,
                    iface=iface,
                    provider=provider,
                    keepalive=[provider, iface],
                )
            )
        return regs
