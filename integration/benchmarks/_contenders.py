"""The contenders of the in-process cases: a luaplug backend, the reference runtime, the floor.

Each contender loads the same bundle directories (:class:`BenchBundles`) once and then
serves the cases as small methods; the call loops themselves live in :mod:`_common` so
every contender's loop is the same Python code around its own call.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Final

from _common import (
    PAIR,
    PEER_ARGS,
    PEER_GUEST_SIDE,
    PEER_IN_VM,
    PEER_RESULT,
    SPIN_ARGS,
    TYPED_API,
    floor_load,
    floor_runtime,
    loop0,
    loop1,
    loop2,
    loop3,
    loop4_reset,
    loop5,
    loop5_reset,
    loop7,
    loop7_reset,
)
from _natural import NaturalAdder, NaturalGreeter

import luaplug
from luaplug.abi import ffi

GREET_NAME: Final = b"world"
GREETING: Final = b"hello, world"
#: The typed cases' Python values: ``add(40, 2)``, ``greet("world")``.
TYPED_A, TYPED_B, TYPED_NAME = 40, 2, "world"
#: Rounds of the spin bundle per call in the threads case (about 5-10 us of Lua work).
SPIN_ROUNDS: Final = 1000

#: ``n`` calls on one bundle from one thread; elapsed ns.
Worker = Callable[[int], int]


@dataclass(frozen=True)
class BenchBundles:
    """Directories of the bundle copies every contender loads (one set, shared)."""

    sdk: Path
    adder: Path
    adder2: Path
    greeter: Path
    sdkgreet: Path
    peerloop: Path
    spin: Path
    spin2: Path


def addr(ptr: Any) -> int:
    """The address of a cffi pointer as an int."""
    return int(ffi.cast("uintptr_t", ptr))


def string_view(data: bytes) -> tuple[Any, Any]:
    """A ``StringView*`` over ``data`` and the buffer it borrows (keep both alive)."""
    buf = ffi.new("uint8_t[]", data)
    return ffi.new("StringView*", {"ptr": buf, "len": len(data)}), buf


def text_of(sv: Any) -> bytes:
    """The bytes a ``StringView*`` points at."""
    return bytes(ffi.buffer(sv.ptr, sv.len))


class Contender(abc.ABC):
    """One column of the table.

    :ivar name: the column name (a backend name, ``reference`` or ``floor``)
    """

    name: str

    def __init__(self) -> None:
        self._keep: list[Any] = []  # cdata and buffers the loops point at
        self.pair = ffi.new(PAIR, {"a": 40, "b": 2})
        self.slot = ffi.new("int32_t*")
        self.name_sv, buf = string_view(GREET_NAME)
        self.greeting = ffi.new("StringView*")
        self._keep.append(buf)

    @abc.abstractmethod
    def noop(self, n: int) -> int:
        """``n`` no-op calls (function 1 of ``iso.Adder@1``); elapsed ns."""

    @abc.abstractmethod
    def add(self, n: int) -> int:
        """``n`` typed ``add(40, 2)`` calls through the arg pack and the out slot; elapsed ns."""

    @abc.abstractmethod
    def greet(self, n: int) -> int:
        """``n`` times: reset the call arena, greet ``world``; elapsed ns."""

    @abc.abstractmethod
    def sdk_greet(self, n: int) -> int:
        """``greet`` on the SDK-written greeter (bundles/sdkgreet); elapsed ns."""

    def typed_noop(self, n: int) -> int | None:
        """``n`` calls ``noop()`` with Python values (the typed proxy, or the reference's natural
        path through ctypes); elapsed ns, or ``None`` when the contender has no such path."""
        return None

    def typed_add(self, n: int) -> int | None:
        """``n`` calls ``add(40, 2) -> 42`` with Python values; elapsed ns, or ``None``."""
        return None

    def typed_greet(self, n: int) -> int | None:
        """``n`` calls ``greet("world") -> "hello, world"`` with Python values; elapsed ns, or ``None``."""
        return None

    def typed_results(self) -> tuple[object, object, object] | None:
        """``(noop(), add(40, 2), greet("world"))`` through the typed path, or ``None``."""
        return None

    @abc.abstractmethod
    def peer(self, n: int, mode: int) -> float:
        """ns per peer call, measured inside Lua over ``n`` calls (``mode``: bundles/peerloop)."""

    def peer_guest_side(self, n: int) -> float | None:
        """ns per call of the guest's share of a cached peer call (the peer loop's mode 3), or ``None``."""
        return None

    @abc.abstractmethod
    def reload(self) -> float:
        """Edit the reload bundle's source and hot-reload it; ms of the reload alone."""

    @abc.abstractmethod
    def worker(self, workload: str, index: int) -> Worker:
        """A thread's call loop on bundle ``index`` (0 or 1) for ``workload`` (``spin`` or ``add``)."""

    def check(self) -> None:
        """Verify once that the call cases compute what they should.

        :raises AssertionError: a case returned a wrong result
        """
        self.slot[0] = 0
        self.add(1)
        assert self.slot[0] == 42, f"{self.name}: add gave {self.slot[0]}"
        for case in (self.greet, self.sdk_greet):
            self.greeting.ptr, self.greeting.len = ffi.NULL, 0
            case(1)
            assert text_of(self.greeting) == GREETING, f"{self.name}: {case.__name__} gave {text_of(self.greeting)!r}"
        typed = self.typed_results()
        expected = (None, TYPED_A + TYPED_B, f"hello, {TYPED_NAME}")
        assert typed is None or typed == expected, f"{self.name}: the typed path gave {typed!r}"

    def close(self) -> None:
        """Release the runtime and the buffers."""
        self._keep.clear()

    def _peer_args(self, n: int, mode: int) -> tuple[Any, Any]:
        return ffi.new(PEER_ARGS, {"n": n, "mode": mode}), ffi.new(PEER_RESULT)

    def _peer_result(self, n: int, res: Any) -> float:
        if res.code != 0 or res.sum != 42 * n:
            raise AssertionError(f"{self.name}: peer loop gave code {res.code}, sum {res.sum} for {n} calls")
        return float(res.ns) / n

    def _reload_edit(self, main: Path) -> None:
        self._edits = getattr(self, "_edits", 0) + 1
        with main.open("a", encoding="utf-8") as f:
            f.write(f"-- edit {self._edits}\n")


