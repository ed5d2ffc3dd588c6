"""The lock-order graph of peer-call waits (luaplug_entry.h's graph section, compiled into
luaplug-lupa) and which graph a process uses (``luaplug.backend.loader.set_wait_graph``).

A host with lupa alone records its peer waits in the core header's C graph; luaplug-cffi's graph
replaces it when that engine is imported, never the other way round; a wait ends in the graph it
began in. The cases that depend on what a process imported run in a child process (a hang is a
failed test, bounded by the kit's timeout; nothing here measures time).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.reentry import CELL_DEPTH, CELL_THREAD
from luaplug.testing.test_limits_attacks import HANG_TIMEOUT, MUTUAL, run_attack


def _entry() -> Any:
    return pytest.importorskip("luaplug_lupa._entry")


def _needs(*backends: str) -> None:
    missing = [name for name in backends if name not in luaplug.available_backends()]
    if missing:
        pytest.skip(f"needs the {', '.join(missing)} backend")


# -- the graph itself, through its Python and its C functions --------------------------------------


class _Thread:
    """A thread running what it is given, one function at a time: its waits stay open between them."""

    def __init__(self) -> None:
        self._todo: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self._done: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.ident: int = self.run(threading.get_ident)

    def _serve(self) -> None:
        while (fn := self._todo.get()) is not None:
            try:
                self._done.put((True, fn()))
            except BaseException as exc:  # handed to the test thread
                self._done.put((False, exc))

    def run(self, fn: Callable[[], Any]) -> Any:
        self._todo.put(fn)
        ok, value = self._done.get(timeout=HANG_TIMEOUT)
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self._todo.put(None)
        self._thread.join(HANG_TIMEOUT)


@pytest.fixture
def other() -> Iterator[_Thread]:
    thread = _Thread()
    yield thread
    thread.stop()


def _cell(holder: int = 0) -> Any:
    """A prelude cell: a VM run by thread ``holder`` (0: idle)."""
    cell = ffi.new("double[4]")
    cell[CELL_THREAD], cell[CELL_DEPTH] = float(holder), 1.0 if holder else 0.0
    return cell


def _addr(cell: Any) -> int:
    return int(ffi.cast("uintptr_t", cell))


def _graphs() -> list[tuple[str, Callable[[int], int], Callable[[], None]]]:
    entry = _entry()
    begin, end = entry.wait_functions()
    return [
        ("python", entry.wait_begin, entry.wait_end),
        ("c", ffi.cast("int (*)(uintptr_t)", begin), ffi.cast("void (*)(void)", end)),
    ]


@pytest.mark.parametrize("which", ["python", "c"])
def test_the_graph_refuses_a_wait_on_a_vm_the_calling_thread_runs(which: str) -> None:
    _, begin, end = next(g for g in _graphs() if g[0] == which)
    mine, idle = _cell(threading.get_ident()), _cell()
    assert begin(_addr(mine)) == -1  # it would wait for itself
    assert begin(_addr(idle)) == 0
    end()
    assert begin(_addr(mine)) == -1


@pytest.mark.parametrize("which", ["python", "c"])
def test_the_graph_refuses_the_wait_that_closes_a_cycle_through_another_threads_latest_wait(
    which: str, other: _Thread
) -> None:
    """This thread runs VM a, the other thread runs VM b and waits on a: this thread waiting on b
    would close a cycle. Waits nest: while the other thread's latest wait is on idle VMs (deeper
    than the thread's own nodes go) there is no cycle, and once it ends them its wait on a counts again."""
    _, begin, end = next(g for g in _graphs() if g[0] == which)
    a, b = _cell(threading.get_ident()), _cell(other.ident)
    idle = [_cell() for _ in range(7)]
    opened = 0
    try:
        assert other.run(lambda: begin(_addr(a))) == 0
        opened += 1
        assert begin(_addr(b)) == -1
        for cell in idle:
            assert other.run(lambda cell=cell: begin(_addr(cell))) == 0
            opened += 1
            assert begin(_addr(b)) == 0  # the other thread's latest wait is on an idle VM
            end()
        while opened > 1:
            other.run(end)
            opened -= 1
            assert begin(_addr(b)) == (-1 if opened == 1 else 0)
            if opened > 1:
                end()
        other.run(end)
        opened = 0
        assert begin(_addr(b)) == 0  # the other thread waits on nothing
        end()
    finally:
        for _ in range(opened):
            other.run(end)


