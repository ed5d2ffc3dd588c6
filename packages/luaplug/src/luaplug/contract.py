"""What a Python host calls: :class:`Contract` and :class:`Instance`."""

from __future__ import annotations

import logging
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from . import reentry
from .abi import AbiErrorCode
from .abi import core_ffi as ffi
from .errors import MEMORY_TEXT, ContractNotFoundError, LuaError, LuaMemoryError, LuaplugError, RuntimeClosedError
from .errors import dispatch_error as _dispatch_error
from .ids import guest_contract_id

if TYPE_CHECKING:
    from .arena import CallArena

__all__ = [
    "Contract",
    "ContractProvider",
    "FastCall",
    "Instance",
    "error_text",
    "log_call_failure",
    "log_create_failure",
]

#: Where a failed call's Lua error is logged (spec §6).
_call_log: Final = logging.getLogger("luaplug.loader")

_STALE: Final = int(AbiErrorCode.StaleHandle)
_NO_FUNCTION: Final = int(AbiErrorCode.FunctionNotAvailable)
_REENTRANT: Final = int(AbiErrorCode.ReentrantCall)
_U32: Final = 1 << 32
_U64: Final = 1 << 64


#: A backend's Python-side dispatch: ``(fn_id, instance_id, args, out, arena)``
#: (all integers; pointers as addresses) -> ``0``, an error code, or
#: ``(code, lua_error_text)``. Never ``-1``: the call paths use it for "not served
#: here, convert the arguments and call again" (``Instance._dispatch_slow``).
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
    def dispatcher(self) -> FastCall:
        """The backend's own dispatch for Python hosts (no C pointer on the way)."""

    def bound_dispatcher(self, instance_id: int) -> Callable[..., Any]:
        """:attr:`dispatcher` with the instance id bound: ``(fn_id, args=0, out=0, arena=0)``."""
        fast = self.dispatcher
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
        protocol, documented in ``luaplug_entry.h`` in ``luaplug.backend.get_include()``,
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


class _Registered(Protocol):
    """A registration (:class:`luaplug.registry.Registration`), as a contract reads it."""

    @property
    def provider(self) -> ContractProvider | None: ...

    @property
    def iface(self) -> Any: ...

    @property
    def bundle_name(self) -> str: ...


class _Registry(Protocol):
    def resolve(self, index: int, generation: int) -> _Registered | None: ...


class ContractSource(Protocol):
    """What a :class:`Contract` needs of the runtime it came from."""

    @property
    def registry(self) -> _Registry: ...

    @property
    def closed(self) -> bool: ...


def error_text(value: object) -> str:
    """A Lua error value as text (engines may hand over bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def log_call_failure(text: str, *, raised: bool = False) -> None:
    """Spec §6: a handler's Lua error is logged at Error level; at DEBUG when it is also
    raised to the Python caller (the exception carries it)."""
    _call_log.log(logging.DEBUG if raised else logging.ERROR, "Lua function call failed: %s", text)


def log_create_failure(text: str) -> None:
    """A contract's factory failed for a ``create_instance`` (logged at Error level)."""
    _call_log.error("Lua create_instance: factory call failed: %s", text)


def _check_fn_id(fn_id: int) -> None:
    # The C ABI's fn_id is a uint32_t: every backend refuses the same values.
    if not 0 <= fn_id < _U32:
        raise OverflowError(f"fn_id {fn_id} is out of the uint32 range")


def _fn_id(fn_id: Any) -> int:
    """``fn_id`` as the C ABI's ``uint32_t`` takes it (every backend refuses the same values).

    :raises TypeError: not an integer
    :raises OverflowError: out of the ``uint32`` range
    """
    if fn_id.__class__ is not int:
        try:
            fn_id = int(operator.index(fn_id))
        except TypeError:
            raise TypeError(f"fn_id must be an int, not {type(fn_id).__name__}") from None
    _check_fn_id(fn_id)
    return int(fn_id)


