"""HostApi bundle operations called by guests (list_bundles, find_all_guest_contracts,
get_dependencies, load_bundle, reload_bundle, unload_bundle, register_loader).

Every case runs Lua through the ``hostops`` bundle (``bundles/hostops``): the guest calls the
HostApi through ``ffi`` and answers what it got, arrays included (which it frees with
``host.free``). Semantics as polyplug 0.1.3's, except where docs/differences.md says otherwise.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _hostops import Reply, ops_bundle, parse

import luaplug
from luaplug import AbiErrorCode, Event, Phase, _libc
from luaplug.abi import core_ffi as ffi
from luaplug.ids import bundle_id, guest_contract_id

HOSTOPS = "ops.HostOps@1"
PEER = "ops.Peer@1"
ECHO_ID = guest_contract_id("iso.Echo", 1)
OPS_ID = bundle_id("hostops")
PEER_ID = bundle_id("hostops_peer")


def raw(rt: luaplug.Runtime, contract: str, command: str) -> str:
    """Call ``contract`` fn 0 with ``command``; the string it returned."""
    data = command.encode("utf-8")
    buf = ffi.new("uint8_t[]", data + b"\0")
    sv = ffi.new("StringView*")
    sv.ptr, sv.len = buf, len(data)
    res = ffi.new("StringView*")
    with luaplug.CallArena(4096) as arena:
        rt.contract(contract).default.call(0, sv, res, arena)
        return bytes(ffi.buffer(res.ptr, res.len)).decode("utf-8")


def run(rt: luaplug.Runtime, contract: str, command: str) -> Reply:
    """Call ``contract`` fn 0 with ``command``; its parsed reply."""
    return parse(raw(rt, contract, command))


@pytest.fixture
def ops(runtime: luaplug.Runtime, tmp_path: Path) -> Path:
    """``hostops`` loaded into the runtime."""
    d = ops_bundle(tmp_path / "a")
    runtime.load(d)
    return d


@pytest.fixture
def peer(runtime: luaplug.Runtime, tmp_path: Path) -> Path:
    """``hostops_peer`` (``ops.Peer@1``) loaded into the runtime."""
    d = ops_bundle(tmp_path / "b", "hostops_peer")
    runtime.load(d)
    return d


class Allocations:
    """What luaplug's allocator (``HostApi.alloc`` / ``free``) handed out and took back."""

    def __init__(self) -> None:
        self.made: list[int] = []
        self.live: set[int] = set()


@pytest.fixture
def allocations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Allocations]:
    seen = Allocations()
    malloc, free = _libc.malloc, _libc.free

    def counting_malloc(size: int, align: int) -> int:
        addr = malloc(size, align)
        seen.made.append(addr)
        seen.live.add(addr)
        return addr

    def counting_free(addr: int) -> None:
        seen.live.discard(addr)
        free(addr)

    monkeypatch.setattr(_libc, "malloc", counting_malloc)
    monkeypatch.setattr(_libc, "free", counting_free)
    yield seen


# -- list_bundles, find_all_guest_contracts -------------------------------------------------------


