"""The C interface of a lupa contract (luaplug_entry.h's peer section), as guests of every backend
call it through the HostApi (spec §13): calls, errors, instances, staleness, re-entry, threads.

Each case runs for the pairings of the selected backend with every available one in which the
side under test is on lupa (the callee, or the caller for re-entry); the pure-Python callbacks
(``LUAPLUG_NO_NATIVE_ENTRY=1``) answer the same.
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.ids import bundle_id

# A guest that drives a peer contract (@TARGET@) step by step through its interface's pointers:
# fn 0(args {op, fn, iid}) -> out {code, value, iid}
#   op 0: find + resolve the target (code 4: not found, 5: stale), keeping a copy of its interface
#   op 1: create_instance (iid: the instance, 0 when none)
#   op 2: call target fn `fn` of instance `iid` on (20, 22) with an int32 out slot (value)
#   op 3: destroy_instance `iid`
CALLER = """
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")
local TARGET = abi.guest_contract_id("@TARGET@", 1)
local args_p = ffi.typeof("struct { int32_t op; int32_t fn; uint64_t iid; } *")
local out_p = ffi.typeof("struct { int32_t code; int32_t value; uint64_t iid; } *")
local pair = ffi.new("struct { int32_t a; int32_t b; }", 20, 22)
local iface = ffi.new("GuestContractInterface")

local function instance(iid)
  local inst = ffi.new("GuestContractInstance")
  inst.data = ffi.cast("void*", iid)
  inst.contract_id = TARGET
  return inst
end

local function step(self, args, out)
  local a, r = ffi.cast(args_p, args), ffi.cast(out_p, out)
  local host = guest.cast_host_interface(self.host)
  r.code, r.value, r.iid = 0, -1, 0
  if a.op == 0 then
    local h = host.find_guest_contract(host, TARGET, 1)
    if h.index == 0xFFFFFFFF then r.code = 4 return end
    local found = host.resolve_guest_contract(host, h)
    if found == nil then r.code = 5 return end
    ffi.copy(iface, found, ffi.sizeof(iface))
  elseif a.op == 1 then
    local inst = ffi.new("GuestContractInstance[1]")
    iface.create_instance(iface.dispatch.vm.loader_data, host, nil, inst)
    r.iid = ffi.cast("uintptr_t", inst[0].data)
  elseif a.op == 2 then
    local slot = ffi.new("int32_t[1]", -1)
    local err = ffi.new("AbiError[1]")
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, instance(a.iid), a.fn, pair, slot, nil, err)
    r.code, r.value = err[0].code, slot[0]
  elseif a.op == 3 then
    iface.destroy_instance(iface.dispatch.vm.loader_data, host, instance(a.iid))
  end
end

function polyplug_init()
  return { ["@OWN@"] = { factory = function(h) return { host = h } end, functions = { [0] = step } } }, { code = 0 }
end
"""

# A target: fn 0 add(pair) -> int32, fn 1 raises, fn 2 counts its instance's calls; @FACTORY@ is
# the factory's body.
TARGET = """
local ffi = require("ffi")
local pair_p = ffi.typeof("struct { int32_t a; int32_t b; } *")
local function add(_self, args, out)
  local p = ffi.cast(pair_p, args)
  ffi.cast("int32_t*", out)[0] = p.a + p.b
end
local function fail() error("peer target failed on purpose") end
local function count(self, _args, out)
  self.n = self.n + 1
  ffi.cast("int32_t*", out)[0] = self.n
end
function polyplug_init()
  return { ["t.Target"] = { factory = function() @FACTORY@ end, functions = { [0] = add, [1] = fail, [2] = count } } },
    { code = 0 }
end
"""
OK_FACTORY = "return { n = 0 }"

# A bundle bouncing between two contracts: fn k (k = 0, 1) calls OTHER fn k + 1 with the same
# int32[3] and stores that call's code in it at k; fn 2 stores 7 at 2.
BOUNCE = """
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")
local OTHER = abi.guest_contract_id("@OTHER@", 1)
local function forward(k)
  return function(self, args)
    local res = ffi.cast("int32_t*", args)
    local host = guest.cast_host_interface(self.host)
    local iface = host.resolve_guest_contract(host, host.find_guest_contract(host, OTHER, 1))
    local err = ffi.new("AbiError[1]")
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, ffi.new("GuestContractInstance"), k + 1, res, nil, nil, err)
    res[k] = err[0].code
  end