class LuaplugContender(Contender):
    """A luaplug runtime on one backend; every bundle on that backend."""

    def __init__(self, backend: str, bundles: BenchBundles, reload_dir: Path) -> None:
        super().__init__()
        self.name = backend
        self.rt = luaplug.Runtime(backend, hot_reload=True)
        for d in (
            bundles.adder, bundles.adder2, bundles.greeter, bundles.sdkgreet, bundles.peerloop, bundles.spin,
            bundles.spin2,
        ):  # fmt: skip
            self.rt.load(d)
        self.reload_bundle = self.rt.load(reload_dir).name
        self.reload_main = reload_dir / "main.lua"
        # The instances stay alive for the whole run; dispatch is fetched once, as a host would.
        self.adder = self.rt.contract("iso.Adder@1").default
        self.greeter = self.rt.contract("iso.Greeter@1").default
        self.sdkgreeter = self.rt.contract("bench.SdkGreeter@1").default
        self.peerloop = self.rt.contract("bench.PeerLoop@1").default
        self.arena = luaplug.CallArena(4096, host=self.rt)
        self.pair_addr, self.slot_addr = addr(self.pair), addr(self.slot)
        self.name_addr, self.greeting_addr = addr(self.name_sv), addr(self.greeting)
        # Typed proxies of the same bundles, as a host binds them (each owns an instance).
        self.typed_adder = self.rt.bind(TYPED_API, "iso.Adder@1")
        self.typed_greeter = self.rt.bind(TYPED_API, "iso.Greeter@1")

    def noop(self, n: int) -> int:
        return loop1(n, self.adder.dispatch, 1)

    def typed_noop(self, n: int) -> int:
        return loop0(n, self.typed_adder.noop)

    def typed_add(self, n: int) -> int:
        return loop2(n, self.typed_adder.add, TYPED_A, TYPED_B)

    def typed_greet(self, n: int) -> int:
        return loop1(n, self.typed_greeter.greet, TYPED_NAME)

    def typed_results(self) -> tuple[object, object, object]:
        return self.typed_adder.noop(), self.typed_adder.add(TYPED_A, TYPED_B), self.typed_greeter.greet(TYPED_NAME)

    def add(self, n: int) -> int:
        return loop3(n, self.adder.dispatch, 0, self.pair_addr, self.slot_addr)

    def greet(self, n: int) -> int:
        return loop4_reset(
            n, self.arena.reset, self.greeter.dispatch, 0, self.name_addr, self.greeting_addr, self.arena
        )

    def sdk_greet(self, n: int) -> int:
        return loop4_reset(
            n, self.arena.reset, self.sdkgreeter.dispatch, 0, self.name_addr, self.greeting_addr, self.arena
        )

    def peer(self, n: int, mode: int) -> float:
        args, res = self._peer_args(n, mode)
        self.peerloop.call(0, args, res)
        return self._peer_result(n, res)

    def peer_guest_side(self, n: int) -> float:
        return self.peer(n, PEER_GUEST_SIDE)

    def reload(self) -> float:
        self._reload_edit(self.reload_main)
        t0 = perf_counter_ns()
        self.rt.reload(self.reload_bundle)
        elapsed = perf_counter_ns() - t0
        self.rt.contract("bench.Reload@1").default.call(1)
        return elapsed / 1e6

    def worker(self, workload: str, index: int) -> Worker:
        contract = {"spin": ("bench.Spin@1", "bench.Spin2@1"), "add": ("iso.Adder@1", "bench.Adder2@1")}[workload]
        inst = self.rt.contract(contract[index]).default
        if workload == "spin":
            args: Any = ffi.new(SPIN_ARGS, {"n": SPIN_ROUNDS})
            out: Any = ffi.new("int64_t*")
        else:
            args, out = ffi.new(PAIR, {"a": 1, "b": 2}), ffi.new("int32_t*")
        fn_id, a, o, d = 0, addr(args), addr(out), inst.dispatch

        def run(n: int) -> int:
            keep = (inst, args, out)  # the instance and the buffers outlive the loop
            elapsed = loop3(n, d, fn_id, a, o)
            del keep
            return elapsed

        return run

    def close(self) -> None:
        self.typed_adder.close()
        self.typed_greeter.close()
        self.arena.close()
        self.rt.close()
        super().close()