def test_list_bundles_names_every_loaded_bundle(runtime: luaplug.Runtime, ops: Path, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    reply = run(runtime, HOSTOPS, "list")
    assert (reply.code, reply.length, reply.align) == (0, 2, 8)
    assert reply.items == [(OPS_ID,), (bundle_id("echo"),)]  # in load order
    runtime.unload("echo")
    assert run(runtime, HOSTOPS, "list").items == [(OPS_ID,)]


def test_find_all_lists_every_provider_first_registered_first(
    runtime: luaplug.Runtime, ops: Path, bundles: Path
) -> None:
    assert run(runtime, HOSTOPS, f"findall {ECHO_ID} 1").fields == ("0", "4", "")  # none: empty, align 4
    runtime.load(bundles / "echo")
    runtime.load(bundles / "echo_alt")
    first = runtime.registry.find(ECHO_ID, 1)
    reply = run(runtime, HOSTOPS, f"findall {ECHO_ID} 1")
    assert (reply.code, reply.length, reply.align) == (0, 2, 4)
    assert reply.items[0] == first
    assert all(runtime.registry.resolve(*h) is not None for h in reply.items)
    assert {runtime.registry.resolve(*h).bundle_name for h in reply.items} == {"echo", "echo_alt"}  # type: ignore[union-attr]
    assert run(runtime, HOSTOPS, f"findall {ECHO_ID} 0").items == reply.items  # 0: any major
    assert run(runtime, HOSTOPS, f"findall {ECHO_ID} 2").length == 0  # no provider of major >= 2
    assert run(runtime, HOSTOPS, "findall 12345 0").length == 0
    runtime.unload("echo")
    assert run(runtime, HOSTOPS, f"findall {ECHO_ID} 1").items == [runtime.registry.find(ECHO_ID, 1)]


def test_every_array_is_host_memory_the_guest_frees_with_host_free(
    runtime: luaplug.Runtime, ops: Path, bundles: Path, tmp_path: Path, allocations: Allocations
) -> None:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "echo_alt")
    for command in ("list", f"findall {ECHO_ID} 1"):
        allocations.made.clear()
        allocations.live.clear()
        reply = run(runtime, HOSTOPS, command)
        assert reply.code == 0 and reply.length > 0
        assert len(allocations.made) == 1, "the array is HostApi.alloc memory"
        assert allocations.live == set(), "the guest gave it back through HostApi.free"
    allocations.made.clear()
    allocations.live.clear()
    runtime.load(ops_bundle(tmp_path, "hostops_peer", extra=DEPENDENCIES))  # get_dependencies in its init
    assert run(runtime, PEER, "deps_init").length == 3
    assert len(allocations.made) == 1
    assert allocations.live == set()


def test_arrays_from_python_through_the_struct(runtime: luaplug.Runtime, ops: Path) -> None:
    host = runtime.host_api.struct
    arr = host.list_bundles(host)
    assert (arr.len, arr.align) == (1, 8)
    assert ffi.cast("uint64_t*", arr.items)[0] == OPS_ID
    host.free(host, ffi.cast("uint8_t*", arr.items), 8, 8)
    empty = host.get_dependencies(host)  # outside any init
    assert (empty.items, empty.len, empty.align) == (ffi.NULL, 0, 8)


# -- get_dependencies ---------------------------------------------------------------------------

DEPENDENCIES = f"""needs_reinit_on_dep_reload = true
[[dependency]]
kind = "contract"
contract = "iso.Echo"
min_version = "1.0.0"
contract_id = {ECHO_ID}
[[dependency]]
kind = "contract"
contract = "iso.Counter"
min_version = "2.1.0"
[[dependency]]
kind = "bundle"
bundle = "echo"
"""


def test_get_dependencies_answers_the_declared_tables_during_init(
    runtime: luaplug.Runtime, bundles: Path, tmp_path: Path
) -> None:
    runtime.load(bundles / "echo")
    runtime.load(ops_bundle(tmp_path, extra=DEPENDENCIES))
    expected = [(ECHO_ID, 1, 0), (guest_contract_id("iso.Counter", 2), 2, 0), (0, 0, bundle_id("echo"))]
    at_init = run(runtime, HOSTOPS, "deps_init")
    assert (at_init.code, at_init.length, at_init.align) == (0, 3, 8)
    assert at_init.items == expected
    assert run(runtime, HOSTOPS, "deps").fields == ("0", "8", "")  # outside init: empty
    runtime.reload("hostops")
    assert run(runtime, HOSTOPS, "deps_init").items == expected


def test_no_dependencies_is_an_empty_array(runtime: luaplug.Runtime, ops: Path) -> None:
    assert run(runtime, HOSTOPS, "deps_init").fields == ("0", "8", "")


# -- load_bundle --------------------------------------------------------------------------------


def test_a_guest_loads_a_bundle(runtime: luaplug.Runtime, ops: Path, bundles: Path) -> None:
    revision = runtime.revision
    assert run(runtime, HOSTOPS, f"load {bundles / 'echo'}") == parse("0|")
    assert runtime.revision != revision
    b = runtime.bundles["echo"]
    assert (b.backend, b.source_kind) == (runtime.backend_name, "path")
    assert run(runtime, HOSTOPS, "list").items == [(OPS_ID,), (bundle_id("echo"),)]


def test_a_guest_calls_the_bundle_it_loaded(runtime: luaplug.Runtime, ops: Path, bundles: Path) -> None:
    assert run(runtime, HOSTOPS, f"load {bundles / 'echo'}").code == 0
    assert raw(runtime, HOSTOPS, "call iso.Echo@1 echoed") == "echoed"


