"""Contract instances: per-instance state, the default impl, ids, destroy (spec §7)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi

COUNTER = "iso.Counter@1"


def inc(inst: luaplug.Instance) -> int:
    out = ffi.new("int64_t*")
    inst.call(0, 0, out)
    return int(out[0])


def get(inst: luaplug.Instance) -> int:
    out = ffi.new("int64_t*")
    inst.call(1, 0, out)
    return int(out[0])


@pytest.fixture
def counter(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Contract:
    runtime.load(bundles / "counter")
    return runtime.contract(COUNTER)


@pytest.mark.protocol
def test_instances_have_independent_state(counter: luaplug.Contract) -> None:
    a = counter.create_instance()
    b = counter.create_instance()
    assert [inc(a), inc(a), inc(a)] == [1, 2, 3]
    assert inc(b) == 1
    assert (get(a), get(b), get(counter.default)) == (3, 1, 0)


@pytest.mark.protocol
def test_many_instances(counter: luaplug.Contract) -> None:
    insts = [counter.create_instance() for _ in range(100)]
    for n, inst in enumerate(insts):
        for _ in range(n):
            inc(inst)
    assert [get(i) for i in insts] == list(range(100))
    assert len({i.id for i in insts}) == 100


@pytest.mark.protocol
def test_default_impl(counter: luaplug.Contract) -> None:
    d = counter.default
    assert d.id == 0
    assert counter.default.id == 0
    assert [inc(d), inc(counter.default)] == [1, 2]  # one default impl, state kept between calls
    inst = counter.create_instance()
    assert get(inst) == 0
    assert get(counter.default) == 2


@pytest.mark.protocol
def test_ids_count_from_one_per_contract(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "counter")
    runtime.load(bundles / "multi")
    c = runtime.contract(COUNTER)
    first, second = c.create_instance(), c.create_instance()
    assert (first.id, second.id) == (1, 2)
    # per contract, also between two contracts of one bundle (one VM)
    assert runtime.contract("iso.MultiA@1").create_instance().id == 1
    assert runtime.contract("iso.MultiB@1").create_instance().id == 1
    assert runtime.contract("iso.MultiB@1").create_instance().id == 2
    first.destroy()
    assert c.create_instance().id > second.id


def test_destroy(counter: luaplug.Contract) -> None:
    keep = counter.create_instance()
    gone = counter.create_instance()
    inc(keep)
    inc(gone)
    old_id = gone.id
    gone.destroy()
    # the Python object is stale now
    assert gone.dispatch(0) == AbiErrorCode.StaleHandle
    # the id is no longer live in the VM: any call with it is FunctionNotAvailable
    out = ffi.new("int64_t*")
    assert counter.provider.dispatcher(1, old_id, 0, int(ffi.cast("uintptr_t", out)), 0) == 6
    gone.destroy()  # twice is harmless
    assert get(keep) == 1
    assert get(counter.default) == 0


def test_destroying_the_default_is_a_no_op(counter: luaplug.Contract) -> None:
    d = counter.default
    inc(d)
    counter.provider.destroy_instance(0)
    assert get(counter.default) == 1


def test_c_interface_instances(runtime: luaplug.Runtime, counter: luaplug.Contract) -> None:
    iface = ffi.cast("GuestContractInterface*", counter.interface_address)
    vm = iface.dispatch.vm
    host = ffi.cast("const HostApi*", runtime.host_api_address)
    inst = ffi.new("GuestContractInstance*")
    ctor_args = ffi.new("int64_t*", 12345)  # constructor args are ignored
    iface.create_instance(vm.loader_data, host, ctor_args, inst)
    assert inst.data != ffi.NULL
    assert inst.contract_id == iface.contract_id
    err = ffi.new("AbiError*")
    out = ffi.new("int64_t*")
    for _ in range(2):
        vm.call(vm.loader_data, inst[0], 0, ffi.NULL, out, ffi.NULL, err)
        assert err.code == 0
    assert out[0] == 2
    # the same instance seen from Python, by id
    iid = int(ffi.cast("uintptr_t", inst.data))
    assert counter.provider.dispatcher(1, iid, 0, int(ffi.cast("uintptr_t", out)), 0) == 0
    assert out[0] == 2
    iface.destroy_instance(vm.loader_data, host, inst[0])
    vm.call(vm.loader_data, inst[0], 0, ffi.NULL, out, ffi.NULL, err)
    assert err.code == AbiErrorCode.FunctionNotAvailable
    # HostApi.create_guest_instance / destroy_guest_instance do the same
    host.create_guest_instance(host, iface, ffi.NULL, inst)
    assert inst.data != ffi.NULL
    vm.call(vm.loader_data, inst[0], 0, ffi.NULL, out, ffi.NULL, err)
    assert (err.code, out[0]) == (0, 1)
    host.destroy_guest_instance(host, iface, inst[0])


FAILING_FACTORY = """
local made = 0
function polyplug_init(host, ctx)
  return { ["x.Once"] = {
    factory = function(_host)
      made = made + 1
      if made > 2 then error("factory refuses instance " .. made) end
      return { n = made }
    end,
    functions = { [0] = function(self, _a, out) require("ffi").cast("int32_t*", out)[0] = self.n end },
  } }, { code = 0 }
end
"""


def test_factory_failure_at_create(runtime: luaplug.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    runtime.load_code(FAILING_FACTORY, "once")
    c = runtime.contract("x.Once@1")
    ok = c.create_instance()  # the default impl took the first factory call
    caplog.set_level(logging.ERROR, logger="luaplug.loader")
    with pytest.raises(luaplug.LuaplugError):
        c.create_instance()
    lines = [r.getMessage() for r in caplog.records if r.name == "luaplug.loader" and r.levelno == logging.ERROR]
    assert any(m.startswith("Lua create_instance: factory call failed: ") for m in lines)
    assert any("factory refuses instance 3" in m for m in lines)
    # nothing broke
    out = ffi.new("int32_t*")
    ok.call(0, 0, out)
    assert out[0] == 2
    c.default.call(0, 0, out)
    assert out[0] == 1


@pytest.mark.protocol
def test_factory_failure_through_the_c_interface_gives_a_null_instance(runtime: luaplug.Runtime) -> None:
    runtime.load_code(FAILING_FACTORY, "once")
    c = runtime.contract("x.Once@1")
    iface: Any = ffi.cast("GuestContractInterface*", c.interface_address)
    host = ffi.cast("const HostApi*", runtime.host_api_address)
    inst = ffi.new("GuestContractInstance*")
    host.create_guest_instance(host, iface, ffi.NULL, inst)
    assert inst.data != ffi.NULL
    inst2 = ffi.new("GuestContractInstance*")
    host.create_guest_instance(host, iface, ffi.NULL, inst2)
    assert inst2.data == ffi.NULL
    # a null instance dispatches to the default impl
    err = ffi.new("AbiError*")
    out = ffi.new("int32_t*")
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst2[0], 0, ffi.NULL, out, ffi.NULL, err)
    assert (err.code, out[0]) == (0, 1)


@pytest.mark.protocol
def test_instances_created_from_several_threads(counter: luaplug.Contract) -> None:
    made: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def create() -> None:
        barrier.wait()
        for _ in range(100):
            inst = counter.create_instance()
            with lock:
                made.append(inst.id)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(made) == list(range(1, 401))
