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
  (writers retire *before* deferring). Every luaplug call path does this: the
  VM's count of calls in flight (below) is its pin, and a retired VM refuses
  the call with ``StaleHandle``.
* Garbage stays bounded: a bucket is forgotten once empty, and pending
  functions are dropped as soon as they run.
* Engines pin without Python: the host prelude counts the calls in flight on
  a VM in C memory. Reclaiming a VM is deferred with ``busy=`` that reads
  this count; a retired VM takes no new calls, so the count only falls and
  the wait is bounded. The Python host's call path takes no Python-level pin.
* Reclamation that can wait (a VM a reload superseded) is *retired* rather
  than deferred: it joins a batch of at most :data:`RETIRE_BATCH` entries,
  which is deferred as a whole when full or at :meth:`Collector.collect`.
  Deferring later only waits for more pins, never fewer, so a batched entry
  still runs after every pin active at its ``retire``; at most
  ``RETIRE_BATCH - 1`` entries wait in a batch, so nothing leaks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final, final

__all__ = ["RETIRE_BATCH", "Collector", "Guard", "collect", "default_collector", "defer", "pin"]

_log = logging.getLogger("luaplug.epoch")

#: How many retired entries a batch collects before it is deferred.
RETIRE_BATCH: Final = 32

_Entry = tuple[tuple[list[None], ...], Callable[[], object], Callable[[], bool] | None]


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

    __slots__ = ("_bucket", "_lock", "_pending", "_retired", "_watch")

    def __init__(self) -> None:
        #: The bucket new pins go to. Hot paths read it directly:
        #: ``b = c._bucket; b.append(None); try: ... finally: b.pop()``.
        self._bucket: list[None] = []
        self._lock = threading.Lock()
        self._watch: list[list[None]] = []
        self._pending: list[_Entry] = []
        #: the batch of :meth:`retire`: ``(fn, busy)`` not deferred yet
        self._retired: list[tuple[Callable[[], object], Callable[[], bool] | None]] = []

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
        self._defer_all([(fn, busy)])

    def retire(self, fn: Callable[[], object], *, busy: Callable[[], bool] | None = None) -> None:
        """:meth:`defer` ``fn`` in a batch: the batch is deferred once it holds
        :data:`RETIRE_BATCH` entries, or by the next :meth:`collect`.

        For reclamation that need not happen now (a superseded VM): the caller
        pays one deferral per batch instead of one per object.
        """
        with self._lock:
            self._retired.append((fn, busy))
            if len(self._retired) < RETIRE_BATCH:
                return
            batch, self._retired = self._retired, []
        self._defer_all(batch)

    def _defer_all(self, fns: list[tuple[Callable[[], object], Callable[[], bool] | None]]) -> None:
        """:meth:`defer` each of ``fns`` behind the same pins (one rotation, one collection)."""
        with self._lock:
            self._enqueue_locked(fns)
        self._collect_ready()

    def _enqueue_locked(self, fns: list[tuple[Callable[[], object], Callable[[], bool] | None]]) -> None:
        # Rotate the current bucket out: the entries wait for it and every older non-empty one.
        old = self._bucket
        self._bucket = []
        self._watch.append(old)
        waits = tuple(b for b in self._watch if b)
        self._pending.extend((waits, fn, busy) for fn, busy in fns)

    def collect(self) -> int:
        """Defer the batch of :meth:`retire`, then run every deferred function whose pins are all released.

        :returns: how many functions ran
        """
        with self._lock:
            if self._retired:
                batch, self._retired = self._retired, []
                self._enqueue_locked(batch)
        return self._collect_ready()

    def _collect_ready(self) -> int:
        """Run every deferred function whose pins are all released (the batch of :meth:`retire` waits)."""
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

    def release(self, keepalives: list[list[object]], *, batched: bool = False) -> None:
        """Empty every list in ``keepalives`` once every pin active now has been released.

        For memory a guest may still point into (an interface it resolved, an
        argument it holds) while a pinned call runs: the lists own it.

        :param batched: :meth:`retire` the release (with a batch) instead of deferring it
        """
        if keepalives:

            def drop() -> None:
                for keep in keepalives:
                    keep.clear()

            if batched:
                self.retire(drop)
            else:
                self.defer(drop)

    @property
    def pending(self) -> int:
        """How many deferred or retired functions have not run yet."""
        return len(self._pending) + len(self._retired)

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