class ReferenceContender(Contender):
    """polyplug 0.1.3 through its own host API (the adapter) and ``dispatch.vm.call``."""

    name = "reference"

    def __init__(self, bundles: BenchBundles, reload_dir: Path) -> None:
        super().__init__()
        from reference.adapter import ReferenceRuntime

        self.rt = ReferenceRuntime(hot_reload=True)
        for d in (
            bundles.adder, bundles.adder2, bundles.greeter, bundles.sdkgreet, bundles.peerloop, bundles.spin,
            bundles.spin2,
        ):  # fmt: skip
            self.rt.load(d)
        self.reload_bundle = self.rt.load(reload_dir)
        self.reload_main = reload_dir / "main.lua"
        self.adder = self.rt.contract("iso.Adder@1")
        self.greeter = self.rt.contract("iso.Greeter@1")
        self.sdkgreeter = self.rt.contract("bench.SdkGreeter@1")
        self.peerloop = self.rt.contract("bench.PeerLoop@1")
        self.arena = luaplug.CallArena(4096, host=self.rt.host_api_address)
        self.err = ffi.new("AbiError*")
        # The null instance (the default impl) of each contract, by value, as vm.call takes it.
        self.adder_inst = self._instance(self.adder.contract_id)
        self.greeter_inst = self._instance(self.greeter.contract_id)
        self.sdkgreeter_inst = self._instance(self.sdkgreeter.contract_id)
        self.null_args = ffi.cast("const void*", 0)
        self.null_out = ffi.cast("void*", 0)
        self.null_arena = ffi.cast("CallArena*", 0)
        self.pair_p = ffi.cast("const void*", self.pair)
        self.slot_p = ffi.cast("void*", self.slot)
        self.name_p = ffi.cast("const void*", self.name_sv)
        self.greeting_p = ffi.cast("void*", self.greeting)
        self.arena_p = ffi.cast("CallArena*", self.arena.address)
        # The natural path: generated-caller-shaped ctypes callers (_natural.py).
        self.natural_adder = NaturalAdder(self.rt.host_api_address, self.adder.handle)
        self.natural_greeter = NaturalGreeter(self.rt.host_api_address, self.greeter.handle)

    def _instance(self, contract_id: int) -> Any:
        inst = ffi.new("GuestContractInstance*")
        inst.contract_id = contract_id
        self._keep.append(inst)
        return inst[0]

    def noop(self, n: int) -> int:
        c = self.adder
        return loop7(
            n, c.vm_call, c.loader_data, self.adder_inst, 1, self.null_args, self.null_out, self.null_arena, self.err
        )

    def add(self, n: int) -> int:
        c = self.adder
        return loop7(
            n, c.vm_call, c.loader_data, self.adder_inst, 0, self.pair_p, self.slot_p, self.null_arena, self.err
        )

    def greet(self, n: int) -> int:
        c = self.greeter
        return loop7_reset(
            n, self.arena.reset, c.vm_call, c.loader_data, self.greeter_inst, 0, self.name_p, self.greeting_p,
            self.arena_p, self.err,
        )  # fmt: skip

    def sdk_greet(self, n: int) -> int:
        c = self.sdkgreeter
        return loop7_reset(
            n, self.arena.reset, c.vm_call, c.loader_data, self.sdkgreeter_inst, 0, self.name_p, self.greeting_p,
            self.arena_p, self.err,
        )  # fmt: skip

    def typed_noop(self, n: int) -> int:
        return loop0(n, self.natural_adder.noop)

    def typed_add(self, n: int) -> int:
        return loop2(n, self.natural_adder.add, TYPED_A, TYPED_B)

    def typed_greet(self, n: int) -> int:
        return loop1(n, self.natural_greeter.greet, TYPED_NAME)

    def typed_results(self) -> tuple[object, object, object]:
        a, g = self.natural_adder, self.natural_greeter
        return a.noop(), a.add(TYPED_A, TYPED_B), g.greet(TYPED_NAME)

    def check(self) -> None:
        super().check()
        assert self.err.code == 0, f"reference: AbiError {self.err.code}"

    def peer(self, n: int, mode: int) -> float:
        args, res = self._peer_args(n, mode)
        code = self.peerloop.dispatch(0, args, res)
        assert code == 0, f"reference: the peer loop failed with {code}"
        return self._peer_result(n, res)

    def reload(self) -> float:
        self._reload_edit(self.reload_main)
        t0 = perf_counter_ns()
        self.rt.reload(self.reload_bundle)
        elapsed = perf_counter_ns() - t0
        assert self.rt.contract("bench.Reload@1").dispatch(1) == 0
        return elapsed / 1e6

    def worker(self, workload: str, index: int) -> Worker:
        contract = {"spin": ("bench.Spin@1", "bench.Spin2@1"), "add": ("iso.Adder@1", "bench.Adder2@1")}[workload]
        c = self.rt.contract(contract[index])
        if workload == "spin":
            args: Any = ffi.new(SPIN_ARGS, {"n": SPIN_ROUNDS})
            out: Any = ffi.new("int64_t*")
        else:
            args, out = ffi.new(PAIR, {"a": 1, "b": 2}), ffi.new("int32_t*")
        inst = self._instance(c.contract_id)
        err = ffi.new("AbiError*")  # one per thread
        a, o, call, data = ffi.cast("const void*", args), ffi.cast("void*", out), c.vm_call, c.loader_data

        def run(n: int) -> int:
            keep = (args, out, err)
            elapsed = loop7(n, call, data, inst, 0, a, o, self.null_arena, err)
            del keep
            return elapsed

        return run

    def close(self) -> None:
        self.arena.close()
        self.rt.close()
        super().close()