def _address(ptr: Any) -> int:
    if ptr is None:
        return 0
    if isinstance(ptr, int):
        if not 0 <= ptr < _U64:
            raise OverflowError(f"address {ptr} is out of the uintptr_t range")
        return int(ptr)
    return int(ffi.cast("uintptr_t", ptr))


class Instance:
    """One instance of a contract in one bundle VM (id 0: the default impl).

    An instance stays bound to the VM that created it: after a reload or an
    unload its calls return ``StaleHandle``.

    :meth:`dispatch` and :meth:`call` are served per instance, by the
    backend's own C entry when it has one, else by closures over the
    backend's dispatch function (both stored as instance attributes, which
    shadow the methods). Those handle plain-int arguments themselves and hand
    every other case (cffi pointers, failures) to the methods, so the
    behaviour is the same either way.
    """

    def __init__(self, contract: Contract, provider: ContractProvider, instance_id: int) -> None:
        self._contract = contract
        self._provider: ContractProvider | None = provider
        self._id = instance_id
        self._dispatcher = provider.dispatcher
        self._bind(provider)

    def _bind(self, provider: ContractProvider) -> None:
        d = provider.native_entry(self._id, self, 0)
        c = provider.native_entry(self._id, self, 1)
        if d is None or c is None:
            d, c = _python_entries(self, provider)
        self.__dict__["dispatch"] = d
        self.__dict__["call"] = c

    @property
    def id(self) -> int:
        """The instance id (``GuestContractInstance.data``); 0 for the default impl."""
        return self._id

    @property
    def contract(self) -> Contract:
        return self._contract

    def dispatch(self, fn_id: int, args: Any = 0, out: Any = 0, arena: CallArena | None = None) -> int:
        """Call function ``fn_id``; the raw :class:`~luaplug.AbiErrorCode` value.

        :param args: address (int or cffi pointer) of the argument struct, or 0
        :param out: address of the out slot, or 0
        :param arena: the arena string results are bumped from (``None``: host alloc)
        :raises OverflowError: ``fn_id`` is not a ``uint32``
        :raises ValueError: ``arena`` is closed

        A Lua error in the handler returns 1 and is logged (logger ``luaplug.loader``).
        The call is pinned by the engine (the VM's in-flight count), so an
        unload or reload on another thread waits for it to return.
        """
        return self._dispatch_result(fn_id, args, out, arena)[0]

    def call(self, fn_id: int, args: Any = 0, out: Any = 0, arena: CallArena | None = None) -> None:
        """Like :meth:`dispatch`, but a non-zero code raises.

        :raises DispatchError: carrying the code and, for a Lua error, its text
        """
        code, text = self._dispatch_result(fn_id, args, out, arena, raising=True)
        if code:
            raise self._error(code, fn_id, text)

    # The names the per-instance entries fall back to.
    _py_dispatch = dispatch
    _py_call = call

    def _failed(self, code: int, fn_id: int, raising: bool) -> int:
        """A per-instance entry got a non-zero code: log the Lua error; return the code or raise."""
        code, text = self._dispatch_slow(code, fn_id, 0, 0, None, raising)
        if raising and code:
            raise self._error(code, fn_id, text)
        return code

    def _error(self, code: int, fn_id: int, text: str | None) -> LuaplugError:
        """The exception a failed call raises: a stale handle is explained when the cause is known."""
        hint = ""
        if code == _STALE:
            runtime = self._contract._runtime
            if runtime.closed:
                return RuntimeClosedError(
                    f"{self._contract.name}: the runtime is closed (called after Runtime.close())"
                )
            reg = runtime.registry.resolve(*self._contract.handle)
            if reg is not None and self._provider is not None and reg.provider is not self._provider:
                hint = (
                    f"bundle {reg.bundle_name!r} was reloaded and this instance belonged to its previous version:"
                    " create a new instance, or bind the typed proxy again (Runtime.bind)"
                )
        return _dispatch_error(code, self._contract.name, fn_id, text, hint)

    def _dispatch_result(
        self, fn_id: int, args: Any, out: Any, arena: CallArena | None, raising: bool = False
    ) -> tuple[int, str | None]:
        if fn_id.__class__ is not int:  # an engine may take a float for an int: validate here
            return self._dispatch_slow(-1, fn_id, args, out, arena, raising)
        a = 0 if arena is None else arena._address or _closed()
        try:
            # Only plain ints reach the engine: any other object is converted on
            # the slow path first (an engine handed a Python object may allocate
            # for it outside a protected call, and so fail, in a full VM).
            result = self._dispatcher(fn_id, self._id, args, out, a) if type(args) is int and type(out) is int else -1
        except TypeError:
            result = -1
        except (OverflowError, ValueError):  # argument conversion: the caller's error
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        if result == 0:
            return 0, None
        return self._dispatch_slow(result, fn_id, args, out, arena, raising)

    def _translate(self, exc: Exception) -> LuaplugError:
        if isinstance(exc, LuaplugError):
            return exc
        return self._provider.translate_error(exc) if self._provider is not None else LuaplugError(str(exc))

    def _dispatch_slow(
        self, result: Any, fn_id: int, args: Any, out: Any, arena: CallArena | None, raising: bool = False
    ) -> tuple[int, str | None]:
        # The slow path: pointers that were not plain integers, and failures. A Lua error is
        # logged at ERROR when only a code reports it (dispatch), at DEBUG when it is raised.
        if result == _NO_FUNCTION:
            _check_fn_id(fn_id)
        if result == -1:
            fn_id = _fn_id(fn_id)
            try:
                result = self._dispatcher(
                    fn_id, self._id, _address(args), _address(out), 0 if arena is None else arena.address
                )
            except TypeError as exc:
                raise TypeError(f"args, out and arena must be addresses: {exc}") from None
            except (OverflowError, ValueError):  # argument conversion: the caller's error
                raise
            except Exception as exc:
                raise self._translate(exc) from exc
            if result == 0:
                return 0, None
        if result.__class__ is tuple:
            text = error_text(result[1])
            log_call_failure(text, raised=raising)
            return int(result[0]), text
        if result == 1 and self._provider is not None:
            found = self._provider.last_error_text()
            if found is not None:
                log_call_failure(found, raised=raising)
                return 1, found
        return int(result), None

    def destroy(self) -> None:
        """Drop the instance's state in its VM (the default impl is never dropped)."""
        provider, self._provider = self._provider, None
        self._dispatcher = _stale
        # Back to the methods, which now answer StaleHandle without entering the VM.
        self.__dict__.pop("dispatch", None)
        self.__dict__.pop("call", None)
        if provider is not None and self._id:
            provider.destroy_instance(self._id)

    def __repr__(self) -> str:
        return f"<Instance {self._contract.name} #{self._id}>"


