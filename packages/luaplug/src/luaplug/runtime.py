"""The :class:`Runtime`: one registry, one ``HostApi``, one backend."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, TypeVar, overload

from . import reentry
from ._keys import AUTHORING
from .abi import AbiErrorCode
from .abi import core_ffi as ffi
from .backend.discovery import select_backend
from .backend.engine import CAP_MEMORY_LIMIT, DEFAULT_OPTIONS, StateOptions
from .backend.loader import Loaded, LuaLoader
from .config import Config, resolve_config
from .contract import Contract
from .epoch import Collector, default_collector
from .errors import (
    CapabilityError,
    ContractNotFoundError,
    DependencyError,
    DuplicateProvider,
    HotReloadDisabled,
    InitFailed,
    LoadError,
    LuaplugError,
    RuntimeClosedError,
    registration_refused,
)
from .events import Event, EventHub, Phase, defer_enter, defer_exit, deferring, emit
from .hostapi import HostApi
from .hostcontract import HostContractTable
from .ids import bundle_id, guest_contract_id, split_contract_name
from .manifest import (
    BundleSource,
    BytesSource,
    CodeSource,
    DependencyIndex,
    PathSource,
    declared_contract_ids,
    depends_on,
    unregistered_provides,
)
from .manifest import load as _read_manifest
from .registry import Provider, Registration, Registry

if TYPE_CHECKING:
    from pathlib import Path

    from .events import EventCallback
    from .hostcontract import HostContract
    from .manifest import Dependency, Manifest
    from .typed import ApiSpec, ContractSpec, TypedProxy

__all__ = ["GUEST_LOCK_WAIT", "Bundle", "InitScope", "Runtime", "RuntimeServices", "dependency_info", "init_scope"]

_log: Final = logging.getLogger("luaplug.runtime")
_T = TypeVar("_T")
_MISSING: Final[Any] = object()

#: Seconds a bundle operation from a guest waits for the runtime lock before it fails.
#: The guest's VM stays held meanwhile; a load on another thread whose init calls into
#: that VM would wait for it forever, so the wait must end.
GUEST_LOCK_WAIT: Final = 5.0


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle, as :meth:`Runtime.load` returns it."""

    name: str
    id: int
    manifest: Manifest
    source_kind: str
    #: the backend whose engine runs this bundle's VM
    backend: str
    #: the VM's limits and restrictions (kept across reloads)
    options: StateOptions = DEFAULT_OPTIONS

    def __str__(self) -> str:
        return self.name


def _memory_manifest(name: str) -> Manifest:
    """:meth:`luaplug.manifest.Manifest.in_memory`."""
    from .manifest import Manifest

    return Manifest.in_memory(name)


def _split_name(name: str, major: int) -> tuple[str, int]:
    """``(name, major)`` of a contract given as ``"name@major"`` or as a name and ``major``."""
    if "@" in name:
        name, given = split_contract_name(name)
        major = major if given is None else given
    return name, major


