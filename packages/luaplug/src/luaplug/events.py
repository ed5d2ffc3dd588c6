"""Lifecycle events of a runtime (runtime-semantics "Reload and unload lifecycle").

A host subscribes with :meth:`luaplug.Runtime.on_event`; the callback receives one
:class:`Event` per phase, in the order the runtime went through them:

- reload: ``Preparing`` -> (dependents' own events) -> ``Reloaded``, or ``Failed`` with the reason;
- unload: ``Unloading``.

Callbacks never run while a runtime lock is held: events raised inside a locked section
are queued per thread and delivered, in order, once the outermost section released the
lock (:class:`EventHub`, in ``_eventhub``: a runtime creates one, and imports this module
with the first event it posts). A callback that raises is logged (logger
``luaplug.events``) and the others still run.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ._eventhub import EventHub

__all__ = ["Event", "EventCallback", "EventHub", "Phase"]


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