def _python_entries(inst: Instance, provider: ContractProvider) -> tuple[Callable[..., int], Callable[..., None]]:
    """``dispatch``/``call`` closures for ``inst`` over the provider's bound dispatch.

    Closures rather than methods: the call path reads only closure cells.
    Engines that cannot re-enter a running VM get the re-entry check: it
    costs one dict truth test unless Python code runs inside a Lua call.
    """
    fast = provider.bound_dispatcher(inst._id)
    blocked = provider.reentry_blocked
    translate = provider.translate_error
    inside = reentry.INSIDE
    slow = inst._dispatch_slow
    error = inst._error

    # dispatch and call share this body on purpose (a shared helper would be
    # one more Python frame on every call).
    def dispatch(fn_id: int, args: Any = 0, out: Any = 0, arena: CallArena | None = None) -> int:
        if inside and blocked is not None and blocked():
            return _REENTRANT
        if fn_id.__class__ is not int:  # an engine may take a float for an int: validate in slow
            return slow(-1, fn_id, args, out, arena)[0]
        try:
            # Fewer arguments are cheaper to convert: omitted pointers are null.
            # Only plain ints reach the engine (see Instance._dispatch_result).
            if type(args) is not int or type(out) is not int:
                result = -1
            elif arena is None:
                result = fast(fn_id, args, out) if out or args else fast(fn_id)
            else:
                result = fast(fn_id, args, out, arena._address or _closed())
        except TypeError:
            result = -1
        except (OverflowError, ValueError):  # argument conversion: the caller's error
            raise
        except Exception as exc:  # the engine's own exception: never let it escape
            raise translate(exc) from exc
        if result == 0:
            return 0
        return slow(result, fn_id, args, out, arena)[0]

    def call(fn_id: int, args: Any = 0, out: Any = 0, arena: CallArena | None = None) -> None:
        if inside and blocked is not None and blocked():
            result: Any = _REENTRANT
        elif fn_id.__class__ is not int:  # an engine may take a float for an int: validate in slow
            result = -1
        else:
            try:
                if type(args) is not int or type(out) is not int:
                    result = -1
                elif arena is None:
                    result = fast(fn_id, args, out) if out or args else fast(fn_id)
                else:
                    result = fast(fn_id, args, out, arena._address or _closed())
            except TypeError:
                result = -1
            except (OverflowError, ValueError):  # argument conversion: the caller's error
                raise
            except Exception as exc:
                raise translate(exc) from exc
            if result == 0:
                return
        code, text = slow(result, fn_id, args, out, arena, True)
        if code:
            raise error(code, fn_id, text)

    return dispatch, call


