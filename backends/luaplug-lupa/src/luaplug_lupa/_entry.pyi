from typing import Any

class Entry:
    """A per-instance ``dispatch``/``call`` of the lupa backend (see ``_entry.c``)."""

    def __call__(self, fn_id: int, args: Any = 0, out: Any = 0, arena: Any = None) -> Any: ...

def bind(target: Any, cell_address: int, owner: object, instance: object, mode: int) -> Entry:
    """The entry of ``instance`` over ``target`` (mode 0: ``dispatch``, 1: ``call``)."""