def test_the_graph_ends_nothing_for_a_thread_without_an_open_wait(other: _Thread) -> None:
    entry = _entry()
    a, b = _cell(threading.get_ident()), _cell(other.ident)
    assert other.run(lambda: entry.wait_begin(_addr(a))) == 0
    try:
        entry.wait_end()  # this thread has no open wait: the other thread's stays recorded
        assert entry.wait_begin(_addr(b)) == -1
    finally:
        other.run(entry.wait_end)
    assert entry.wait_begin(_addr(b)) == 0
    entry.wait_end()


@pytest.mark.parametrize("bad", [0, -1, 2**64, "1", 1.0, None])
def test_the_graph_refuses_what_is_not_a_cell_address(bad: object) -> None:
    with pytest.raises(ValueError, match="cell_address"):
        _entry().wait_begin(bad)


# -- a process with lupa alone ----------------------------------------------------------------------

# The two sides of MUTUAL on lupa, in ROUNDS rounds of mutual peer calls from two threads, then
# one call each way from one thread; the C graph's registration first, cffi's absence last.
LUPA_ONLY = """
from concurrent.futures import ThreadPoolExecutor
from luaplug.backend.loader import wait_graph_address
P, Q, ROUNDS = @P@, @Q@, 3
with luaplug.Runtime("lupa") as rt:
    from luaplug_lupa import _entry
    slots = ffi.cast("uintptr_t*", wait_graph_address())
    print(slots[0] != 0 and (int(slots[0]), int(slots[1])) == _entry.wait_functions())
    rt.load_code(P, "p")
    rt.load_code(Q, "q")
    flags = ffi.new("int32_t[4]")
    addr = int(ffi.cast("uintptr_t", flags))
    meet = lambda name: int(rt.contract(name).default.dispatch(0, addr))
    with ThreadPoolExecutor(2) as pool:  # both calls at once: each waits for the other to start
        for _ in range(ROUNDS):
            flags[0:4] = [0, 0, 0, 0]
            print(*pool.map(meet, ["atk.P@1", "atk.Q@1"]), sorted([flags[2], flags[3]]))
    for me, name in enumerate(["atk.P@1", "atk.Q@1"]):
        flags[0:4] = [me, 1 - me, 0, 0]  # the other side counts as started: one call alone
        print(meet(name), flags[2 + me])
print(sorted(m for m in sys.modules if m.partition(".")[0] == "luaplug_cffi"))
"""


def test_a_lupa_only_host_refuses_mutual_peer_calls_in_the_core_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without luaplug-cffi (never imported in the child) the C graph of luaplug_entry.h is
    registered, and mutual peer calls between two lupa bundles on two threads fail one call
    with ReentrantCall (9) in every round instead of hanging; calls in one direction pass."""
    _needs("lupa")
    _entry()
    monkeypatch.setenv("LUAPLUG_DISABLED_BACKENDS", "cffi")
    monkeypatch.delenv("LUAPLUG_NO_NATIVE_ENTRY", raising=False)
    p = MUTUAL.replace("@ME@", "0").replace("@OWN@", "atk.P").replace("@OTHER@", "atk.Q")
    q = MUTUAL.replace("@ME@", "1").replace("@OWN@", "atk.Q").replace("@OTHER@", "atk.P")
    out = run_attack("lupa", LUPA_ONLY.replace("@P@", repr(p)).replace("@Q@", repr(q)))
    assert out.splitlines() == ["True", *["0 0 [0, 9]"] * 3, "0 0", "0 0", "[]"], out


# -- which graph a process uses -------------------------------------------------------------------

# The graph registered (named by its C addresses) before any runtime, with a runtime on BACKEND,
# with one on @SECOND@ too; then what a registration with replace=False does.
ORDER = """
from luaplug.backend.loader import set_wait_graph, wait_graph_address
slots = ffi.cast("uintptr_t*", wait_graph_address())

