"""What a backend supplies: a Lua engine and its states.

The core drives every load through these few operations; a backend adds only
the engine and its fast dispatch path. Each state runs luaplug's host prelude
(``lua/luaplug_host.lua``) before any bundle code, and the prelude does the
dispatching, instance tables and init-result reading inside Lua, identically
for every engine.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Final

from .. import _libc
from ..abi import core_ffi as ffi
from ..contract import ContractProvider, FastCall
from ..errors import ErrorMap, LuaMemoryError, LuaplugError, LuaSyntaxError, map_errors
from ..reentry import CELL_DEPTH, CELL_LIVE, CELL_RETIRED, CELL_SLOTS, CELL_THREAD
from .interface import PythonBackedContract, python_interface

__all__ = [
    "CAP_MEMORY_LIMIT",
    "CAP_NESTED_SAME_BUNDLE",
    "CAP_PARALLEL_STATES",
    "CAP_REFUSES_BYTECODE",
    "ContractProvider",
    "Engine",
    "EngineState",
    "FastCall",
    "NO_NATIVE_ENTRY",
    "PRELUDE_PARTS",
    "StateOptions",
    "lua_errors",
    "native_entries",
    "prelude_source",
]

#: A call into another contract of the same bundle from inside a call works
#: (without it, such a call returns ``ReentrantCall``).
CAP_NESTED_SAME_BUNDLE: Final = "nested_same_bundle_calls"
#: Two bundles on two threads run Lua in parallel.
CAP_PARALLEL_STATES: Final = "parallel_states"
#: Precompiled bytecode chunks are refused.
CAP_REFUSES_BYTECODE: Final = "refuses_bytecode"
#: The engine caps a VM's memory (``StateOptions.memory_limit``); without it, the core
#: refuses a load that asks for a cap (:class:`~luaplug.errors.CapabilityError`).
CAP_MEMORY_LIMIT: Final = "memory_limit"


#: The environment variable that, set to anything but ``""`` or ``"0"``, makes every instance bound
#: after it is set use the pure-Python call path instead of a backend's compiled entry.
NO_NATIVE_ENTRY: Final = "LUAPLUG_NO_NATIVE_ENTRY"


def native_entries() -> bool:
    """Whether a backend binds its compiled per-instance entry (read at each binding)."""
    return os.environ.get(NO_NATIVE_ENTRY, "") in ("", "0")


#: The parts of the host prelude (``lua/luaplug_<part>.lua``): ``host`` runs first in every state;
#: ``harden`` (instruction budgets and untrusted mode) only in a state that gets either, through
#: the host part's ``load_part``.
PRELUDE_PARTS: Final = ("host", "harden")


@lru_cache(maxsize=len(PRELUDE_PARTS))
def prelude_source(part: str = "host") -> str:
    """Text of a part of the host prelude (``host``: the one every state runs first).

    :raises ValueError: ``part`` is not one of :data:`PRELUDE_PARTS`
    """
    if part not in PRELUDE_PARTS:
        raise ValueError(f"no prelude part {part!r}")
    # A plain file in the package (package data), read without importlib.resources or pathlib.
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "lua", f"luaplug_{part}.lua")
    with open(path, encoding="utf-8") as f:
        return f.read()


@dataclass(frozen=True)
class StateOptions:
    """Per-VM limits and restrictions (see ``Runtime.load``)."""

    #: bytes the VM may hold (everything Lua allocates, the prelude included); None: no cap
    memory_limit: int | None = None
    #: VM instructions per call into the bundle, with the JIT off; None: no budget
    instruction_limit: int | None = None
    #: run the bundle without os, io, debug, bytecode loading, C modules and the raw ffi
    untrusted: bool = False


DEFAULT_OPTIONS: Final = StateOptions()


def lua_errors(syntax: object, memory: object, *, catch: tuple[type[BaseException], ...] = ()) -> ErrorMap:
    """:func:`~luaplug.errors.map_errors` for an engine that reports a syntax error as ``syntax`` and
    running out of memory as ``memory`` (each a status code, a result kind or an exception class):
    those become ``LuaSyntaxError`` and ``LuaMemoryError``, anything else ``LuaError``."""
    return map_errors({syntax: LuaSyntaxError, memory: LuaMemoryError}, catch=catch)


#: What the prelude's ``run_chunk`` answers when a chunk fails (any other kind: ``LuaError``).
_CHUNK_ERRORS: Final = lua_errors("syntax", "memory")


class EngineState(ABC):
    """One Lua VM.

    The base class owns the state's ``cell`` (its slots: ``luaplug.reentry.CELL_*``):
    the thread running Lua in it, the depth, the retired flag and the live instance
    count (kept by the prelude's create/destroy).
    Subclasses create the VM and run :func:`prelude_source` in it; the core then calls the
    prelude's ``setup(host, cell_address, thread_fn_address, arena_alloc_address, capped)``
    and sets the package paths through the prelude.
    """

    #: address of a C ``uint64_t (double size, double arena, double host)`` serving spec §8's
    #: arena allocation for the prelude (0: the prelude's Lua implementation)
    arena_alloc_address: int = 0
    #: the ``bind`` of the backend's compiled per-instance entry (the C function ``luaplug_entry.h``
    #: puts on its module; a Python function set here needs ``staticmethod``), called as
    #: ``bind(state, instance, mode, *native_target(...))``; ``None``: the core's Python path
    native_bind: Callable[..., Any] | None = None

    def __init__(self) -> None:
        # SAFETY: the cell outlives the VM (it is freed with this object, and
        # the VM is closed before or with it).
        self.cell: Any = ffi.new("double[]", CELL_SLOTS)
        self.cell_address: int = int(ffi.cast("uintptr_t", self.cell))
        self.thread_fn_address: int = _libc.thread_id_function_address()

    def active_on_this_thread(self) -> bool:
        """Whether Lua code of this state is running on the calling thread."""
        cell = self.cell
        return bool(cell[CELL_DEPTH] != 0 and cell[CELL_THREAD] == threading.get_ident())

    def in_flight(self) -> bool:
        """Whether a call is running in this VM (on any thread)."""
        return bool(self.cell[CELL_DEPTH] != 0)

    def live_instances(self) -> int:
        """Live (non-default) instances over all contracts of this VM.

        Read from the cell, never by entering the VM: a call may be running.
        """
        return int(self.cell[CELL_LIVE])

    def retire(self) -> None:
        """Refuse every further call with ``StaleHandle`` (no Lua runs)."""
        self.cell[CELL_RETIRED] = 1.0

    @property
    def retired(self) -> bool:
        return bool(self.cell[CELL_RETIRED] != 0)

    def prelude_part(self, part: str) -> bytes:
        """Part ``part`` of the host prelude as this state's ``load_part`` takes it: bytecode of
        the engine's LuaJIT (made once per process), or source text (the default)."""
        return prelude_source(part).encode("utf-8")

    def run_chunk(self, source: str, chunk_name: str) -> None:
        """Compile (text mode) and run a chunk, through the prelude's ``run_chunk``
        (so messages, tracebacks and the instruction budget are the same on every engine).

        :raises LuaSyntaxError: it does not compile
        :raises LuaMemoryError: out of memory
        :raises LuaError: it raised
        """
        # The text goes in by address: the prelude copies it into the VM inside a protected
        # call, where a copy over the memory cap is an ordinary memory error.
        data = source.encode("utf-8")
        buf = ffi.from_buffer(data)
        self._chunk_result(self.call_prelude("run_chunk_at", int(ffi.cast("uintptr_t", buf)), len(data), chunk_name))

    @staticmethod
    def _chunk_result(res: tuple[Any, ...]) -> None:
        """Raise for what the prelude's ``run_chunk`` answered, unless it is ``ok``."""
        kind = res[0] if res else "error"
        if kind == "ok":
            return
        raise _CHUNK_ERRORS(kind, str(res[1]) if len(res) > 1 else "")

    @abstractmethod
    def call_prelude(self, entry: str, *args: int | str) -> tuple[Any, ...]:
        """Call prelude entry ``entry``; its results as Python scalars."""

    @abstractmethod
    def dispatcher(self, cidx: int) -> FastCall:
        """The fast dispatch of the prelude's contract ``cidx`` (1-based)."""

    def bound_dispatcher(self, cidx: int, instance_id: int) -> Callable[..., Any] | None:
        """:meth:`dispatcher` with the instance id bound, ``(fn_id, args=0, out=0, arena=0)``,
        when the engine can bind it more cheaply than a Python wrapper; default ``None``."""
        return None

    def native_entry(self, cidx: int, instance_id: int, instance: Any, mode: int) -> Any:
        """See :meth:`ContractProvider.native_entry`: :attr:`native_bind` over :meth:`native_target`,
        or ``None`` (the core's Python path) when either gives nothing or the state is closed."""
        bind = self.native_bind
        if bind is None or not native_entries():
            return None
        try:
            target = self.native_target(cidx, instance_id)
        except LuaplugError:
            return None  # closed meanwhile: the generic path answers StaleHandle
        return None if target is None else bind(self, instance, mode, *target)

    def native_target(self, cidx: int, instance_id: int) -> tuple[Any, int, int] | None:
        """What the compiled entry of instance ``instance_id`` of contract ``cidx`` calls, as
        ``bind``'s last three arguments (``luaplug_entry.h``): a bound dispatcher (a Python
        callable) or ``None``, and a C target's address and the instance id it takes; ``None``:
        no entry. Default: :meth:`bound_dispatcher`'s callable, when there is one."""
        fn = self.bound_dispatcher(cidx, instance_id)
        return None if fn is None else (fn, 0, 0)

    def interface(self, provider: ContractProvider, cidx: int) -> Any:
        """A ``GuestContractInterface*`` for contract ``cidx`` with working pointers; by default
        pointers that call back into Python (the core's contracts are ``PythonBackedContract``)."""
        assert isinstance(provider, PythonBackedContract)
        return python_interface(provider)

    def engine_error(self, exc: BaseException) -> BaseException:
        """An exception raised by one of the engine's own callables (a C peer interface calls
        them directly) as :meth:`call_prelude` would raise it; default: unchanged."""
        return exc

    def last_error_text(self) -> str | None:
        """The calling thread's last Lua error text, when :meth:`dispatcher`
        returns bare codes (default: the text comes with the result)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Free the VM. Called once no call can be in flight on it."""


class Engine(ABC):
    """A backend's Lua engine (one per runtime)."""

    #: backend name (the entry-point name)
    name: ClassVar[str]
    #: capability names (``CAP_*``)
    capabilities: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def new_state(self, *, host_address: int, bundle: str, options: StateOptions = DEFAULT_OPTIONS) -> EngineState:
        """A fresh LuaJIT state with the standard libraries, ``ffi``, ``bit`` and
        ``jit``, the host prelude loaded (the core calls its ``setup`` next), and nothing
        else reachable.

        The engine applies ``options.memory_limit`` (its allocator; the core passes
        one only to an engine with ``CAP_MEMORY_LIMIT``); the core applies the rest
        through the prelude.

        :raises LuaplugError: when no state could be made
        """

    @abstractmethod
    def lua_version(self) -> str:
        """The engine's LuaJIT version string."""
