from collections.abc import Callable
from typing import Any

class Entry:
    """The binding behind an instance's ``dispatch``/``call`` (luaplug_entry.h, compiled for the lupa backend)."""

def bind(owner: object, instance: object, mode: int, target: Any, data: int, instance_id: int) -> Callable[..., Any]:
    """The ``dispatch`` (mode 0) or ``call`` (mode 1) of ``instance`` over ``target``: a builtin whose
    ``__self__`` is an :class:`Entry`."""