def registered():
    names = {}
    if "luaplug_lupa.engine" in sys.modules:
        names[sys.modules["luaplug_lupa.engine"]._entry.wait_functions()] = "lupa"
    if "luaplug_cffi.engine" in sys.modules:
        cffi_engine = sys.modules["luaplug_cffi.engine"]
        address = lambda name: int(cffi_engine.ffi.cast("uintptr_t", cffi_engine.ffi.addressof(cffi_engine.lib, name)))
        names[(address("lp_foreign_wait_begin"), address("lp_foreign_wait_end"))] = "cffi"
    found = (int(slots[0]), int(slots[1]))
    return names.get(found, "none" if found == (0, 0) else repr(found))

print(registered())
with luaplug.Runtime(BACKEND) as one:
    print(registered())
    with luaplug.Runtime("@SECOND@") as two:
        print(registered())
print(set_wait_graph(lambda cell: 0, lambda: None, addresses=(1, 2), replace=False), registered())
"""


@pytest.mark.parametrize(("first", "second"), [("lupa", "cffi"), ("cffi", "lupa")])
def test_cffis_graph_replaces_lupas_and_lupas_replaces_none(
    first: str, second: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each engine registers its graph when it is imported; luaplug-cffi's (which also sees its
    own VM locks) replaces lupa's, lupa's replaces none: whichever comes first, cffi's serves
    once both are in. A registration with replace=False changes nothing then."""
    _needs("lupa", "cffi")
    _entry()
    monkeypatch.delenv("LUAPLUG_NO_NATIVE_ENTRY", raising=False)
    out = run_attack(first, ORDER.replace("@SECOND@", second))
    assert out.splitlines() == ["none", first, "cffi", "False cffi"], out


# -- a wait ends where it began ---------------------------------------------------------------------

# A wait begun in the Python table, in graph a, through a contract in graph b; each ended after
# another graph was registered. The graphs log their calls.
TOKENS = """
import threading
from types import SimpleNamespace
from luaplug.backend import loader
print(loader._wait_graph is None)
cell = ffi.new("double[4]")
state = SimpleNamespace(cell=cell, cell_address=int(ffi.cast("uintptr_t", cell)))
calls = []

def graph(name):
    def begin(address):
        calls.append(f"{name}.begin")
        return 0
    return begin, lambda: calls.append(f"{name}.end")

token = loader._wait_for(state)
print(loader._waiting == {threading.get_ident(): state})
loader.set_wait_graph(*graph("a"))
loader._done_waiting(token)
print(loader._waiting, calls)
token = loader._wait_for(state)
loader.set_wait_graph(*graph("b"))
loader._done_waiting(token)
print(calls)
contract = object.__new__(loader.EngineContract)
contract.state, contract._guard_reentry = state, True
token = contract._wait()
loader.set_wait_graph(*graph("c"))
loader._done_waiting(token)
print(calls)
"""


def test_a_wait_ends_in_the_graph_it_began_in_when_another_is_registered_meanwhile() -> None:
    """The token of a wait remembers where it was recorded (the Python table, or a graph), so a
    graph registered between begin and end (luaplug-cffi imported during a peer call) neither
    gets an end it never began nor leaves the first graph with a wait that never ends."""
    out = run_attack("lupa", TOKENS)
    assert out.splitlines() == [
        "True",
        "True",
        "{} []",
        "['a.begin', 'a.end']",
        "['a.begin', 'a.end', 'b.begin', 'b.end']",
    ], out
