"""Python code running inside a Lua call, and the re-entry it may attempt.

Some engines (lupa) cannot re-enter a Lua state that is running: a Python
host call into such a state from a callback the state itself made (a log
handler, a host service) must get ``ReentrantCall`` instead of entering it.
Checking on every call would cost the hot path, so the callbacks that run
arbitrary Python code mark their thread in :data:`INSIDE` while they run,
and a call path checks the exact condition only when that dict is not empty.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["CELL_DEPTH", "CELL_LIVE", "CELL_RETIRED", "CELL_SLOTS", "CELL_THREAD", "INSIDE", "user_code"]

# The slots of a VM's cell, the ``double[4]`` an EngineState owns and the prelude maintains
# (named alike in luaplug_host.lua and luaplug_entry.h). Read without entering the VM.
#: id of the thread running Lua in the VM (0: none; the prelude's ``tonumber(pthread_self())``)
CELL_THREAD: Final = 0
#: nesting depth of the calls running in the VM
CELL_DEPTH: Final = 1
#: non-zero once the VM is retired: every call answers ``StaleHandle`` without running Lua
CELL_RETIRED: Final = 2
#: live (non-default) instances over all contracts of the VM
CELL_LIVE: Final = 3
CELL_SLOTS: Final = 4

#: thread id -> nesting depth of user callbacks running inside a Lua call.
#: Truthy while any thread runs one (a plain dict: its truth test is the
#: cheapest check a call path can make).
INSIDE: Final[dict[int, int]] = {}
_lock: Final = threading.Lock()


@contextmanager
def user_code() -> Iterator[None]:
    """Mark the calling thread while Python code of the host runs inside a Lua call."""
    tid = threading.get_ident()
    with _lock:
        INSIDE[tid] = INSIDE.get(tid, 0) + 1
    try:
        yield
    finally:
        with _lock:
            depth = INSIDE[tid] - 1
            if depth:
                INSIDE[tid] = depth
            else:
                del INSIDE[tid]
