"""Lifecycle events of a runtime (runtime-semantics "Reload and unload lifecycle").

A host subscribes with :meth:`luaplug.Runtime.on_event`; the callback receives one
:class:`Event` per phase, in the order the runtime went through them:

- reload: ``Preparing`` -> (dependents' own events) -> ``Reloaded``, or ``Failed`` with the reason;
- unload: ``Unloading``.

Callbacks never run while a runtime lock is held: events raised inside a locked section
are queued per thread and delivered, in order, once the outermost section released the
lock. A callback that raises is logged (logger ``luaplug.events``) and the others still run.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

__all__ = ["Event", "EventCallback", "EventHub", "Phase"]

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
