"""Lifecycle events of a runtime (runtime-semantics "Reload and unload lifecycle").

A host subscribes with :meth:`luaplug.Runtime.on_event`; the callback receives one
:class:`Event` per phase, in the order the runtime went through them:

- reload: ``Preparing`` -> (dependents' own events) -> ``Reloaded``, or ``Failed`` with the reason;
- unload: ``Unloading``.

Callbacks never run while a runtime lock is held, and neither does the log sink
(runtime-semantics "Logging"): a runtime wraps its locked sections in :func:`deferring`, and
the events posted (:meth:`EventHub.post`) and the records logged (:func:`emit`) on that thread
meanwhile wait in ONE per-thread queue, delivered in the order they were made once the
outermost section ended, after the lock was released. A log record is built at once (its
time and content are those of the moment it was logged). A callback that raises is logged
(logger ``luaplug.events``) and the others still run; records and events of other threads
are never delayed.
"""

from __future__ import annotations

import enum
import functools
import logging
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Event", "EventCallback", "EventHub", "Phase", "defer_enter", "defer_exit", "deferring", "emit"]

_log: Final = logging.getLogger("luaplug.events")


class Phase(enum.IntEnum):
    """The phases of the reference's ``ReloadPhaseType``."""

    Preparing = 0
    Reloaded = 1
    Failed = 2
    Unloading = 3


@dataclass(frozen=True)
class Event:
    """One lifecycle event.

    :ivar phase: what happened
    :ivar bundle_id: ``bundle_id(bundle_name)``
    :ivar bundle_name: the bundle's manifest name
    :ivar reason: why a reload failed (``Failed`` only), else ``None``
    """

    phase: Phase
    bundle_id: int
    bundle_name: str
    reason: str | None = None


#: What :meth:`luaplug.Runtime.on_event` takes.
EventCallback = Callable[[Event], object]


# -- one deferred-delivery queue for events and log records ---------------------------------


class _Pending(threading.local):
    #: how many :func:`deferring` blocks this thread is in
    depth: int = 0
    #: what waits for the outermost block to end (``None`` outside any block)
    queue: list[Callable[[], None]] | None = None


_pending = _Pending()


def defer_enter() -> None:
    """Enter a :func:`deferring` block (pair with :func:`defer_exit`)."""
    p = _pending
    p.depth += 1
    if p.queue is None:
        p.queue = []


def defer_exit() -> None:
    """Leave a :func:`deferring` block: the outermost one delivers what waited, in order."""
    p = _pending
    p.depth -= 1
    if p.depth == 0:
        queue, p.queue = p.queue, None
        for deliver in queue or ():
            deliver()


class _Deferring:
    """The context manager :func:`deferring` returns (stateless: the state is per thread)."""

    __slots__ = ()

    def __enter__(self) -> None:
        defer_enter()

    def __exit__(self, *exc: object) -> None:
        defer_exit()


_DEFERRING: Final = _Deferring()


def deferring() -> AbstractContextManager[None]:
    """Hold this thread's events and :func:`emit` records until the outermost block exits,
    then deliver them in the order they were made.

    Enter it *before* taking the lock it protects, so delivery runs after the release.
    """
    return _DEFERRING


def _handle(logger: logging.Logger, record: logging.LogRecord) -> None:
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
    queue = _pending.queue
    if queue is None:
        logger.log(level, msg, *args, extra=extra, exc_info=exc_info, stacklevel=2)
        return
    record = logger.makeRecord(
        logger.name, level, "(luaplug)", 0, msg, args, sys.exc_info() if exc_info else None, extra=extra
    )
    queue.append(functools.partial(_handle, logger, record))


class EventHub:
    """A runtime's event subscribers; :meth:`post` delivers through the :func:`deferring` queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: tuple[EventCallback, ...] = ()

    def subscribe(self, callback: EventCallback) -> None:
        """Add ``callback`` (called once per event, in subscription order)."""
        if not callable(callback):
            raise TypeError(f"an event callback must be callable, not {callback!r}")
        with self._lock:
            self._callbacks = (*self._callbacks, callback)

    def unsubscribe(self, callback: EventCallback) -> bool:
        """Remove ``callback``; whether it was subscribed."""
        with self._lock:
            rest = list(self._callbacks)
            if callback not in rest:
                return False
            rest.remove(callback)
            self._callbacks = tuple(rest)
        return True

    @property
    def subscribed(self) -> bool:
        """Whether any callback is subscribed (an event posted now would reach someone)."""
        return bool(self._callbacks)

    def post(self, event: Event) -> None:
        """Deliver ``event`` now, or when this thread leaves its outermost :func:`deferring`."""
        queue = _pending.queue
        if queue is not None:
            queue.append(functools.partial(self._deliver, event))
        else:
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break the runtime or hide the others
                _log.error(
                    "event callback %r raised on %s of bundle %s",
                    callback,
                    event.phase.name,
                    event.bundle_name,
                    exc_info=True,
                )