end
local function last(_self, args) ffi.cast("int32_t*", args)[2] = 7 end
function polyplug_init()
  return { ["@OWN@"] = { factory = function(h) return { host = h } end,
    functions = { [0] = forward(0), [1] = forward(1), [2] = last } } }, { code = 0 }
end
"""


def _pairs(backend: str, lupa_is: str) -> list[tuple[str, str]]:
    """(caller, callee) pairs of ``backend`` with each available backend, both ways, in which the
    ``lupa_is`` side ("caller" or "callee") runs on lupa."""
    available = luaplug.available_backends()
    if "lupa" not in available:
        pytest.skip("needs the lupa backend")
    pairs = {(backend, other) for other in available} | {(other, backend) for other in available}
    found = sorted(p for p in pairs if p[0 if lupa_is == "caller" else 1] == "lupa")
    if not found:
        pytest.skip(f"no pairing of {backend} with a {lupa_is} on lupa")
    return found


class Caller:
    """The CALLER guest loaded into a runtime, driven step by step."""

    def __init__(self, rt: luaplug.Runtime, target: str, backend: str, name: str = "caller") -> None:
        code = CALLER.replace("@TARGET@", target).replace("@OWN@", f"t.{name}")
        rt.load_code(code, name, backend=backend)
        self.inst = rt.contract(f"t.{name}@1").default
        self.args = ffi.new("struct { int32_t op; int32_t fn; uint64_t iid; } *")
        self.out = ffi.new("struct { int32_t code; int32_t value; uint64_t iid; } *")

    def step(self, op: int, fn: int = 0, iid: int = 0) -> tuple[int, int, int]:
        self.args.op, self.args.fn, self.args.iid = op, fn, iid
        self.inst.call(0, self.args, self.out)
        return int(self.out.code), int(self.out.value), int(self.out.iid)

    def resolve(self) -> int:
        return self.step(0)[0]

    def create(self) -> int:
        return self.step(1)[2]

    def call(self, fn: int, iid: int = 0) -> tuple[int, int]:
        code, value, _ = self.step(2, fn, iid)
        return code, value

    def destroy(self, iid: int) -> None:
        self.step(3, 0, iid)


def _target(rt: luaplug.Runtime, backend: str, factory: str = OK_FACTORY, **options: Any) -> None:
    rt.load_code(TARGET.replace("@FACTORY@", factory), "target", backend=backend, **options)


def _live(rt: luaplug.Runtime) -> int:
    """Live instances of the target bundle (counted from its VM's cell)."""
    bundle = rt.bundles["target"]
    live: int = rt._loaders[bundle.backend].live_instances(bundle.id)
    return live


def _peer_functions() -> tuple[int, int, int]:
    entry = pytest.importorskip("luaplug_lupa._entry")
    functions: tuple[int, int, int] = entry.peer_functions()
    return functions


def _address(p: Any) -> int:
    return int(ffi.cast("uintptr_t", p))


def _on_lupa(backend: str) -> None:
    """Cases of the lupa side alone run once, with the runtime on lupa."""
    if backend != "lupa":
        pytest.skip("a case of the lupa backend alone")


def test_a_lupa_contract_has_c_pointers(backend: str, new_runtime: Any, monkeypatch: Any) -> None:
    _on_lupa(backend)
    monkeypatch.delenv("LUAPLUG_NO_NATIVE_ENTRY", raising=False)
    create, destroy, call = _peer_functions()
    rt = new_runtime()
    _target(rt, "lupa")
    contract = rt.contract("t.Target@1")
    iface = ffi.cast("GuestContractInterface*", contract.interface_address)
    assert [_address(iface.create_instance), _address(iface.destroy_instance), _address(iface.dispatch.vm.call)] == [
        create,
        destroy,
        call,
    ]
    # loader_data is the C peer the provider keeps (as it kept the Python callbacks' handle)
    assert _address(iface.dispatch.vm.loader_data.data) == contract.provider._c_handle.address


def test_without_native_entries_the_python_callbacks_serve(backend: str, new_runtime: Any, monkeypatch: Any) -> None:
    _on_lupa(backend)
    monkeypatch.setenv("LUAPLUG_NO_NATIVE_ENTRY", "1")
    rt = new_runtime()
    _target(rt, "lupa")
    iface = ffi.cast("GuestContractInterface*", rt.contract("t.Target@1").interface_address)
    assert _address(iface.dispatch.vm.call) not in _peer_functions()
    caller = Caller(rt, "t.Target", "lupa")
    assert caller.resolve() == 0
    iid = caller.create()
    assert iid != 0
    assert caller.call(0, iid) == (0, 42)
    caller.destroy(iid)
    assert caller.call(0, iid)[0] == AbiErrorCode.FunctionNotAvailable


@pytest.mark.parametrize("python_path", [False, True], ids=["c", "python"])
def test_peer_calls_instances_and_errors(
    backend: str, new_runtime: Any, caplog: pytest.LogCaptureFixture, monkeypatch: Any, python_path: bool
) -> None:
    if python_path:
        monkeypatch.setenv("LUAPLUG_NO_NATIVE_ENTRY", "1")
    for caller_on, callee_on in _pairs(backend, "callee"):
        rt = new_runtime()
        _target(rt, callee_on)
        caller = Caller(rt, "t.Target", caller_on)
        assert caller.resolve() == 0
        assert caller.call(0) == (0, 42)  # the default instance
        a, b = caller.create(), caller.create()
        assert 0 not in (a, b) and a != b
        for _ in range(3):
            assert caller.call(2, a)[0] == 0
        assert caller.call(2, a) == (0, 4)  # the instance keeps its state between calls
        assert caller.call(2, b) == (0, 1)
        assert caller.call(7, a)[0] == AbiErrorCode.FunctionNotAvailable
        assert caller.call(0, 987654)[0] == AbiErrorCode.FunctionNotAvailable  # no such instance
        assert caller.call(0, 2**53 + 2)[0] == AbiErrorCode.FunctionNotAvailable
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="luaplug.loader"):
            assert caller.call(1, a) == (AbiErrorCode.Generic, -1)
        texts = [r.getMessage() for r in caplog.records if r.name == "luaplug.loader"]
        assert len(texts) == 1, texts
        assert texts[0].startswith("Lua function call failed: ")
        assert "peer target failed on purpose" in texts[0]
        assert caller.call(0, a) == (0, 42)  # the VM serves on after a failure
        caller.destroy(a)
        assert caller.call(0, a)[0] == AbiErrorCode.FunctionNotAvailable  # destroyed: never callable again
        caller.destroy(a)  # twice is harmless
        caller.destroy(2**53 + 2)  # never a live instance: nothing happens
        assert caller.call(2, b) == (0, 2)
        caller.destroy(b)
        assert _live(rt) == 0
        rt.close()