class FloorContender(Contender):
    """A direct lupa call of a cached Lua function with the same 5 arguments.

    noop is ``function(a, b, c, d, e) end``; add, greet, spin and the peer loop run the
    bundles' own handlers (loaded the cheapest way, :func:`_common.floor_load`), greet with an
    inline ``CallArena`` bump as ``arena_alloc``; the peer floor is the peer loop's in-VM mode.
    """

    name = "floor"

    def __init__(self, bundles: BenchBundles, reload_dir: Path) -> None:
        super().__init__()
        self.bundles = bundles
        self.reload_dir = reload_dir
        self.lua, load_bundle, bump = floor_runtime(bundles.sdk)
        self.noop_fn = self.lua.eval("function(a,b,c,d,e) end")
        self.add_fn = load_bundle((bundles.adder / "main.lua").read_text("utf-8"), "main.lua")[0][0]
        greet = load_bundle((bundles.greeter / "main.lua").read_text("utf-8"), "main.lua")[0][0]
        wrap = self.lua.eval("function(greet, bump) return function(s, a, o, r) return greet(s, a, o, r, bump) end end")
        self.greet_fn = wrap(greet, bump)
        sdk_greet = load_bundle((bundles.sdkgreet / "main.lua").read_text("utf-8"), "main.lua")[0][0]
        self.sdk_greet_fn = wrap(sdk_greet, bump)
        fns, self.peer_impl = load_bundle((bundles.peerloop / "main.lua").read_text("utf-8"), "main.lua")
        self.peer_fn = fns[0]
        self.arena = luaplug.CallArena(4096)
        self.pair_addr, self.slot_addr = addr(self.pair), addr(self.slot)
        self.name_addr, self.greeting_addr = addr(self.name_sv), addr(self.greeting)
        self.reloaded: Any = None

    def noop(self, n: int) -> int:
        return loop5(n, self.noop_fn, 1, 0, 0, 0, 0)

    def add(self, n: int) -> int:
        return loop5(n, self.add_fn, 1, self.pair_addr, self.slot_addr, 0, 0)

    def greet(self, n: int) -> int:
        return loop5_reset(
            n, self.arena.reset, self.greet_fn, 1, self.name_addr, self.greeting_addr, self.arena.address, 0
        )

    def sdk_greet(self, n: int) -> int:
        return loop5_reset(
            n, self.arena.reset, self.sdk_greet_fn, 1, self.name_addr, self.greeting_addr, self.arena.address, 0
        )

    def peer(self, n: int, mode: int) -> float:
        args, res = self._peer_args(n, PEER_IN_VM)  # no peer machinery: the add runs in the VM
        self.peer_fn(self.peer_impl, addr(args), addr(res), 0, 0)
        return self._peer_result(n, res)

    def reload(self) -> float:
        self._reload_edit(self.reload_dir / "main.lua")
        t0 = perf_counter_ns()
        new = floor_load(self.bundles.sdk, self.reload_dir)
        elapsed = perf_counter_ns() - t0
        self.reloaded = new  # the old VM goes when the new one is in place
        return elapsed / 1e6

    def worker(self, workload: str, index: int) -> Worker:
        src = {"spin": (self.bundles.spin, self.bundles.spin2), "add": (self.bundles.adder, self.bundles.adder2)}
        lua, fns, impl = floor_load(self.bundles.sdk, src[workload][index])  # one LuaRuntime per thread
        if workload == "spin":
            args: Any = ffi.new(SPIN_ARGS, {"n": SPIN_ROUNDS})
            out: Any = ffi.new("int64_t*")
        else:
            args, out = ffi.new(PAIR, {"a": 1, "b": 2}), ffi.new("int32_t*")
        f, a, o = fns[0], addr(args), addr(out)

        def run(n: int) -> int:
            keep = (lua, impl, args, out)
            elapsed = loop5(n, f, 1, a, o, 0, 0)
            del keep
            return elapsed

        return run

    def close(self) -> None:
        self.arena.close()
        self.reloaded = None
        super().close()
