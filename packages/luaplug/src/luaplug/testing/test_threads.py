"""Re-entrancy and threads (spec §8, §9): one VM runs one call at a time, other threads wait,
same-thread re-entry of a contract returns ReentrantCall, arenas never mix."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.testing._cdata import wait_gate

RESULT = "struct { int32_t code; int32_t value; int32_t created; } *"


def address(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


def in_thread(fn: Callable[[], int], results: dict[str, int], key: str) -> threading.Thread:
    t = threading.Thread(target=lambda: results.__setitem__(key, fn()), daemon=True)
    t.start()
    return t


# -- re-entrancy -------------------------------------------------------------------------------


@pytest.mark.protocol
def test_same_contract_reentry_returns_reentrant_call(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "reenter")
    c = runtime.contract("iso.Reenter@1")
    ping = ffi.new("int32_t*")
    for inst in (c.default, c.create_instance(), c.default):
        r = ffi.new(RESULT)
        inst.call(0, 0, r)
        assert r.code == AbiErrorCode.ReentrantCall
        assert r.value == -1  # the nested handler never ran
        assert r.created == 0  # creating an instance of the running contract gives a null instance
        ping[0] = 0
        inst.call(1, 0, ping)  # the VM stays usable
        assert ping[0] == 7


@pytest.mark.protocol
def test_reentry_mark_is_cleared_after_an_error(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "reenter")
    c = runtime.contract("iso.Reenter@1")
    for _ in range(3):
        assert c.default.dispatch(2) == AbiErrorCode.Generic
        ping = ffi.new("int32_t*")
        assert c.default.dispatch(1, 0, ping) == 0
        assert ping[0] == 7
        r = ffi.new(RESULT)
        assert c.default.dispatch(0, 0, r) == 0
        assert r.code == AbiErrorCode.ReentrantCall


@pytest.mark.protocol
def test_nested_call_into_another_contract_of_the_same_bundle(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "multi")
    a = runtime.contract("iso.MultiA@1").default
    nested = "nested_same_bundle_calls" in runtime.capabilities
    for _ in range(200):  # never a crash, whatever the backend can do
        r = ffi.new(RESULT)
        a.call(0, 0, r)
        if nested:
            assert (r.code, r.value, r.created) == (0, 42, 1)
        else:
            assert (r.code, r.value) == (AbiErrorCode.ReentrantCall, -1)
    out = ffi.new("int32_t*")
    runtime.contract("iso.MultiB@1").default.call(0, 0, out)
    assert out[0] == 42


# -- threads -----------------------------------------------------------------------------------


@pytest.mark.protocol
@pytest.mark.parametrize("path", ["python", "c_interface"])
def test_second_thread_waits_for_the_vm(runtime: luaplug.Runtime, bundles: Path, path: str) -> None:
    runtime.load(bundles / "gate")
    c = runtime.contract("iso.Gate@1")
    gate = ffi.new("int32_t[2]")
    out1, out2 = ffi.new("int32_t*"), ffi.new("int32_t*")
    results: dict[str, int] = {}
    holder = in_thread(lambda: c.default.dispatch(0, gate, out1), results, "hold")
    try:
        wait_gate(gate, holder)
        if path == "python":
            waiter = in_thread(lambda: c.default.dispatch(1, 0, out2), results, "mark")
        else:
            iface = ffi.cast("GuestContractInterface*", c.interface_address)
            inst = ffi.new("GuestContractInstance*")
            err = ffi.new("AbiError*", {"code": 999})

            def via_c() -> int:
                iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 1, ffi.NULL, out2, ffi.NULL, err)
                return int(err.code)

            waiter = in_thread(via_c, results, "mark")
        waiter.join(0.05)
        assert waiter.is_alive(), f"the second call was not held back: {results}"
    finally:
        gate[1] = 1
    holder.join(60)
    waiter.join(60)
    assert results == {"hold": 0, "mark": 0}  # it waited, it was not refused
    assert (out1[0], out2[0]) == (1, 2)


@pytest.mark.requires("parallel_states")
def test_other_bundles_run_while_one_vm_is_busy(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "gate")
    runtime.load(bundles / "counter")
    gate = ffi.new("int32_t[2]")
    results: dict[str, int] = {}
    holder = in_thread(lambda: runtime.contract("iso.Gate@1").default.dispatch(0, gate), results, "hold")
    try:
        wait_gate(gate, holder)
        out = ffi.new("int64_t*")
        other = in_thread(lambda: runtime.contract("iso.Counter@1").default.dispatch(0, 0, out), results, "inc")
        other.join(60)
        assert not other.is_alive()
        assert results["inc"] == 0
        assert out[0] == 1
        assert gate[1] == 0  # it ran while the gate VM was still held
    finally:
        gate[1] = 1
    holder.join(60)
    assert results["hold"] == 0


def arena_worker(
    inst: luaplug.Instance, rt: luaplug.Runtime, tag: bytes, n: int, barrier: threading.Barrier, errors: list[str]
) -> None:
    try:
        arena = luaplug.CallArena(8192, host=rt)
        a = ffi.cast("CallArena*", arena.address)
        base, end = address(a.base), address(a.end)
        barrier.wait()
        used = 0
        for i in range(n):
            if i % 25 == 0:
                arena.reset()
                used = 0
            text = tag + str(i).encode()
            buf = ffi.new("uint8_t[]", text)
            arg = ffi.new("StringView*", {"ptr": buf, "len": len(text)})
            out = ffi.new("StringView*")
            code = inst.dispatch(0, arg, out, arena)
            p = address(out.ptr)
            if code != 0 or not (base <= p and p + out.len <= end):
                errors.append(f"{tag!r} #{i}: code {code}, {p:#x} outside [{base:#x}, {end:#x})")
                return
            used += out.len
            if address(a.cur) - base != used:  # nobody else bumped this arena
                errors.append(f"{tag!r} #{i}: arena holds {address(a.cur) - base} bytes, expected {used}")
                return
            if bytes(ffi.buffer(out.ptr, out.len)) != b"hello, " + text:
                errors.append(f"{tag!r} #{i}: got {bytes(ffi.buffer(out.ptr, out.len))!r}")
                return
        if arena.overflow_blocks:
            errors.append(f"{tag!r}: unexpected overflow blocks")
        arena.close()
    except Exception as exc:  # reported by the main thread
        errors.append(f"{tag!r}: {exc!r}")


@pytest.mark.protocol
@pytest.mark.parametrize("layout", ["one_vm", "two_vms"])
def test_threads_with_their_own_arenas_never_mix(runtime: luaplug.Runtime, bundles: Path, layout: str) -> None:
    runtime.load(bundles / "greeter")
    first = runtime.contract("iso.Greeter@1").default
    if layout == "one_vm":
        second = runtime.contract("iso.Greeter@1").create_instance()
    else:
        src = (bundles / "greeter" / "main.lua").read_text("utf-8").replace('["iso.Greeter"]', '["iso.Greeter2"]')
        runtime.load_code(src, "greeter2")
        second = runtime.contract("iso.Greeter2@1").default
    barrier = threading.Barrier(2)
    errors: list[str] = []
    threads = [
        threading.Thread(target=arena_worker, args=(inst, runtime, tag, 3000, barrier, errors))
        for inst, tag in ((first, b"left-"), (second, "rïght-".encode()))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.parametrize("prebound", [False, True], ids=["instance-made-inside", "instance-made-before"])
@pytest.mark.parametrize("target", ["iso.Chatty@1", "iso.Quiet@1", "iso.Counter@1"])
def test_host_code_called_from_inside_a_call_may_call_back(
    runtime: luaplug.Runtime, bundles: Path, backend: str, target: str, prebound: bool
) -> None:
    """A log handler (host code running inside the bundle's call) calls back into the
    bundle: the same contract gets ReentrantCall, another contract of the same bundle
    works where the backend can nest and gets ReentrantCall where it cannot, another
    bundle always works; nothing crashes and the VM stays usable. The instance is
    made inside the callback or before the call (then its backend's own entry serves
    it), and called with a cffi pointer, with plain addresses, by keyword and through ``call``."""
    runtime.load(bundles / "chatty")
    runtime.load(bundles / "counter")
    chatty = runtime.contract("iso.Chatty@1").default
    codes: list[int] = []
    slot = ffi.new("int64_t*")
    # Made before the call, the instance's entries are bound outside any Lua call.
    made_before = runtime.contract(target).default if prebound else None

    class CallsBack(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "scope", None) == "iso.chatty":
                inst = made_before or runtime.contract(target).default
                codes.append(inst.dispatch(0, 0, slot))
                codes.append(inst.dispatch(0, 0, int(ffi.cast("uintptr_t", slot))))
                codes.append(inst.dispatch(fn_id=0, out=slot))
                try:
                    inst.call(0, 0, slot)
                except luaplug.DispatchError as exc:
                    codes.append(exc.code)
                else:
                    codes.append(0)

    handler = CallsBack(level=logging.INFO)
    guest = logging.getLogger("luaplug.guest")
    old = guest.level
    guest.addHandler(handler)
    guest.setLevel(logging.INFO)
    try:
        assert chatty.dispatch(0) == 0
    finally:
        guest.removeHandler(handler)
        guest.setLevel(old)
    nested = "nested_same_bundle_calls" in runtime.capabilities
    expected = {
        "iso.Chatty@1": AbiErrorCode.ReentrantCall,
        "iso.Quiet@1": 0 if nested else AbiErrorCode.ReentrantCall,
        "iso.Counter@1": 0,
    }[target]
    assert codes == [expected] * 4
    assert chatty.dispatch(0) == 0  # the VM recovered
    assert runtime.contract("iso.Quiet@1").default.dispatch(0) == 0