def test_a_failing_factory_gives_a_null_instance_and_is_logged(
    backend: str, new_runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    available = luaplug.available_backends()
    # every pairing, the callee on either backend: the reason crosses each C interface
    pairs = sorted({(backend, other) for other in available} | {(other, backend) for other in available})
    for caller_on, callee_on in pairs:
        rt = new_runtime()
        # the default instance is built at load; every later one fails
        _target(rt, callee_on, factory='if BUILT then error("no factory today") end BUILT = true return { n = 0 }')
        caller = Caller(rt, "t.Target", caller_on)
        assert caller.resolve() == 0
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="luaplug.loader"):
            assert caller.create() == 0
        texts = [r.getMessage() for r in caplog.records if r.name == "luaplug.loader"]
        assert len(texts) == 1, texts
        assert texts[0].startswith("Lua create_instance: factory call failed: ")
        assert "no factory today" in texts[0]
        rt.close()


@pytest.mark.parametrize("change", ["reload", "unload"])
def test_a_cached_interface_goes_stale(backend: str, new_runtime: Any, tmp_path: Path, change: str) -> None:
    for caller_on, callee_on in _pairs(backend, "callee"):
        rt = new_runtime(hot_reload=True)
        bundle = tmp_path / f"{caller_on}-{callee_on}-{change}"
        bundle.mkdir()
        (bundle / "manifest.toml").write_text(
            f'name = "target"\nid = {bundle_id("target")}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n',
            "utf-8",
        )
        (bundle / "main.lua").write_text(TARGET.replace("@FACTORY@", OK_FACTORY), "utf-8")
        rt.load(bundle, backend=callee_on)
        # The test holds the old provider (and with it the interface's loader_data) the whole time.
        old = rt.contract("t.Target@1").provider
        caller = Caller(rt, "t.Target", caller_on)
        assert caller.resolve() == 0
        iid = caller.create()
        for _ in range(3):  # the instance's calls are served (and, on lupa, bound)
            assert caller.call(0, iid) == (0, 42)
        if change == "reload":
            rt.reload("target")
        else:
            rt.unload("target")
        gc.collect()
        assert caller.call(0, iid)[0] == AbiErrorCode.StaleHandle
        assert caller.call(0)[0] == AbiErrorCode.StaleHandle
        assert caller.create() == 0
        caller.destroy(iid)  # harmless on a stale interface
        if change == "reload":
            assert caller.resolve() == 0  # a fresh lookup finds the new VM
            assert caller.call(0) == (0, 42)
            fresh = caller.create()
            assert caller.call(2, fresh) == (0, 1)
            caller.destroy(fresh)
        else:
            assert caller.resolve() == AbiErrorCode.NotFound
        del old
        rt.close()