@pytest.mark.parametrize(
    ("command", "code", "text"),
    [
        ("load {missing}", AbiErrorCode.Generic, "manifest parse error for "),
        ("load ", AbiErrorCode.Generic, "manifest parse error for "),
        ("loadhex ff2c78", AbiErrorCode.Generic, "load_bundle: the bundle path is not valid UTF-8"),
        ("reloadhex c328", AbiErrorCode.Generic, "reload_bundle: the bundle path is not valid UTF-8"),
        ("loadnull", AbiErrorCode.InvalidPointer, "null path pointer in load_bundle"),
        ("reloadnull", AbiErrorCode.InvalidPointer, "null path pointer in reload_bundle"),
        ("load {ops}", AbiErrorCode.Generic, "bundle 'hostops' is already loaded"),
        ("load {broken}", AbiErrorCode.Generic, "unexpected symbol near"),
    ],
)
def test_bad_load_requests_fail_with_a_code_and_a_text(
    runtime: luaplug.Runtime, ops: Path, bundles: Path, tmp_path: Path, command: str, code: int, text: str
) -> None:
    line = command.format(missing=tmp_path / "nothing-here", ops=ops, broken=bundles / "broken_syntax")
    reply = run(runtime, HOSTOPS, line)
    assert reply.code == code
    assert text in reply.text
    assert sorted(runtime.bundles) == ["hostops"]


def test_a_null_abi_error_pointer_is_allowed(
    runtime: luaplug.Runtime, ops: Path, bundles: Path, tmp_path: Path
) -> None:
    assert run(runtime, HOSTOPS, f"noerr {tmp_path / 'nothing-here'}") == parse("0|done")
    assert run(runtime, HOSTOPS, f"noerr {bundles / 'echo'}") == parse("0|done")
    assert "echo" in runtime.bundles


# -- reload_bundle ------------------------------------------------------------------------------


def test_a_guest_reloads_another_bundle(runtime: luaplug.Runtime, ops: Path, copy_bundle: Callable[..., Path]) -> None:
    events: list[Event] = []
    runtime.on_event(events.append)
    echo = copy_bundle("echo")
    runtime.load(echo)
    handle = runtime.registry.find(ECHO_ID, 1)
    main = echo / "main.lua"
    assert raw(runtime, HOSTOPS, "call iso.Echo@1 x") == "x"
    main.write_text(main.read_text("utf-8").replace("local s = ", 'local s = "v2:" .. '), "utf-8")
    assert run(runtime, HOSTOPS, f"reload {echo}") == parse("0|")
    assert raw(runtime, HOSTOPS, "call iso.Echo@1 x") == "v2:x"
    assert runtime.registry.find(ECHO_ID, 1) == handle  # a reload keeps the handle
    assert [(e.phase, e.bundle_name) for e in events] == [(Phase.Preparing, "echo"), (Phase.Reloaded, "echo")]
    main.write_text("this is not lua", "utf-8")
    failed = run(runtime, HOSTOPS, f"reload {echo / 'manifest.toml'}")
    assert failed.code == AbiErrorCode.Generic and "main.lua" in failed.text
    assert events[-1].phase is Phase.Failed
    assert "echo" in runtime.bundles and runtime.registry.find(ECHO_ID, 1) == handle  # the old version serves


def test_reloading_a_bundle_that_is_not_loaded_loads_it(runtime: luaplug.Runtime, ops: Path, bundles: Path) -> None:
    assert run(runtime, HOSTOPS, f"reload {bundles / 'echo'}") == parse("0|")
    assert "echo" in runtime.bundles


def test_reload_needs_hot_reload(backend: str, tmp_path: Path, bundles: Path) -> None:
    with luaplug.Runtime(backend, hot_reload=False) as rt:
        rt.load(ops_bundle(tmp_path))
        rt.load(bundles / "echo")
        assert run(rt, HOSTOPS, f"reload {bundles / 'echo'}") == parse("1|hot-reload is disabled in runtime config")


# -- unload_bundle ------------------------------------------------------------------------------


