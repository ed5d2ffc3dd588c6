"""Delivery of a runtime's lifecycle events (:mod:`luaplug.events`).

Every runtime has an :class:`EventHub`; the event types themselves are imported with
the first event posted, not when a runtime is created.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .events import Event, EventCallback

__all__ = ["EventHub"]

_log: Final = logging.getLogger("luaplug.events")


class _Pending(threading.local):
    depth: int = 0
    queue: list[Event] | None = None


class EventHub:
    """Subscribers and the per-thread queue of events raised under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: tuple[EventCallback, ...] = ()
        self._pending = _Pending()

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

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Hold this thread's events until the outermost block exits, then deliver them.

        Enter it before taking the lock it protects, so delivery runs after the release.
        """
        p = self._pending
        p.depth += 1
        if p.queue is None:
            p.queue = []
        try:
            yield
        finally:
            p.depth -= 1
            if p.depth == 0:
                queue, p.queue = p.queue, None
                if queue:
                    self._deliver(queue)

    def post(self, event: Event) -> None:
        """Deliver ``event`` now, or when this thread leaves its outermost :meth:`deferring`."""
        queue = self._pending.queue
        if queue is not None:
            queue.append(event)
        else:
            self._deliver([event])

    def _deliver(self, events: list[Event]) -> None:
        callbacks = self._callbacks
        for event in events:
            for callback in callbacks:
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
