"""Stress (issue 8): caller threads on several bundles while another thread reloads, unloads and
loads them again, for a bounded time.

Spec §9-§10 and runtime-semantics "Reload and unload lifecycle": a call in flight finishes on
the VM it started on; after a reload the contract handle follows the new VM, after an unload it
goes stale. So every call answers Ok or StaleHandle (a stale default impl or instance), and
resolving a contract while its bundle is unloaded raises ContractNotFoundError. No call hangs,
none is lost, nothing crashes, and once the callers stopped every superseded VM is reclaimed.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi

DURATION = 3.0  # seconds of churn per backend
CALLERS = 4
BUNDLES = {"counter": "iso.Counter@1", "adder": "iso.Adder@1", "greeter": "iso.Greeter@1"}
ALLOWED = {int(AbiErrorCode.Ok), int(AbiErrorCode.StaleHandle)}


@dataclass
class Tally:
    """What the threads saw; merged under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    codes: Counter[object] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    churn: Counter[str] = field(default_factory=Counter)

    def add(self, local: Counter[object]) -> None:
        with self.lock:
            self.codes.update(local)

    def fail(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


def address(ptr: Any) -> int:
    return int(ffi.cast("uintptr_t", ptr))


class Caller:
    """One caller thread's state: a cached contract per bundle, its own arena and buffers."""

    def __init__(self, rt: luaplug.Runtime, tag: int, tally: Tally) -> None:
        self.rt = rt
        self.tag = tag
        self.tally = tally
        self.contracts: dict[str, luaplug.Contract | None] = dict.fromkeys(BUNDLES.values())
        self.seen: Counter[object] = Counter()
        self.arena = luaplug.CallArena(256, host=rt)
        self.name = f"thread-{tag}".encode()
        self.name_buf = ffi.new("uint8_t[]", self.name)
        self.sv_in = ffi.new("StringView*", {"ptr": self.name_buf, "len": len(self.name)})
        self.sv_out = ffi.new("StringView*")
        self.i64 = ffi.new("int64_t*")
        self.pair = ffi.new("int32_t[2]")
        self.i32 = ffi.new("int32_t*")

    def contract(self, name: str) -> luaplug.Contract | None:
        """The cached contract, resolved again after it went stale (None while unloaded)."""
        c = self.contracts[name]
        if c is None:
            try:
                c = self.contracts[name] = self.rt.contract(name)
            except luaplug.ContractNotFoundError:
                self.seen["not found"] += 1
        return c

    def call(self, name: str, inst: luaplug.Instance) -> int:
        """One call of fn 0 with real arguments; checks the result of every Ok call."""
        if name == "iso.Counter@1":
            code = inst.dispatch(0, 0, self.i64)
            if code == 0 and self.i64[0] < 1:
                self.tally.fail(f"counter returned {self.i64[0]}")
            return code
        if name == "iso.Adder@1":
            a, b = random.randrange(1 << 20), random.randrange(1 << 20)
            self.pair[0], self.pair[1] = a, b
            code = inst.dispatch(0, self.pair, self.i32)
            if code == 0 and self.i32[0] != a + b:
                self.tally.fail(f"adder: {a} + {b} gave {self.i32[0]}")
            return code
        self.arena.reset()
        code = inst.dispatch(0, self.sv_in, self.sv_out, self.arena)
        if code == 0:
            got = bytes(ffi.buffer(self.sv_out.ptr, self.sv_out.len))
            base = address(ffi.cast("CallArena*", self.arena.address).base)
            p = address(self.sv_out.ptr)
            if got != b"hello, " + self.name or not base <= p < base + self.arena.capacity:
                self.tally.fail(f"greeter gave {got!r} at {p:#x} (own arena at {base:#x})")
        return code

    def run(self, stop: threading.Event) -> None:
        """Call round-robin until ``stop``; every 8th call goes to a fresh instance."""
        try:
            i = 0
            while not stop.is_set():
                name = list(BUNDLES.values())[i % len(BUNDLES)]
                i += 1
                c = self.contract(name)
                if c is None:
                    continue
                try:
                    inst = c.create_instance() if i % 8 == 0 else c.default
                except luaplug.ContractNotFoundError:
                    self.seen["not found"] += 1
                    self.contracts[name] = None
                    continue
                except luaplug.LuaplugError:
                    # create_instance raced an unload/reload: the retired VM built no instance.
                    self.seen["create refused"] += 1
                    self.contracts[name] = None
                    continue
                code = self.call(name, inst)
                self.seen[code] += 1
                if code not in ALLOWED:
                    self.tally.fail(f"{name} answered {code}")
                if code == AbiErrorCode.StaleHandle:
                    self.contracts[name] = None
                if inst.id:
                    inst.destroy()
        except Exception as exc:  # reported by the main thread
            self.tally.fail(f"caller {self.tag}: {exc!r}")
        finally:
            self.arena.close()
            self.tally.add(self.seen)


def churn(rt: luaplug.Runtime, bundles: Path, stop: threading.Event, tally: Tally) -> None:
    """Reload, or unload and load again, a random bundle until ``stop``; all loaded at the end."""
    rng = random.Random(8)
    try:
        while not stop.is_set():
            name = rng.choice(list(BUNDLES))
            if rng.random() < 0.5:
                rt.reload(name)
                tally.churn["reload"] += 1
            else:
                rt.unload(name)
                time.sleep(rng.random() * 0.002)  # let callers meet the unloaded state
                rt.load(bundles / name)
                tally.churn["unload+load"] += 1
    except Exception as exc:
        tally.fail(f"churn: {exc!r}")


def test_callers_survive_reloads_and_unloads(runtime: luaplug.Runtime, bundles: Path) -> None:
    for name in BUNDLES:
        runtime.load(bundles / name)
    tally = Tally()
    stop, stop_churn = threading.Event(), threading.Event()
    hook_errors: list[str] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: hook_errors.append(f"{args.thread}: {args.exc_value!r}")
    callers = [Caller(runtime, i, tally) for i in range(CALLERS)]
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in callers]
    churner = threading.Thread(target=churn, args=(runtime, bundles, stop_churn, tally), daemon=True)
    try:
        for t in [*threads, churner]:
            t.start()
        time.sleep(DURATION)
        stop_churn.set()
        churner.join(30)
        stop.set()
        for t in threads:
            t.join(30)
        hung = [t.name for t in [*threads, churner] if t.is_alive()]
        assert not hung, f"deadlock: {hung} did not stop within 30 s"
    finally:
        stop.set()
        stop_churn.set()
        threading.excepthook = old_hook
    print(f"stress on {runtime.backend_name}: calls {dict(tally.codes)}, churn {dict(tally.churn)}")
    assert tally.errors == [] and hook_errors == []
    ok = tally.codes[int(AbiErrorCode.Ok)]
    assert set(tally.codes) <= ALLOWED | {"not found", "create refused"}, tally.codes
    assert ok > 100, f"the callers made no progress: {tally.codes}"
    assert sum(tally.churn.values()) > 10, f"the churn thread made no progress: {tally.churn}"

    runtime.collector.collect()
    assert runtime.collector.pending == 0, "a superseded VM was never reclaimed"
    assert sorted(runtime.bundles) == sorted(BUNDLES)
    assert runtime.loader.live_states == len(BUNDLES)
    assert sorted(runtime.contracts()) == sorted(BUNDLES.values())
    check = Caller(runtime, 99, Tally())
    for name in BUNDLES.values():
        assert check.call(name, runtime.contract(name).default) == 0
    check.arena.close()
    assert check.tally.errors == []
