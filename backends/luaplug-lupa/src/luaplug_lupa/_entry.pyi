from collections.abc import Callable
from typing import Any

class Entry:
    """The binding behind an instance's ``dispatch``/``call`` (luaplug_entry.h, compiled for the lupa backend)."""

def bind(owner: object, instance: object, mode: int, target: Any, data: int, instance_id: int) -> Callable[..., Any]:
    """The ``dispatch`` (mode 0) or ``call`` (mode 1) of ``instance`` over ``target``: a builtin whose
    ``__self__`` is an :class:`Entry`."""

class Peer:
    """The ``loader_data`` of a contract's C interface (luaplug_entry.h's peer section)."""

    @property
    def address(self) -> int: ...

def peer(
    provider: object,
    state: object,
    cidx: int,
    contract_id: int,
    guard: bool,
    entries: dict[str, Any] | None,
) -> Peer:
    """The ``loader_data`` of contract ``cidx``'s C interface, calling ``provider``."""

def peer_functions() -> tuple[int, int, int]:
    """The addresses of the C ``create_instance``, ``destroy_instance`` and ``dispatch.vm.call``."""

def lookups_new(host_size: int, py_find: int, py_resolve: int) -> int:
    """A HostApi's peer-lookup table (its address; 0 without memory), falling back to the callbacks."""

def lookups_free(table: int) -> None:
    """Free a table ``lookups_new`` made."""

def lookups_stale(table: int) -> None:
    """Lookups go through the Python callbacks until the next ``lookups_publish``."""

def lookups_route_python(table: int, delta: int) -> None:
    """While the count is positive, lookups go through the Python callbacks."""

def lookups_publish(table: int, rows: bytes, slots: bytes) -> bool:
    """Replace the table's content (``=QIIII`` rows, ``@NII`` slots); False without memory."""

def lookups_functions() -> tuple[int, int, int, int]:
    """The addresses of the C ``find``, ``resolve``, ``create`` and ``destroy`` of the HostApi."""

def wait_begin(cell_address: int, /) -> int:
    """0: the calling thread's wait on the VM of that prelude cell is recorded; -1: it would deadlock."""

def wait_end() -> None:
    """End the calling thread's latest wait (begun with a 0 of :func:`wait_begin`)."""

def wait_functions() -> tuple[int, int]:
    """The addresses of :func:`wait_begin` and :func:`wait_end` in C."""
