"""Log records held back while a runtime lock is held.

runtime-semantics (Logging): the log sink is never called while a runtime
lock is held. A runtime wraps its locked sections in :func:`deferring`; any
record produced on that thread meanwhile — a guest's ``HostApi.log`` during
``polyplug_init``, the runtime's own warnings — is built at once (so its
time and content are those of the event) and handed to the handlers when the
outermost section ends, after the lock was released.

The queue is thread-local: records of other threads are never delayed.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["deferring", "emit"]


class _State(threading.local):
    queue: list[tuple[logging.Logger, logging.LogRecord]] | None = None


_state = _State()


@contextmanager
def deferring() -> Iterator[None]:
    """Hold this thread's :func:`emit` records until the outermost block exits.

    Enter it *before* taking the lock it protects, so the flush runs after the
    lock's release.
    """
    if _state.queue is not None:
        yield
        return
    queue: list[tuple[logging.Logger, logging.LogRecord]] = []
    _state.queue = queue
    try:
        yield
    finally:
        _state.queue = None
        for logger, record in queue:
            try:
                logger.handle(record)
            except Exception:  # a broken handler must not hide the others or the result
                logging.getLogger("luaplug").exception("a log handler raised")


def emit(
    logger: logging.Logger,
    level: int,
    msg: str,
    *args: object,
    extra: dict[str, Any] | None = None,
    exc_info: bool = False,
) -> None:
    """``logger.log(level, msg, *args)``, deferred when this thread is inside :func:`deferring`."""
    if not logger.isEnabledFor(level):
        return
    queue = _state.queue
    if queue is None:
        logger.log(level, msg, *args, extra=extra, exc_info=exc_info, stacklevel=2)
        return
    record = logger.makeRecord(
        logger.name, level, "(luaplug)", 0, msg, args, sys.exc_info() if exc_info else None, extra=extra
    )
    queue.append((logger, record))
