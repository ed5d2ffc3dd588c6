"""Epoch-based deferred reclamation.

A reader *pins* before it touches a shared object and unpins when done; a
writer that retires an object *defers* its reclamation, which runs once every
pin that was active at the time of the ``defer`` has been released, on any
thread, exactly once.

Invariants:

* Pins live in *buckets* (plain lists; ``append``/``pop`` are atomic under
  the GIL, so pinning takes no lock and costs two C-level list operations).
  ``defer`` rotates the current bucket out and records every bucket that is
  still non-empty; the deferred function runs when all of them are empty.
* A reader may load the current bucket just before a rotation and append to
  it after the deferred function already ran. Readers must therefore pin
  *first* and only then check whether the object they reach was retired
  (writers retire *before* deferring). Every luaplug call path does this: it
  pins, then the engine refuses a retired VM with ``StaleHandle``.
* Garbage stays bounded: a bucket is forgotten once empty, and pending
  functions are dropped as soon as they run.
* Engines pin without Python: the host prelude counts the calls in flight on
  a VM in C memory. Reclaiming a VM is deferred with ``busy=`` that reads
  this count; a retired VM takes no new calls, so the count only falls and
  the wait is bounded. This keeps the Python host's call path free of any
  Python-level pin (two list operations cost a quarter of a lupa call).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final, final

__all__ = ["Collector", "Guard", "collect", "default_collector", "defer", "pin"]

_log = logging.getLogger("luaplug.epoch")


@final
class Guard:
    """An active pin; release it with :meth:`release` or a ``with`` block."""

    __slots__ = ("_bucket",)

    def __init__(self, bucket: list[None]) -> None:
        self._bucket: list[None] | None = bucket

    def release(self) -> None:
        """Release the pin (idempotent)."""
        bucket = self._bucket
        if bucket is not None:
            self._bucket = None
            bucket.pop()

    def __enter__(self) -> Guard:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


@final
class Collector:
    """One epoch domain: pins, deferred functions and their collection."""

    __slots__ = ("_bucket", "_lock", "_pending", "_watch")

    def __init__(self) -> None:
        #: The bucket new pins go to. Hot paths read it directly:
        #: ``b = c._bucket; b.append(None); try: ... finally: b.pop()``.
        self._bucket: list[None] = []
        self._lock = threading.Lock()
        self._watch: list[list[None]] = []
        self._pending: list[tuple[tuple[list[None], ...], Callable[[], object], Callable[[], bool] | None]] = []

    def pin(self) -> Guard:
        """Pin the current epoch; the returned guard must be released."""
        bucket = self._bucket
        bucket.append(None)
        return Guard(bucket)

    def defer(self, fn: Callable[[], object], *, busy: Callable[[], bool] | None = None) -> None:
        """Run ``fn`` once every pin active now has been released.

        Runs it at once (on this thread) when nothing is pinned.

        :param busy: an extra pin outside Python (e.g. a VM's in-flight count):
            while it returns true, ``fn`` keeps waiting; it is asked again at
            every :meth:`collect`, so it must only ever go from true to false
        """
        with self._lock:
            old = self._bucket
            self._bucket = []
            self._watch.append(old)
            waits = tuple(b for b in self._watch if b)
            self._pending.append((waits, fn, busy))
        self.collect()

    def collect(self) -> int:
        """Run every deferred function whose pins are all released.

        :returns: how many functions ran
        """
        with self._lock:
            self._watch = [b for b in self._watch if b]
            ready: list[Callable[[], object]] = []
            keep = []
            for entry in self._pending:
                if any(entry[0]) or (entry[2] is not None and entry[2]()):
                    keep.append(entry)
                else:
                    ready.append(entry[1])
            self._pending = keep
        for fn in ready:
            try:
                fn()
            except Exception:  # a reclaimer must not break the caller
                _log.exception("deferred reclamation failed")
        return len(ready)

    def release(self, keepalives: list[list[object]]) -> None:
        """Empty every list in ``keepalives`` once every pin active now has been released.

        For memory a guest may still point into (an interface it resolved, an
        argument it holds) while a pinned call runs: the lists own it.
        """
        if keepalives:

            def drop() -> None:
                for keep in keepalives:
                    keep.clear()

            self.defer(drop)

    @property
    def pending(self) -> int:
        """How many deferred functions wait for pins to be released."""
        return len(self._pending)

    @property
    def pinned(self) -> int:
        """How many pins are active (in every tracked bucket)."""
        with self._lock:
            return len(self._bucket) + sum(len(b) for b in self._watch)


#: The process-wide collector used by runtimes unless told otherwise.
default_collector: Final = Collector()


def pin() -> Guard:
    """Pin the default collector."""
    return default_collector.pin()


def defer(fn: Callable[[], object], *, busy: Callable[[], bool] | None = None) -> None:
    """Defer ``fn`` on the default collector."""
    default_collector.defer(fn, busy=busy)


def collect() -> int:
    """Collect on the default collector."""
    return default_collector.collect()