def _options(base: StateOptions, memory: int | None, instructions: int | None, untrusted: bool) -> StateOptions:
    """``base`` with a load's overrides (``None``: keep; 0: none)."""
    if memory is None and instructions is None and not untrusted:
        return base  # immutable: every load without overrides shares the runtime's defaults
    for name, value in (("memory_limit", memory), ("instruction_limit", instructions)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return StateOptions(
        memory_limit=base.memory_limit if memory is None else memory or None,
        instruction_limit=base.instruction_limit if instructions is None else instructions or None,
        untrusted=untrusted or base.untrusted,
    )


class Runtime:
    """Loads bundles into isolated Lua VMs and hands out their contracts.

    :param backend: backend name; ``None`` selects (``LUAPLUG_BACKEND``, then the configuration,
        then the best available)
    :param hot_reload: allow :meth:`reload`; ``None``: ``LUAPLUG_HOT_RELOAD``, then the
        configuration, then ``False``
    :param collector: epoch domain for deferred reclamation (default: the process-wide one)
    :param config: a :class:`~luaplug.config.Config`, or the path of a ``luaplug.toml`` /
        ``pyproject.toml``; ``None`` finds one from the current directory upward
        (:mod:`luaplug.config`); ``False`` reads no file (environment and defaults only)
    :param memory_limit: bytes each bundle VM may hold (default for every load; ``None``: no cap).
        A bundle over it gets ``LuaMemoryError`` subclasses (:class:`~luaplug.InitMemoryError`
        from a load, :class:`~luaplug.DispatchMemoryError` from a call) and stays usable.
    :param instruction_limit: VM instructions per call into a bundle (default for every load;
        ``None``: no budget). Such bundles run with the JIT off, because LuaJIT runs no
        hooks in compiled code; a call past it fails with
        :class:`~luaplug.DispatchLimitError` (a load with :class:`~luaplug.InitLimitError`).

    Bundles run on the runtime's backend unless a load names another one;
    bundles on different backends share the registry and the ``HostApi``, so
    they call each other's contracts through the C interfaces (peer calls).

    Thread-safe. Loads, reloads and unloads are serialized per runtime; calls
    are not (each VM serializes its own).
    """

    #: seconds a guest's bundle operation waits for the runtime lock (:data:`GUEST_LOCK_WAIT`)
    _guest_lock_wait: float = GUEST_LOCK_WAIT

    def __init__(
        self,
        backend: str | None = None,
        *,
        hot_reload: bool | None = None,
        collector: Collector | None = None,
        config: Config | str | os.PathLike[str] | Literal[False] | None = None,
        memory_limit: int | None = None,
        instruction_limit: int | None = None,
    ) -> None:
        self.default_options = _options(DEFAULT_OPTIONS, memory_limit, instruction_limit, False)
        self.config: Config = resolve_config(config)
        info = select_backend(backend, configured=self.config.backend)
        self.backend_name: str = info.name
        self.engine = info.engine_class()()
        self.hot_reload: bool = self.config.hot_reload_setting(hot_reload)
        self.collector: Collector = collector if collector is not None else default_collector
        #: what the HostApi callbacks ask of this runtime
        self._services = RuntimeServices(self)
        self.host_api = HostApi(self._services)
        self.registry = Registry(self.collector)
        self.registry.on_change = self.host_api.peers_changed
        self.loader = LuaLoader(self.engine, self.collector)
        # One loader per backend in use; the runtime's own is created eagerly.
        self._loaders: dict[str, LuaLoader] = {info.name: self.loader}
        self._bundles: dict[str, Bundle] = {}
        #: the loaded bundles by what they depend on (kept with ``_bundles``)
        self._dep_index = DependencyIndex()
        self._lock = threading.RLock()
        self._section = _LockedSection(self._lock)
        self._closed = False
        self._events = EventHub()
        self._host_contracts = HostContractTable(self.collector)
        #: ids (and names) of the bundles whose load or reload is running, on the thread holding the lock
        self._loading: dict[int, str] = {}
        #: the typed proxies bound to this runtime: close() releases their instances first
        self._proxies: weakref.WeakSet[TypedProxy] = weakref.WeakSet()
        #: Contracts a bundle's init registered through the HostApi, by bundle id: owned by that
        #: bundle once its load commits (:meth:`_commit`), withdrawn if it fails.
        self._init_aliases: dict[int, list[Registration]] = {}

    def _locked(self) -> _LockedSection:
        # The log sink never runs under the runtime lock: records made while it
        # is held (guest logs during init included) are emitted after release.
        # Events likewise: delivered in order once the outermost section released the lock.
        return self._section

    # -- properties ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    @property
    def host_api_address(self) -> int:
        """Address of this runtime's ``HostApi`` struct."""
        return self.host_api.address

    @property
    def revision(self) -> int:
        """The registry revision counter (bumped on every load/reload/unload)."""
        return int(self.host_api.revision[0])

    @property
    def capabilities(self) -> frozenset[str]:
        """The backend's capability names (``luaplug.backend.CAP_*``)."""
        return self.engine.capabilities

    @property
    def bundles(self) -> dict[str, Bundle]:
        """Loaded bundles by name."""
        return dict(self._bundles)

    # -- loading ------------------------------------------------------------------

    def load(
        self,
        path: str | Path,
        *,
        backend: str | None = None,
        memory_limit: int | None = None,
        instruction_limit: int | None = None,
        untrusted: bool = False,
    ) -> Bundle:
        """Load the bundle at ``path`` (its directory, or a file in it).

        :param backend: run this bundle on another installed backend
            (default: the runtime's)
        :param memory_limit: this bundle's memory cap (``None``: the runtime's; 0: none)
        :param instruction_limit: this bundle's instruction budget per call
            (``None``: the runtime's; 0: none)
        :param untrusted: run the bundle without ``os``, ``io``, ``debug``, bytecode
            loading, C modules and the raw ``ffi`` (docs: untrusted mode)
        :raises ManifestError: the manifest is invalid (nothing ran)
        :raises LoadError: the bundle failed to load (nothing stays registered)
        :raises BackendNotFoundError: ``backend`` is not installed
        :raises BackendUnavailableError: ``backend`` cannot run here
        """
        m = _read_manifest(path)
        options = _options(self.default_options, memory_limit, instruction_limit, untrusted)
        return self._load(m, PathSource(m.path), backend, options)

    def load_code(
        self,
        source: str,
        name: str,
        *,
        backend: str | None = None,
        memory_limit: int | None = None,
        instruction_limit: int | None = None,
        untrusted: bool = False,
    ) -> Bundle:
        """Load in-memory Lua source as bundle ``name`` (no hot reload); options as :meth:`load`."""
        options = _options(self.default_options, memory_limit, instruction_limit, untrusted)
        return self._load(_memory_manifest(name), CodeSource(source), backend, options)

    def load_bytes(
        self,
        data: bytes,
        name: str,
        *,
        backend: str | None = None,
        memory_limit: int | None = None,
        instruction_limit: int | None = None,
        untrusted: bool = False,
    ) -> Bundle:
        """Load in-memory UTF-8 Lua source bytes as bundle ``name``; options as :meth:`load`.

        :raises InvalidSourceEncoding: ``data`` is not UTF-8
        """
        options = _options(self.default_options, memory_limit, instruction_limit, untrusted)
        return self._load(_memory_manifest(name), BytesSource(bytes(data)), backend, options)

    def _loader_for(self, backend: str | None) -> tuple[str, LuaLoader]:
        """The loader of ``backend`` (created on first use). Call under the lock."""
        name = self.backend_name if backend is None else backend
        loader = self._loaders.get(name)
        if loader is None:
            info = select_backend(name)
            loader = self._loaders[name] = LuaLoader(info.engine_class()(), self.collector)
        return name, loader

    def _load(self, m: Manifest, source: BundleSource, backend: str | None, options: StateOptions) -> Bundle:
        self._check_open()
        if m.loader != self.loader.name:
            raise LoadError(m.name, f"no loader named {m.loader!r} (this runtime has {self.loader.name!r})")
        with self._locked():
            if m.name in self._bundles:
                raise LoadError(m.name, f"bundle {m.name!r} is already loaded")
            if m.id in self._loading:
                raise LoadError(m.name, f"bundle {m.name!r} is being loaded (its init is running on this thread)")
            backend_name, loader = self._loader_for(backend)
            if options.memory_limit is not None and CAP_MEMORY_LIMIT not in loader.engine.capabilities:
                raise CapabilityError(backend_name, CAP_MEMORY_LIMIT, "memory_limit")
            with self._initialising(m, replacing=False):
                self._publish(loader, loader.load(m, source, self.host_api.address, options), replacing=False)
            bundle = Bundle(m.name, m.id, m, source.kind, backend_name, options)
            self._bundles[m.name] = bundle
            self._check_provides(m)
            self._dep_index.add(m)
        emit(_log, logging.INFO, "loaded bundle %s on %s", m.name, backend_name)
        return bundle

    def reload(self, bundle: str | Bundle) -> Bundle:
        """Reload a path bundle into a new VM (its manifest is read again).

        On failure the previous version keeps serving.

        :raises HotReloadDisabled: the runtime was created without ``hot_reload=True``
        """
        self._check_open()
        if not self.hot_reload:
            raise HotReloadDisabled()
        name = str(bundle)
        with self._locked():
            old = self._bundles.get(name)
            if old is None:
                if isinstance(bundle, Bundle) and bundle.source_kind == "path":
                    m = _read_manifest(bundle.manifest.path)
                    return self._load(m, PathSource(m.path), bundle.backend, bundle.options)
                raise LoadError(name, f"bundle {name!r} is not loaded")
            new = self._reload_locked(old, set())
        emit(_log, logging.INFO, "reloaded bundle %s", name)
        return new

    def _reload_locked(self, old: Bundle, done: set[str], manifest: Manifest | None = None) -> Bundle:
        """Reload ``old`` and then its ``needs_reinit_on_dep_reload`` dependents (each once).

        :param manifest: the new version's manifest (default: read again where ``old`` came from)
        """
        name = old.name
        done.add(name)
        if old.id in self._loading:
            raise LoadError(name, f"bundle {name!r} is being reloaded (its init is running on this thread)")
        try:
            if old.source_kind != "path":
                raise LoadError(name, "in-memory bundles cannot be hot-reloaded")
            m = _read_manifest(old.manifest.path) if manifest is None else manifest
            if m.name != old.name:
                raise LoadError(name, f"the manifest now names bundle {m.name!r}")
            self._post(Phase.Preparing, old)
            self._warn_live(old, "reloading")
            with self._initialising(m, replacing=True):
                loader = self._loaders[old.backend]
                self._publish(loader, loader.reload(m, self.host_api.address), replacing=True)
        except BaseException as exc:
            self._post(Phase.Failed, old, getattr(exc, "error", None) or str(exc))
            raise
        new = Bundle(m.name, m.id, m, "path", old.backend, old.options)
        self._bundles[name] = new
        mine = self.registry.of_bundle(new.id)
        self._check_provides(m, mine)
        if m is not old.manifest:  # an unchanged manifest (the same object) names the same targets
            self._dep_index.remove(old.manifest)
            self._dep_index.add(m)
        provided = {r.contract_id for r in mine}
        for dep_name in sorted(self._dep_index.candidates(new.name, new.id, provided)):
            dep = self._bundles.get(dep_name)
            if dep is None or dep.name in done or not dep.manifest.needs_reinit_on_dep_reload:
                continue
            if depends_on(dep.manifest, new.name, new.id, provided):
                try:
                    self._reload_locked(dep, done)
                except LuaplugError:  # logged, not raised: the provider's reload succeeded
                    emit(_log, logging.ERROR, "reloading %s after %s failed", dep.name, name, exc_info=True)
        self._post(Phase.Reloaded, new)
        return new

    def unload(self, bundle: str | Bundle) -> None:
        """Withdraw a bundle's contracts (handles go stale) and reclaim its VM
        once calls in flight on it returned. Unknown names are a no-op."""
        self._check_open()
        name = str(bundle)
        with self._locked():
            b = self._bundles.get(name)
            if b is None:
                return
            dependents = self.dependents(b.name)
            if dependents:
                raise DependencyError(b.name, dependents)
            self._unload_locked(b)
        emit(_log, logging.INFO, "unloaded bundle %s", name)

    def _unload_locked(self, b: Bundle, *, batched: bool = False) -> None:
        """Withdraw ``b`` and retire its VM (``batched``: with a batch the caller collects)."""
        self._post(Phase.Unloading, b)
        if self._bundles.pop(b.name, None) is not None:
            self._dep_index.remove(b.manifest)
        self._warn_live(b, "unloading")
        self.registry.invalidate_bundle(b.id)
        self._host_contracts.withdraw(b.id)
        self.host_api.bump_revision()
        self._loaders[b.backend].unload(b.id, batched=batched)

    def dependents(self, bundle: str | Bundle) -> list[str]:
        """Names of the loaded bundles that declared a dependency on ``bundle`` (sorted).

        A contract dependency counts only while ``bundle`` is the last loaded provider of
        that contract: unloading it would leave the dependent without one.
        """
        b = self._bundles.get(str(bundle))
        if b is None:
            return []
        only_here = self.registry.sole_provided(b.id)
        out = []
        for name in self._dep_index.candidates(b.name, b.id, only_here):
            d = self._bundles.get(name)
            if d is not None and depends_on(d.manifest, b.name, b.id, only_here):
                out.append(name)
        return sorted(out)

    def _check_provides(self, m: Manifest, registered: list[Registration] | None = None) -> None:
        """Warn about each ``provides`` entry the bundle's init did not register.

        :param registered: the bundle's registrations (default: read from the registry)
        """
        for text in unregistered_provides(m, self.registry.of_bundle(m.id) if registered is None else registered):
            emit(_log, logging.WARNING, "%s", text, extra=dict(AUTHORING))

    def _warn_live(self, bundle: Bundle, doing: str) -> None:
        live = self._loaders[bundle.backend].live_instances(bundle.id)
        if live:
            emit(
                _log,
                logging.WARNING,
                "%s bundle %s with %d live instance(s); their state is lost",
                doing,
                bundle.name,
                live,
            )

    def _publish(self, loader: LuaLoader, loaded: Loaded, *, replacing: bool) -> None:
        """Commit what ``loader`` loaded and let its VM serve; on a refused registration, close the VM.

        :raises InitFailed: a contract it registers is provided already (``DuplicateProvider``)
        """
        m = loaded.manifest
        try:
            self._commit(m, loaded.registrations, replacing=replacing)
        except DuplicateProvider as exc:
            loader.discard(loaded)
            raise InitFailed(
                m.name, registration_refused(exc.contract, "DuplicateProvider", exc.error), file=loaded.chunk
            ) from exc
        except BaseException:
            loader.discard(loaded)
            raise
        loader.adopt(loaded)

    def _commit(self, m: Manifest, regs: list[Registration], *, replacing: bool) -> None:
        """Publish a load's registrations all at once."""
        before = {r.contract_id for r in self.registry.of_bundle(m.id)} if replacing else set()
        self.registry.commit(regs, replacing=m.id if replacing else None)
        for alias in self._init_aliases.pop(m.id, []):
            # Registered through the HostApi by this load's init: owned by the bundle from now
            # on (a later reload or unload withdraws it with the VM it points into).
            alias.bundle_id, alias.bundle_name = m.id, m.name
        self._host_contracts.commit(m.id, replacing=replacing)
        self.host_api.bump_revision()
        for reg in regs:
            if reg.contract_id not in before:
                self._note_shadowed(reg)

    def _note_shadowed(self, reg: Registration) -> None:
        """Log (INFO) that ``reg``, just registered, is not the provider ``contract()`` picks.

        INFO, not WARNING: several providers of one contract is a supported setup, reached
        through :meth:`providers` and ``bundle=``; the line says where the new one went.
        """
        found = self.registry.registrations(reg.contract_id)
        first = found[0][2] if found else None
        if first is None or first is reg:
            return
        emit(
            _log,
            logging.INFO,
            "contract %s of bundle %s (plugin %s) is shadowed by bundle %s (plugin %s), loaded first; "
            "reach it with bundle=%r",
            reg.display_name,
            reg.bundle_name,
            reg.plugin_name,
            first.bundle_name,
            first.plugin_name,
            reg.bundle_name,
        )

    @contextmanager
    def _initialising(self, m: Manifest, *, replacing: bool) -> Iterator[None]:
        """Mark this thread as running ``m``'s load: its lookups are restricted to what it
        declared, and what it registers is staged until :meth:`_commit` (dropped on failure)."""
        prev = init_scope.scope
        init_scope.scope = InitScope(m, declared_contract_ids(m), replacing)
        self._loading[m.id] = m.name
        self.host_api.route_peers_to_python(1)
        try:
            yield
        except BaseException:
            self._host_contracts.discard(m.id)
            self.registry.withdraw(self._init_aliases.pop(m.id, []))
            raise
        finally:
            self._loading.pop(m.id, None)
            self.host_api.route_peers_to_python(-1)
            init_scope.scope = prev

    # -- events -------------------------------------------------------------------

    def on_event(self, callback: EventCallback) -> EventCallback:
        """Call ``callback(event)`` for every lifecycle :class:`~luaplug.events.Event` (also a decorator).

        Reload: ``Preparing``, then ``Reloaded`` or ``Failed`` (with the reason); unload:
        ``Unloading``; dependents reloaded with their provider send their own events in
        between. Callbacks run after the runtime lock was released, in order; one that
        raises is logged and the others still run.

        :returns: ``callback``
        """
        self._events.subscribe(callback)
        return callback

    def off_event(self, callback: EventCallback) -> bool:
        """Stop calling ``callback``; whether it was subscribed."""
        return self._events.unsubscribe(callback)

    def _post(self, phase: Phase, bundle: Bundle, reason: str | None = None) -> None:
        # An event nobody subscribed to is not built (subscribers are read when one is posted).
        if self._events.subscribed:
            self._events.post(Event(phase, bundle.id, bundle.name, reason))

    # -- host contracts -----------------------------------------------------------

    @overload
    def provide(
        self,
        contract: str | ContractSpec,
        impl: None = None,
        *,
        api: ApiSpec | ContractSpec | str | os.PathLike[str] | None = None,
        singleton: bool = True,
    ) -> Callable[[_T], _T]: ...

    @overload
    def provide(
        self,
        contract: str | ContractSpec,
        impl: object,
        *,
        api: ApiSpec | ContractSpec | str | os.PathLike[str] | None = None,
        singleton: bool = True,
    ) -> HostContract: ...

    def provide(
        self,
        contract: str | ContractSpec,
        impl: object = None,
        *,
        api: ApiSpec | ContractSpec | str | os.PathLike[str] | None = None,
        singleton: bool = True,
    ) -> HostContract | Callable[[_T], _T]:
        """Serve ``impl`` to bundles as host contract ``contract`` (``"name@major"`` or a declaration).

        Without ``impl``, a decorator: ``@rt.provide("host.Logger@1", api="api.toml")`` over a
        class (instantiated once for a singleton, the factory of every instance otherwise) or
        an object.

        :param api: where the contract is declared: an ``api.toml`` path, an ``ApiSpec``
            (its ``[[host_contract]]`` tables) or a ``ContractSpec``
        :param singleton: one impl for every caller; ``False``: ``impl`` is a factory called
            for every instance a guest creates
        :raises ApiSpecError: the contract is not declared as a host contract
        :raises TypeError: ``impl`` lacks a declared function
        :raises DuplicateProvider: a host contract with that id is registered already
        """
        if impl is None:

            def decorate(obj: _T) -> _T:
                self.provide(contract, obj, api=api, singleton=singleton)
                return obj

            return decorate
        from .hostcontract import HostContract, HostEntry, host_spec, resolve_impl  # the first one served

        spec = host_spec(contract, api)
        impl, singleton = resolve_impl(impl, singleton)
        self._check_open()
        hc = HostContract(spec, impl, singleton=singleton, host_address=self.host_api.address, host_api=self.host_api)
        with self._locked():
            self._host_contracts.add(HostEntry(hc.contract_id, hc.interface, 0, "<host>", keepalive=[hc], name=hc.key))
        return hc

    def host_contracts(self) -> list[int]:
        """The ids of every registered host contract (from Python and from guests)."""
        return [e.contract_id for e in self._host_contracts.entries()]

    # -- contracts ----------------------------------------------------------------

    def contract(self, name: str, major: int = 1, *, bundle: str | Bundle | None = None) -> Contract:
        """The contract ``name@major`` (``"name@major"`` is accepted as ``name``; a name holding
        an ``@`` is given as ``"a@b@1"``, or ``"a@b"`` with ``major``).

        :param bundle: the providing bundle (a name or a :class:`Bundle`); ``None``: the
            first-loaded provider (the first of :meth:`providers`)
        :raises ContractNotFoundError: no loaded bundle provides it, or ``bundle`` does not
            (the error then lists the bundles that do)
        """
        name, major = _split_name(name, major)
        if bundle is None:
            found = self.registry.find(guest_contract_id(name, major), major)
            if found is None:
                raise ContractNotFoundError(name, major, loaded=self.contracts())
            return Contract(self, name, major, found)
        wanted = str(bundle)
        regs = self.registry.registrations(guest_contract_id(name, major))
        for index, generation, reg in regs:
            if reg.bundle_name == wanted:
                return Contract(self, name, major, (index, generation))
        raise ContractNotFoundError(name, major, bundle=wanted, providers=[r.bundle_name for _, _, r in regs])

    def providers(self, contract: str, major: int = 1) -> list[Provider]:
        """Every loaded provider of ``contract`` (``"name@major"``, or a name and ``major``), in
        load order: the first is the one :meth:`contract` and :meth:`bind` pick without ``bundle=``.
        Empty when no loaded bundle provides it.
        """
        name, major = _split_name(contract, major)
        return [Provider.of(reg) for _, _, reg in self.registry.registrations(guest_contract_id(name, major))]

    def contracts(self) -> list[Provider]:
        """Every registered contract provider: a :class:`Provider` is the string ``"name@major"``
        (a contract with two providers is listed twice) with ``.bundle`` and ``.plugin``."""
        return [Provider.of(r) for r in self.registry.providers()]

    def bind(
        self,
        api: ApiSpec | ContractSpec | str | os.PathLike[str],
        contract: str | None = None,
        *,
        instance: bool = True,
        bundle: str | Bundle | None = None,
    ) -> TypedProxy:
        """A typed proxy of ``contract`` as ``api`` (an ``api.toml`` path or a declaration) declares it.

        :param bundle: the providing bundle to call (default: the first-loaded provider)

        See :func:`luaplug.typed.bind`.
        """
        from .typed import bind

        return bind(self, api, contract, instance=instance, bundle=bundle)

    # -- lifetime -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosedError("the runtime is closed")

    def _adopt(self, proxy: TypedProxy) -> None:
        """Track ``proxy``: :meth:`close` closes it before unloading (its instance is not live state)."""
        with self._lock:
            self._proxies.add(proxy)

    def close(self) -> None:
        """Close the typed proxies bound to the runtime (their methods then raise
        :class:`~luaplug.RuntimeClosedError`), unload every bundle; VMs are reclaimed once
        calls in flight returned."""
        with self._lock:
            proxies = [] if self._closed else list(self._proxies)
        for proxy in proxies:
            proxy._release()
        with self._locked():
            if self._closed:
                return
            for b in list(self._bundles.values()):
                try:
                    self._unload_locked(b, batched=True)  # dependents too: everything goes
                except LuaplugError:
                    emit(_log, logging.ERROR, "unloading %s at close failed", b.name, exc_info=True)
            for loader in self._loaders.values():
                loader.close()
            self._closed = True
        self.collector.collect()  # the batches of retired VMs: closed while the HostApi still answers
        self.host_api.detach()
        self.collector.collect()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Runtime backend={self.backend_name} bundles={sorted(self._bundles)}>"


class _LockedSection:
    """A runtime's locked section: :func:`~luaplug.events.deferring` entered first, then the
    runtime lock (released in the opposite order, so what was deferred is delivered unlocked)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        defer_enter()
        try:
            self._lock.acquire()
        except BaseException:
            defer_exit()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self._lock.release()
        finally:
            defer_exit()


# -- the load scope ---------------------------------------------------------------------------


class InitScope(NamedTuple):
    """The bundle whose ``polyplug_init`` runs on this thread (immutable).

    :ivar declared: the contract ids it may find while init runs
    :ivar replacing: whether it is a reload (its previous version's registrations are replaced)
    """

    manifest: Manifest
    declared: frozenset[int]
    replacing: bool


class _Current(threading.local):
    scope: InitScope | None = None


#: Per thread: the init that is running (set by the runtime around a load).
init_scope = _Current()


# -- what a runtime answers its HostApi callbacks with --------------------------------------------


class _Refused(Exception):
    """A bundle operation a guest asked for, refused with ``code`` and ``text``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def dependency_info(d: Dependency) -> tuple[int, int, int]:
    """``(contract_id, min_version, bundle_id)`` of one ``[[dependency]]`` (a ``DependencyInfo``).

    ``contract_id`` is the declared one, else ``guest_contract_id(contract, major)`` when a
    contract is named, else 0; ``min_version`` is the major of ``min_version`` (what
    ``find_guest_contract`` takes); ``bundle_id`` is the declared one, else that of the named
    bundle, else 0.
    """
    major = d.min_version[0]
    cid = d.contract_id
    if cid is None:
        cid = guest_contract_id(d.contract, major or 1) if d.contract else 0
    bid = d.bundle_id
    if bid is None:
        bid = bundle_id(d.bundle) if d.bundle else 0
    return cid, major, bid


class RuntimeServices:
    """What a runtime's ``HostApi`` callbacks ask of it (a :class:`~luaplug.hostapi.HostServices`),
    owned by the runtime.

    These methods run inside C callbacks from bundle code and answer with codes (never
    raise into C). Lookups take only the locks of the registry and the host-contract table.
    The bundle operations (``load_bundle``, ``reload_bundle``, ``unload_bundle``) take the
    runtime lock like the Python API, with a bounded wait (see :meth:`_guest_op`).
    """

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _owner(self) -> tuple[int, str] | str:
        """Who owns what the HostApi registers now: ``(bundle id, name)`` of the one bundle
        whose Lua code runs on this thread, ``(0, "<guest>")`` when none does, or why no owner
        can be told (a nested peer call runs several bundles on this thread).

        Everything a bundle registers points into its VM, so it goes when the bundle goes."""
        running = [
            (b.id, b.name)
            for b in list(self._rt._bundles.values())
            if (loader := self._rt._loaders.get(b.backend)) is not None and loader.running_here(b.id)
        ]
        if len(running) > 1:
            return "a registration from a nested peer call (several bundles run on this thread) is refused"
        return running[0] if running else (0, "<guest>")

    def _host_find(self, contract_id: int, min_major: int) -> tuple[int, int] | None:
        scope = init_scope.scope
        if scope is not None and contract_id not in scope.declared:
            return None  # an undeclared lookup during init (runtime-semantics "Dependencies")
        return self._rt.registry.find(contract_id, min_major)

    def _host_get_host_contract(self, contract_id: int, min_version: int) -> tuple[int, int]:
        code, entry = self._rt._host_contracts.find(contract_id, min_version)
        if entry is None:
            return code, 0
        data = self._rt._host_contracts.instance(entry)
        if not data and entry.owner == 0 and entry.keepalive:
            from .hostcontract import HostContract  # already imported: it made every entry

            if isinstance(entry.keepalive[0], HostContract):
                return AbiErrorCode.HostContractCallFailed, 0
        return AbiErrorCode.Ok, data

    def _host_resolve_host_contract(self, contract_id: int, min_version: int) -> Any:
        _code, entry = self._rt._host_contracts.find(contract_id, min_version)
        return ffi.NULL if entry is None else entry.iface

    def _host_register_host_contract(self, iface: Any) -> tuple[int, str]:
        if iface.create_instance == ffi.NULL or iface.destroy_instance == ffi.NULL:
            return AbiErrorCode.InvalidPointer, "null function pointer"
        from .hostcontract import guest_entry  # not imported by a runtime that serves no host contract

        scope = init_scope.scope
        if scope is None:
            # Outside a load: owned by the bundle running on this thread (none: the runtime).
            owner = self._owner()
            if isinstance(owner, str):
                self._rt.host_api.set_last_error(owner)
                return AbiErrorCode.Generic, owner
            try:
                self._rt._host_contracts.add(guest_entry(iface, owner[0], owner[1]))
            except DuplicateProvider as exc:
                self._rt.host_api.set_last_error(exc.error)
                return AbiErrorCode.DuplicateProvider, exc.error
            return AbiErrorCode.Ok, ""
        entry = guest_entry(iface, scope.manifest.id, scope.manifest.name)
        text = self._rt._host_contracts.stage(entry, replacing=scope.replacing)
        if text is not None:
            self._rt.host_api.set_last_error(text)
            return AbiErrorCode.DuplicateProvider, text
        return AbiErrorCode.Ok, ""

    def _served_by(self, iface: Any) -> tuple[int, str] | None:
        """``(bundle id, name)`` of the loaded bundle whose contract has this dispatch target."""
        vm = iface.dispatch.vm
        for reg in self._rt.registry.providers():
            own = reg.iface.dispatch.vm
            if reg.bundle_id and own.loader_data.data == vm.loader_data.data and own.call == vm.call:
                return reg.bundle_id, reg.bundle_name
        return None

    def _host_resolve(self, index: int, generation: int) -> Any:
        reg = self._rt.registry.resolve(index, generation)
        if reg is None:
            return ffi.NULL
        scope = init_scope.scope
        if scope is not None and reg.contract_id not in scope.declared:
            # A handle is no way around the find rule: during init a bundle reaches only the
            # contracts it declared, whatever handle it made up.
            return ffi.NULL
        return reg.iface

    def _host_register(self, desc: Any, iface: Any) -> tuple[int, str]:
        if (
            iface.create_instance == ffi.NULL
            or iface.destroy_instance == ffi.NULL
            or iface.dispatch.vm.call == ffi.NULL
        ):
            return AbiErrorCode.InvalidPointer, "null function pointer"
        try:
            display = ffi.string(ffi.cast("char*", desc.contract_name.ptr), desc.contract_name.len).decode("utf-8")
            plugin = ffi.string(ffi.cast("char*", desc.name.ptr), desc.name.len).decode("utf-8")
        except UnicodeDecodeError:
            return AbiErrorCode.Generic, "descriptor names must be UTF-8"
        name, given = split_contract_name(display)
        major = int(desc.version.major) if given is None else given
        if not name or guest_contract_id(name, major) != iface.contract_id:
            return AbiErrorCode.Generic, "contract id does not match the descriptor's name"
        scope = init_scope.scope
        # The interface points into a bundle's VM: the registration goes with that bundle. An
        # interface a loaded bundle serves is that bundle's; any other is the registering
        # bundle's (during init: once its load commits, see _init_aliases).
        served = self._served_by(iface)
        owner = served or ((0, "<host>") if scope is not None else self._owner())
        if isinstance(owner, str):
            self._rt.host_api.set_last_error(owner)
            return AbiErrorCode.Generic, owner
        reg = Registration(
            contract_id=int(iface.contract_id),
            contract_name=name,
            major=major,
            plugin_name=plugin,
            bundle_id=owner[0],
            bundle_name=owner[1] if owner[0] else "<host>",
            iface=Registration.copy_interface(iface),
        )
        try:
            self._rt.registry.commit([reg])
        except DuplicateProvider as exc:
            self._rt.host_api.set_last_error(str(exc))
            return AbiErrorCode.DuplicateProvider, str(exc)
        if scope is not None and served is None:
            self._rt._init_aliases.setdefault(scope.manifest.id, []).append(reg)
        self._rt.host_api.bump_revision()
        return AbiErrorCode.Ok, ""

    # -- introspection ------------------------------------------------------------

    def _host_list_bundles(self) -> list[int]:
        return [b.id for b in tuple(self._rt._bundles.values())]

    def _host_find_all(self, contract_id: int, min_major: int) -> list[tuple[int, int]]:
        scope = init_scope.scope
        if scope is not None and contract_id not in scope.declared:
            return []  # an undeclared lookup during init, as _host_find
        return self._rt.registry.find_all(contract_id, min_major)

    def _host_dependencies(self) -> list[tuple[int, int, int]]:
        scope = init_scope.scope
        if scope is None:
            return []  # only a bundle whose polyplug_init runs has a caller to answer for
        return [dependency_info(d) for d in scope.manifest.dependencies]

    # -- bundle operations ----------------------------------------------------------

    def _host_load_bundle(self, path: str) -> tuple[int, str]:
        return self._guest_op(lambda: self._guest_load(path))

    def _host_reload_bundle(self, path: str) -> tuple[int, str]:
        return self._guest_op(lambda: self._guest_reload(path))

    def _host_publish_peers(self, publish: Callable[[bytes, bytes], object]) -> None:
        if init_scope.scope is None:  # an init's answers are restricted: never published
            self._rt.registry.publish_peers(publish)

    def _host_unload_bundle(self, bundle: int) -> tuple[int, str]:
        return self._guest_op(lambda: self._guest_unload(bundle))

    def _guest_op(self, op: Callable[[], None]) -> tuple[int, str]:
        """Run ``op`` under the runtime lock; ``(code, error text)``, never an exception.

        The lock is the Python API's (operations stay serialized per runtime) and is
        re-entrant, so an operation from a bundle whose init this thread runs proceeds.
        Another thread's operation is waited for at most :attr:`Runtime._guest_lock_wait` seconds.
        Logs and events are delivered after the release, as host code running inside
        the calling guest's Lua call.
        """
        try:
            with reentry.user_code(), deferring():
                if not self._rt._lock.acquire(timeout=self._rt._guest_lock_wait):
                    return AbiErrorCode.Generic, (
                        f"the runtime is busy: another thread held its lock for {self._rt._guest_lock_wait:g} s "
                        "(a load, reload or unload); try again"
                    )
                try:
                    op()
                finally:
                    self._rt._lock.release()
        except _Refused as exc:
            return exc.code, exc.text
        except LuaplugError as exc:
            return AbiErrorCode.Generic, str(exc)
        except Exception as exc:  # never into C: a guest's request must not break the host
            emit(_log, logging.ERROR, "a bundle operation requested by a guest failed", exc_info=True)
            return AbiErrorCode.Generic, f"{type(exc).__name__}: {exc}"
        return AbiErrorCode.Ok, ""

    def _guest_manifest(self, path: str) -> Manifest:
        from .manifest import load  # imported by the first load already

        if self._rt._closed:
            raise RuntimeClosedError("the runtime is closed")
        return load(path)

    def _refuse_running(self, b: Bundle, doing: str) -> None:
        """Refuse ``doing`` on ``b`` when it is on this thread's call stack (running or initialising)."""
        if b.id in self._rt._loading:
            raise _Refused(
                AbiErrorCode.ReentrantCall,
                f"cannot {doing} bundle `{b.name}`: its load or reload is running on this thread",
            )
        loader = self._rt._loaders.get(b.backend)
        if loader is not None and loader.running_here(b.id):
            raise _Refused(
                AbiErrorCode.ReentrantCall,
                f"cannot {doing} bundle `{b.name}` from inside a call into it: it is on this thread's call stack",
            )

    def _guest_load(self, path: str) -> None:
        m = self._guest_manifest(path)
        if m.id in self._rt._loading:
            raise _Refused(
                AbiErrorCode.ReentrantCall, f"cannot load bundle `{m.name}`: its load is running on this thread"
            )
        self._rt.load(path)

    def _guest_reload(self, path: str) -> None:
        if not self._rt.hot_reload:
            raise HotReloadDisabled()
        m = self._guest_manifest(path)
        old = self._rt._bundles.get(m.name)
        if old is None:
            self._guest_load(path)  # as on the reference: reloading a bundle that is not loaded loads it
            return
        for b in self._reloaded_with(old):
            self._refuse_running(b, "reload")
        self._rt._reload_locked(old, set(), m)
        emit(_log, logging.INFO, "reloaded bundle %s (requested by a guest)", m.name)

    def _reloaded_with(self, old: Bundle) -> list[Bundle]:
        """``old`` and the dependents a reload of it reloads too (``needs_reinit_on_dep_reload``)."""
        out = [old]
        seen = {old.name}
        i = 0
        while i < len(out):
            b = out[i]
            i += 1
            provided = {r.contract_id for r in self._rt.registry.of_bundle(b.id)}
            for name in sorted(self._rt._dep_index.candidates(b.name, b.id, provided)):
                dep = self._rt._bundles.get(name)
                if dep is None or name in seen or not dep.manifest.needs_reinit_on_dep_reload:
                    continue
                if depends_on(dep.manifest, b.name, b.id, provided):
                    seen.add(dep.name)
                    out.append(dep)
        return out

    def _guest_unload(self, bundle: int) -> None:
        if self._rt._closed:
            raise RuntimeClosedError("the runtime is closed")
        if bundle in self._rt._loading:
            name = self._rt._loading[bundle]
            raise _Refused(
                AbiErrorCode.ReentrantCall,
                f"cannot unload bundle `{name}`: its load or reload is running on this thread",
            )
        b = next((b for b in self._rt._bundles.values() if b.id == bundle), None)
        if b is None:
            return  # spec §10: unloading an unknown bundle is a no-op
        self._refuse_running(b, "unload")
        self._rt.unload(b.name)  # refused while dependents are loaded (DependencyError)
