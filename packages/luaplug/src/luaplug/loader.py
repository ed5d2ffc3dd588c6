"""The loader protocol and the per-contract object a loader registers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import MEMORY_TEXT, LuaError, LuaMemoryError, LuaplugError
from .ids import guest_contract_id

if TYPE_CHECKING:
    from .engine import StateOptions
    from .manifest import Manifest
    from .runtime import Runtime
    from .sources import BundleSource

__all__ = ["BundleLoader", "ContractProvider", "FastCall"]

#: A backend's Python-side dispatch: ``(fn_id, instance_id, args, out, arena)``
#: (all integers; pointers as addresses) -> ``0``, an error code, or
#: ``(code, lua_error_text)``. Never ``-1``: the call paths use it for "not served
#: here, convert the arguments and call again" (``Instance._finish``).
FastCall = Callable[[int, int, int, int, int], Any]


class ContractProvider(ABC):
    """One contract as a loader registers it: dispatch, create, destroy, and a
    C interface (``GuestContractInterface``) whose pointers work from any caller.
    """

    contract_name: str
    major: int
    plugin_name: str
    function_count: int

    @property
    def contract_id(self) -> int:
        """``guest_contract_id(contract_name, major)``."""
        return guest_contract_id(self.contract_name, self.major)

    @property
    def display_name(self) -> str:
        """``"name@major"``."""
        return f"{self.contract_name}@{self.major}"

    @property
    @abstractmethod
    def fast_call(self) -> FastCall:
        """The backend's own dispatch for Python hosts (no C pointer on the way)."""

    def bound_call(self, instance_id: int) -> Callable[..., Any]:
        """:attr:`fast_call` with the instance id bound: ``(fn_id, args=0, out=0, arena=0)``."""
        fast = self.fast_call
        return lambda fn_id, args=0, out=0, arena=0: fast(fn_id, instance_id, args, out, arena)

    @property
    def reentry_blocked(self) -> Callable[[], bool] | None:
        """For engines that cannot re-enter a running VM: whether a call from
        the calling thread now would re-enter it (``None``: they can)."""
        return None

    def translate_error(self, exc: Exception) -> LuaplugError:
        """luaplug's exception for an engine's own exception that escaped a call."""
        if isinstance(exc, MemoryError):
            return LuaMemoryError(str(exc) or MEMORY_TEXT)
        return LuaError(str(exc))

    def native_entry(self, instance_id: int, instance: Any, mode: int) -> Any:
        """A backend's C-level callable serving :meth:`Instance.dispatch <luaplug.Instance.dispatch>`
        (``mode`` 0) or ``call`` (``mode`` 1) for one instance, or ``None``.

        It handles the plain-int fast case itself and delegates everything else
        to the instance's ``_py_dispatch``/``_py_call``/``_failed`` (the native-entry
        protocol, documented in ``luaplug.backend.get_include()``'s ``luaplug_entry.h``,
        which every backend compiles). Those
        methods do not check re-entry: an engine that cannot re-enter a
        running VM refuses such a call in its entry (``_failed(ReentrantCall, ...)``)
        before it delegates anything.
        """
        return None

    @abstractmethod
    def create_instance(self) -> int:
        """Build a fresh instance; its id (from 1, per contract), or 0 on failure."""

    @abstractmethod
    def destroy_instance(self, instance_id: int) -> None:
        """Drop an instance (0 is a no-op)."""

    @abstractmethod
    def interface(self) -> Any:
        """A ``GuestContractInterface*`` with working create/destroy/vm.call pointers."""

    def last_error_text(self) -> str | None:
        """The calling thread's last Lua error text, for engines whose fast call
        returns a bare code 1 (``None`` when the text came with the result)."""
        return None


@runtime_checkable
class BundleLoader(Protocol):
    """What a runtime needs from a loader (one per runtime)."""

    #: the loader name a manifest's ``loader`` key selects
    name: str
    #: whether :meth:`reload` is supported
    supports_hot_reload: bool

    def load(self, manifest: Manifest, source: BundleSource, runtime: Runtime, options: StateOptions) -> None:
        """Load a bundle into a VM with ``options`` and register its contracts with
        ``runtime`` (all or nothing).

        :raises LoadError: with the spec's text; nothing stays registered
        """

    def reload(self, manifest: Manifest, runtime: Runtime) -> None:
        """Load the bundle's entry file into a new VM and swap its contracts in.

        The old VM keeps serving if this fails, and is reclaimed through the
        epoch once calls in flight on it returned.
        """

    def unload(self, bundle_id: int, runtime: Runtime) -> None:
        """Reclaim a bundle's VM (its contracts are already withdrawn)."""

    def live_instances(self, bundle_id: int) -> int:
        """Instances created and not destroyed in the bundle's serving VM.

        Must not wait for calls in flight (the runtime lock is held).
        """
