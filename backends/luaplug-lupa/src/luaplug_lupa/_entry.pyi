from typing import Any

class Entry:
    """A per-instance ``dispatch``/``call`` (luaplug_entry.h, compiled for the lupa backend)."""

    def __call__(self, fn_id: int, args: Any = 0, out: Any = 0, arena: Any = None) -> Any: ...

def bind(owner: object, instance: object, mode: int, target: Any, data: int, instance_id: int) -> Entry:
    """The entry of ``instance`` over ``target`` (mode 0: ``dispatch``, 1: ``call``)."""