def test_a_call_after_the_runtime_closed_is_stale(backend: str, new_runtime: Any) -> None:
    for _, callee_on in _pairs(backend, "callee"):
        rt = new_runtime()
        _target(rt, callee_on)
        contract = rt.contract("t.Target@1")
        provider = contract.provider
        iface = ffi.cast("GuestContractInterface*", contract.interface_address)
        own = ffi.new("GuestContractInterface*")
        ffi.memmove(own, iface, ffi.sizeof("GuestContractInterface"))
        host = ffi.cast("const HostApi*", rt.host_api_address)
        inst = ffi.new("GuestContractInstance*")
        own.create_instance(own.dispatch.vm.loader_data, host, ffi.NULL, inst)
        assert inst.data != ffi.NULL
        rt.close()
        gc.collect()
        err = ffi.new("AbiError*")
        out = ffi.new("int32_t*")
        pair = ffi.new("struct { int32_t a; int32_t b; } *", (1, 2))
        own.dispatch.vm.call(own.dispatch.vm.loader_data, inst[0], 0, pair, out, ffi.NULL, err)
        assert err.code == AbiErrorCode.StaleHandle
        fresh = ffi.new("GuestContractInstance*")
        own.create_instance(own.dispatch.vm.loader_data, ffi.NULL, ffi.NULL, fresh)
        assert fresh.data == ffi.NULL and fresh.contract_id == 0
        own.destroy_instance(own.dispatch.vm.loader_data, ffi.NULL, inst[0])
        del provider


def test_null_loader_data_and_out_pointers(backend: str, new_runtime: Any) -> None:
    _on_lupa(backend)
    rt = new_runtime()
    _target(rt, "lupa")
    iface = ffi.cast("GuestContractInterface*", rt.contract("t.Target@1").interface_address)
    null = ffi.new("VmLoaderData*")
    err = ffi.new("AbiError*", {"code": 77})
    inst = ffi.new("GuestContractInstance*")
    iface.dispatch.vm.call(null[0], inst[0], 0, ffi.NULL, ffi.NULL, ffi.NULL, err)
    assert err.code == AbiErrorCode.InvalidPointer
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst[0], 7, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL)  # no err
    inst.data = ffi.cast("void*", 5)
    iface.create_instance(null[0], ffi.NULL, ffi.NULL, inst)
    assert inst.data == ffi.NULL  # zeroed, nothing created
    iface.create_instance(iface.dispatch.vm.loader_data, ffi.NULL, ffi.NULL, ffi.NULL)  # no out: nothing
    iface.destroy_instance(null[0], ffi.NULL, inst[0])
    assert _live(rt) == 0