def _closed() -> int:
    raise ValueError("the arena is closed")


def _stale(*_args: object) -> int:
    return _STALE


class Contract:
    """A contract as a host sees it: resolved through a registry handle.

    The handle follows reloads (same generation); after an unload the
    contract is stale and :meth:`create_instance` raises.
    """

    def __init__(self, runtime: ContractSource, name: str, major: int, handle: tuple[int, int]) -> None:
        self._runtime = runtime
        self.contract_name = name
        self.major = major
        self._handle = handle
        self._default: Instance | None = None
        self._default_of: ContractProvider | None = None

    @property
    def name(self) -> str:
        """``"name@major"``."""
        return f"{self.contract_name}@{self.major}"

    @property
    def handle(self) -> tuple[int, int]:
        """``(index, generation)`` of the registry handle."""
        return self._handle

    def _provider(self) -> ContractProvider:
        reg = self._runtime.registry.resolve(*self._handle)
        if reg is None or reg.provider is None:
            raise ContractNotFoundError(self.contract_name, self.major)
        return reg.provider

    @property
    def interface_address(self) -> int:
        """Address of the contract's C ``GuestContractInterface`` (the registry's
        copy; its ``vm.call``/create/destroy pointers work from any caller).
        Cast it with your own FFI, e.g. ``luaplug.abi.ffi``. Valid while the
        current version stays registered.

        :raises ContractNotFoundError: the contract was unloaded
        """
        reg = self._runtime.registry.resolve(*self._handle)
        if reg is None:
            raise ContractNotFoundError(self.contract_name, self.major)
        return int(ffi.cast("uintptr_t", reg.iface))

    @property
    def provider(self) -> ContractProvider:
        """The provider currently behind the handle."""
        return self._provider()

    @property
    def plugin_name(self) -> str:
        return self._provider().plugin_name

    @property
    def function_count(self) -> int:
        return self._provider().function_count

    @property
    def default(self) -> Instance:
        """The default impl (instance id 0) of the current version."""
        provider = self._provider()
        if self._default is None or self._default_of is not provider:
            self._default = Instance(self, provider, 0)
            self._default_of = provider
        return self._default

    def create_instance(self) -> Instance:
        """A fresh instance (the contract's ``factory`` runs).

        :raises LuaplugError: when the factory failed (logged by the loader)
        """
        provider = self._provider()
        iid = provider.create_instance()
        if not iid:
            raise LuaplugError(f"create_instance of {self.name} failed (see the luaplug.loader log)")
        return Instance(self, provider, iid)

    def __repr__(self) -> str:
        return f"<Contract {self.name} handle={self._handle}>"
