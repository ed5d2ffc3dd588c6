"""Python exceptions raised by host contract functions, kept for the error they cause.

A host function that raises hands the guest ``HostContractCallFailed`` and a text naming the
exception. When the guest then fails its own call with an error that carries that text (as
``assert(store:get(key))`` or ``error(err)`` do), the :class:`~luaplug.DispatchError` raised
to the Python caller chains the original exception (``__cause__``).

Per thread, the newest few failures are kept; a match is removed when it is taken.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Final

__all__ = ["record", "take"]

_KEEP: Final = 8
_local: Final = threading.local()


def record(text: str, exc: BaseException) -> None:
    """Remember that a host function failed on this thread with ``exc``, reported as ``text``."""
    kept: deque[tuple[str, BaseException]] | None = getattr(_local, "kept", None)
    if kept is None:
        kept = _local.kept = deque(maxlen=_KEEP)
    kept.append((text, exc))


def take(lua_error: str | None) -> BaseException | None:
    """The newest exception recorded on this thread whose text ``lua_error`` carries (removed)."""
    kept: deque[tuple[str, BaseException]] | None = getattr(_local, "kept", None)
    if not kept or not lua_error:
        return None
    for i in range(len(kept) - 1, -1, -1):
        text, exc = kept[i]
        if text in lua_error:
            del kept[i]
            return exc
    return None