def test_reentry_through_another_bundle_is_refused(backend: str, new_runtime: Any) -> None:
    for a_on, b_on in _pairs(backend, "caller"):
        rt = new_runtime()
        rt.load_code(BOUNCE.replace("@OWN@", "t.A").replace("@OTHER@", "t.B"), "a", backend=a_on)
        rt.load_code(BOUNCE.replace("@OWN@", "t.B").replace("@OTHER@", "t.A"), "b", backend=b_on)
        res = ffi.new("int32_t[3]")
        # A (lupa) fn 0 -> B fn 1 -> A fn 2: A runs on this thread and cannot be re-entered
        rt.contract("t.A@1").default.call(0, res)
        assert list(res) == [0, AbiErrorCode.ReentrantCall, 0]
        # the VMs serve on
        res[0:3] = [0, 0, 0]
        rt.contract("t.B@1").default.call(1, res)
        assert list(res) == [0, 0, 7]
        rt.close()


def test_threads_calling_the_same_peer(backend: str, new_runtime: Any) -> None:
    for _, callee_on in _pairs(backend, "callee"):
        rt = new_runtime()
        _target(rt, callee_on)
        assert _call_storm(rt) == []
        assert _live(rt) == 0
        rt.close()


def _call_storm(rt: luaplug.Runtime) -> list[str]:
    """Four threads create, call (their instance and the default) and destroy instances of the
    target through its interface at once; what went wrong."""
    iface = ffi.cast("GuestContractInterface*", rt.contract("t.Target@1").interface_address)
    vm = iface.dispatch.vm
    host = ffi.cast("const HostApi*", rt.host_api_address)
    failures: list[str] = []
    barrier = threading.Barrier(4)

    def work(k: int) -> None:
        inst = ffi.new("GuestContractInstance*")
        default = ffi.new("GuestContractInstance*")
        err = ffi.new("AbiError*")
        out = ffi.new("int32_t*")
        pair = ffi.new("struct { int32_t a; int32_t b; } *", (k, 100))
        barrier.wait()
        for i in range(300):
            iface.create_instance(vm.loader_data, host, ffi.NULL, inst)
            if inst.data == ffi.NULL:
                failures.append(f"thread {k}: no instance")
                return
            for fn, want in ((0, k + 100), (2, 1), (2, 2)):
                vm.call(vm.loader_data, inst[0], fn, pair, out, ffi.NULL, err)
                if (err.code, out[0]) != (0, want):
                    failures.append(f"thread {k} step {i} fn {fn}: {err.code} {out[0]}")
                    return
            vm.call(vm.loader_data, (inst if i % 2 else default)[0], 0, pair, out, ffi.NULL, err)
            if (err.code, out[0]) != (0, k + 100):
                failures.append(f"thread {k} step {i} default: {err.code} {out[0]}")
                return
            iface.destroy_instance(vm.loader_data, host, inst[0])

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return failures


def test_a_capped_lupa_contract_serves_peers(backend: str, new_runtime: Any) -> None:
    for caller_on, callee_on in _pairs(backend, "callee"):
        rt = new_runtime()
        try:
            _target(rt, callee_on, memory_limit=8 * 1024 * 1024)
        except luaplug.CapabilityError:
            pytest.skip("lupa without memory caps (lupa 1.x)")
        caller = Caller(rt, "t.Target", caller_on)
        assert caller.resolve() == 0
        iid = caller.create()
        for want in (1, 2, 3):
            assert caller.call(2, iid) == (0, want)
        caller.destroy(iid)
        assert caller.call(2, iid)[0] == AbiErrorCode.FunctionNotAvailable
        rt.close()