def test_a_guest_unloads_another_bundle(runtime: luaplug.Runtime, ops: Path, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    handle = runtime.registry.find(ECHO_ID, 1)
    assert handle is not None
    assert run(runtime, HOSTOPS, f"unload {bundle_id('echo')}") == parse("0|")
    assert "echo" not in runtime.bundles
    assert runtime.registry.resolve(*handle) is None  # stale
    assert run(runtime, HOSTOPS, "call iso.Echo@1 x") == parse("4|iso.Echo@1 not found")


def test_unloading_an_unknown_bundle_is_a_no_op(runtime: luaplug.Runtime, ops: Path) -> None:
    assert run(runtime, HOSTOPS, "unload 12345") == parse("0|")
    assert run(runtime, HOSTOPS, "unload 0") == parse("0|")
    assert sorted(runtime.bundles) == ["hostops"]


def test_unloading_a_bundle_with_dependents_is_refused(runtime: luaplug.Runtime, ops: Path, bundles: Path) -> None:
    runtime.load(bundles / "echo")
    runtime.load(bundles / "depuser")
    assert run(runtime, HOSTOPS, f"unload {bundle_id('echo')}") == parse(
        '1|cannot unload bundle `echo`: still-loaded bundles declared a dependency on it: ["depuser"]'
    )
    assert "echo" in runtime.bundles


# -- bundles on the call stack --------------------------------------------------------------------


def test_a_guest_cannot_unload_or_reload_itself(runtime: luaplug.Runtime, ops: Path) -> None:
    revision = runtime.revision
    assert run(runtime, HOSTOPS, "unloadself") == parse(
        "9|cannot unload bundle `hostops` from inside a call into it: it is on this thread's call stack"
    )
    assert run(runtime, HOSTOPS, f"reload {ops}") == parse(
        "9|cannot reload bundle `hostops` from inside a call into it: it is on this thread's call stack"
    )
    assert runtime.revision == revision
    assert run(runtime, HOSTOPS, "list").items == [(OPS_ID,)]  # still serving


def test_a_bundle_on_the_call_stack_cannot_be_unloaded_or_reloaded(
    runtime: luaplug.Runtime, ops: Path, peer: Path
) -> None:
    # host -> hostops -> hostops_peer, which asks to unload / reload hostops
    assert run(runtime, HOSTOPS, f"call {PEER} unload {OPS_ID}").code == AbiErrorCode.ReentrantCall
    reply = run(runtime, HOSTOPS, f"call {PEER} reload {ops}")
    assert reply == parse(
        "9|cannot reload bundle `hostops` from inside a call into it: it is on this thread's call stack"
    )
    assert sorted(runtime.bundles) == ["hostops", "hostops_peer"]
    # the same bundle off the stack: allowed
    assert run(runtime, PEER, f"reload {ops}") == parse("0|")
    assert run(runtime, PEER, f"unload {OPS_ID}") == parse("0|")
    assert sorted(runtime.bundles) == ["hostops_peer"]


def test_a_reload_that_would_reinit_a_caller_is_refused(
    runtime: luaplug.Runtime, bundles: Path, tmp_path: Path
) -> None:
    runtime.load(bundles / "echo")
    runtime.load(ops_bundle(tmp_path, extra=DEPENDENCIES))  # reinitialised when echo reloads
    reply = run(runtime, HOSTOPS, f"reload {bundles / 'echo'}")
    assert reply == parse(
        "9|cannot reload bundle `hostops` from inside a call into it: it is on this thread's call stack"
    )


def test_during_init_the_initialising_bundle_is_on_the_stack(
    runtime: luaplug.Runtime, bundles: Path, tmp_path: Path
) -> None:
    d = ops_bundle(tmp_path / "a", init_command="unloadself")
    runtime.load(d)
    assert run(runtime, HOSTOPS, "init_result") == parse(
        "9|cannot unload bundle `hostops`: its load or reload is running on this thread"
    )
    (d / "init_command.txt").write_text(f"reload {d}", "utf-8")
    runtime.reload("hostops")
    assert run(runtime, HOSTOPS, "init_result") == parse(
        "9|cannot reload bundle `hostops`: its load or reload is running on this thread"
    )
    (d / "init_command.txt").write_text(f"load {d}", "utf-8")
    runtime.reload("hostops")
    assert run(runtime, HOSTOPS, "init_result") == parse(
        "9|cannot load bundle `hostops`: its load is running on this thread"
    )


def test_a_bundle_loads_another_one_during_its_init(runtime: luaplug.Runtime, bundles: Path, tmp_path: Path) -> None:
    runtime.load(ops_bundle(tmp_path, init_command=f"load {bundles / 'echo'}"))
    assert run(runtime, HOSTOPS, "init_result") == parse("0|")
    assert sorted(runtime.bundles) == ["echo", "hostops"]


# -- threads --------------------------------------------------------------------------------------


def test_a_guest_waiting_for_the_lock_gives_up_instead_of_deadlocking(
    runtime: luaplug.Runtime, ops: Path, bundles: Path, tmp_path: Path
) -> None:
    # Thread 1 runs inside hostops and asks for a load; thread 2 holds the runtime lock, loading
    # hostops_peer, whose init calls into hostops (held by thread 1): each waits for the other.
    runtime._guest_lock_wait = 0.2
    go = tmp_path / "go"
    results: dict[str, Any] = {}
    dep = '[[dependency]]\nkind = "contract"\ncontract = "ops.HostOps"\nmin_version = "1.0.0"'
    peer = ops_bundle(tmp_path / "p", "hostops_peer", extra=dep, init_command=f"call {HOSTOPS} list")
    state = runtime.loader._live[OPS_ID]

    def one() -> None:
        results["one"] = run(runtime, HOSTOPS, f"waitfile {go} load {bundles / 'echo'}")

    def two() -> None:
        runtime.load(peer)
        results["two"] = True

    t1 = threading.Thread(target=one, daemon=True)
    t1.start()
    while not state.in_flight():
        pass
    t2 = threading.Thread(target=two, daemon=True)
    t2.start()
    while runtime._lock.acquire(blocking=False):  # until thread 2 holds the lock
        runtime._lock.release()
    go.write_text("")
    t1.join(30)
    t2.join(30)
    assert not t1.is_alive() and not t2.is_alive()
    assert results["one"].code == AbiErrorCode.Generic
    assert results["one"].text.startswith("the runtime is busy: another thread held its lock for 0.2 s")
    assert results["two"] is True
    assert raw(runtime, PEER, "init_result") == f"0|1|8|{OPS_ID}"  # its init called hostops
    assert sorted(runtime.bundles) == ["hostops", "hostops_peer"]


@pytest.mark.skipif(
    importlib.util.find_spec("lupa.luajit21") is None,
    reason="lupa 1.x (Debian's python3-lupa) frees a Lua object by taking its VM's lock with the GIL "
    "held: a cyclic collection in one thread waits for the other thread's running VM, whose guest waits "
    "for the runtime lock, until the 5 s bound breaks it (lupa 2 defers such frees)",
)
def test_guests_load_and_unload_from_two_threads(
    runtime: luaplug.Runtime, ops: Path, peer: Path, bundles: Path
) -> None:
    failures: list[Reply] = []

    def churn(contract: str, bundle: str) -> None:
        for _ in range(15):
            for reply in (
                run(runtime, contract, f"load {bundles / bundle}"),
                run(runtime, contract, f"unload {bundle_id(bundle)}"),
            ):
                if reply.code:
                    failures.append(reply)

    threads = [threading.Thread(target=churn, args=a, daemon=True) for a in ((HOSTOPS, "echo"), (PEER, "counter"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert sorted(runtime.bundles) == ["hostops", "hostops_peer"]


# -- a closed runtime, register_loader ------------------------------------------------------------


def test_after_close_the_operations_fail_cleanly(backend: str, tmp_path: Path, bundles: Path) -> None:
    rt = luaplug.Runtime(backend)
    rt.load(ops_bundle(tmp_path))
    host = rt.host_api.struct
    rt.close()
    path = str(bundles / "echo").encode()
    err = ffi.new("AbiError*")
    host.load_bundle(host, path, len(path), err)
    assert err.code == AbiErrorCode.Generic
    assert ffi.string(ffi.cast("char*", err.message.ptr), err.message.len) == b"no runtime behind this HostApi"
    host.unload_bundle(host, OPS_ID, err)
    assert err.code == AbiErrorCode.Generic
    assert host.list_bundles(host).len == 0
    assert host.find_all_guest_contracts(host, ECHO_ID, 0).len == 0


def test_register_loader_stays_refused(runtime: luaplug.Runtime) -> None:
    host = runtime.host_api.struct
    err = ffi.new("AbiError*")
    host.register_loader(host, ffi.cast("void*", 1), err)
    assert err.code == AbiErrorCode.Generic
    text = b"register_loader: luaplug runs its own Lua loader only; loaders cannot be registered"
    assert ffi.string(ffi.cast("char*", err.message.ptr), err.message.len) == text
    assert runtime.host_api.last_error() == text
    host.register_loader(host, ffi.NULL, err)
    assert err.code == AbiErrorCode.InvalidPointer
