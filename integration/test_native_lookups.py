"""The HostApi's peer lookups in C (luaplug_entry.h's lookups section) from whichever backend's
compiled module is imported first: a host using lupa alone gets them too, one provider serves the
process, and the module functions refuse bad arguments with an exception.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from typing import Any, cast

import pytest

from luaplug.backend import import_native

# A guest driving a peer contract (iso.Adder@1, fn 0 add) through the HostApi's own functions:
# fn 0(args {op, index, generation, iid}) -> out {code, value, index, generation, iid}
#   op 0: find (code 4 when not found; index and generation: the handle)
#   op 1: resolve the handle in args (code 5 when it resolves to NULL), kept as the current one
#   op 2: create_guest_instance of the current interface (iid; 0 when none)
#   op 3: call fn 0 of instance iid on (20, 22) through dispatch.vm.call (code, value)
#   op 4: destroy_guest_instance of instance iid
CALLER = """
local ffi = require("ffi")
local guest = require("polyplug_guest")
local abi = require("polyplug_abi")
local ADDER = abi.guest_contract_id("iso.Adder", 1)
local args_p = ffi.typeof("struct { int32_t op; uint32_t index; uint32_t generation; uint32_t pad; uint64_t iid; } *")
local out_p = ffi.typeof("struct { int32_t code; int32_t value; uint32_t index; uint32_t generation; uint64_t iid; } *")
local pair = ffi.new("struct { int32_t a; int32_t b; }", 20, 22)
local current = nil

local function instance(iid)
  local inst = ffi.new("GuestContractInstance")
  inst.data = ffi.cast("void*", iid)
  inst.contract_id = ADDER
  return inst
end

local function step(self, args, out)
  local a, r = ffi.cast(args_p, args), ffi.cast(out_p, out)
  local host = guest.cast_host_interface(self.host)
  r.code, r.value, r.index, r.generation, r.iid = 0, -1, 0, 0, 0
  if a.op == 0 then
    local h = host.find_guest_contract(host, ADDER, 1)
    r.index, r.generation = h.index, h.generation
    if h.index == 0xFFFFFFFF then r.code = 4 end
  elseif a.op == 1 then
    local h = ffi.new("GuestContractHandle")
    h.index, h.generation = a.index, a.generation
    current = host.resolve_guest_contract(host, h)
    if current == nil then r.code = 5 end
  elseif a.op == 2 then
    local inst = ffi.new("GuestContractInstance[1]")
    host.create_guest_instance(host, current, nil, inst)
    r.iid = ffi.cast("uintptr_t", inst[0].data)
  elseif a.op == 3 then
    local slot = ffi.new("int32_t[1]", -1)
    local err = ffi.new("AbiError[1]")
    current.dispatch.vm.call(current.dispatch.vm.loader_data, instance(a.iid), 0, pair, slot, nil, err)
    r.code, r.value = err[0].code, slot[0]
  elseif a.op == 4 then
    host.destroy_guest_instance(host, current, instance(a.iid))
  end
end

function polyplug_init()
  return { ["t.Caller"] = { factory = function(h) return { host = h } end, functions = { [0] = step } } }, { code = 0 }
end
"""

# Run in a child process on lupa alone (argv[1]: CALLER, argv[2]: a directory to copy bundles to).
LUPA_ONLY = """
import shutil
import sys
from pathlib import Path

import luaplug
from luaplug.abi import NULL_HANDLE_INDEX, ffi
from luaplug.ids import guest_contract_id
from luaplug.runtime import RuntimeServices
from luaplug.testing import BUNDLES_DIR

# Every lookup the C table does not answer reaches these.
python_lookups = []
for name in ("_host_find", "_host_resolve"):
    def counted(self, *args, _name=name, _original=getattr(RuntimeServices, name)):
        python_lookups.append(_name)
        return _original(self, *args)
    setattr(RuntimeServices, name, counted)

rt = luaplug.Runtime("lupa", hot_reload=True)
assert "luaplug_cffi.engine" not in sys.modules and "luaplug_cffi._native" not in sys.modules
import luaplug_lupa._entry as entry

adder = shutil.copytree(BUNDLES_DIR / "adder", Path(sys.argv[2]) / "adder")
rt.load(adder)
rt.load_code(sys.argv[1], "caller", backend="lupa")
assert rt.host_api._peers != 0, "no C lookup table"
s = rt.host_api.struct
fields = ("find_guest_contract", "resolve_guest_contract", "create_guest_instance", "destroy_guest_instance")
assert [int(ffi.cast("uintptr_t", getattr(s, f))) for f in fields] == list(entry.lookups_functions())

caller = rt.contract("t.Caller@1").default
args = ffi.new("struct { int32_t op; uint32_t index; uint32_t generation; uint32_t pad; uint64_t iid; } *")
out = ffi.new("struct { int32_t code; int32_t value; uint32_t index; uint32_t generation; uint64_t iid; } *")

def step(op, handle=(0, 0), iid=0):
    args.op, args.index, args.generation, args.iid = op, handle[0], handle[1], iid
    caller.call(0, args, out)
    return int(out.code), int(out.value), (int(out.index), int(out.generation)), int(out.iid)

def find():
    return step(0)[2]

def resolves(handle):
    return step(1, handle)[0] == 0

def round_trip():
    iid = step(2)[3]
    assert iid != 0, "no instance created"
    assert step(3, iid=iid)[:2] == (0, 42)
    step(4, iid=iid)

handle = find()
assert handle[0] != NULL_HANDLE_INDEX
assert resolves(handle)  # these lookups republish the table
del python_lookups[:]
for _ in range(3):
    assert find() == handle and resolves(handle)
    round_trip()
assert python_lookups == [], python_lookups  # answered from the C table

rt.reload("adder")  # the same handle reaches the new version
assert find() == handle and resolves(handle)
round_trip()
rt.unload("adder")
for _ in range(2):
    assert find()[0] == NULL_HANDLE_INDEX
    assert not resolves(handle)
rt.load(adder)
again = find()
assert again[0] != NULL_HANDLE_INDEX and again != handle
for _ in range(2):
    assert not resolves(handle)  # stale for good
    assert resolves(again)
round_trip()
del python_lookups[:]
assert find() == again and resolves(again) and python_lookups == []

# During a bundle's init lookups are restricted to what it declared, fresh table or not.
rt.load(BUNDLES_DIR / "echo")
rt.load(BUNDLES_DIR / "counter")
counter = guest_contract_id("iso.Counter", 1)
for _ in range(2):
    assert s.find_guest_contract(s, counter, 1).index != NULL_HANDLE_INDEX
rt.load(BUNDLES_DIR / "depuser")  # its init looks up iso.Echo@1 (declared) and iso.Counter@1 (not)
bits = ffi.new("uint32_t*")
rt.contract("svc.DepUser@1").default.call(0, 0, bits)
assert bits[0] == 1, bits[0]
rt.contract("svc.DepUser@1").default.call(1, 0, bits)
assert bits[0] == 3, bits[0]
rt.close()
print("ok")
"""

# argv[1]: the backend whose engine is imported first. The HostApi's lookups are its module's,
# and stay so once the other backend's engine is imported.
FIRST_WINS = """
import sys

import luaplug
from luaplug import hostapi
from luaplug.abi import ffi

first, second = sys.argv[1], {"lupa": "cffi", "cffi": "lupa"}[sys.argv[1]]
modules = {"lupa": "luaplug_lupa._entry", "cffi": "luaplug_cffi._native"}
rt = luaplug.Runtime(first)
provider = hostapi._native_peers
luaplug.Runtime(second).close()
assert hostapi._native_peers is provider
functions = tuple(sys.modules[modules[first]].lookups_functions())
assert functions != tuple(sys.modules[modules[second]].lookups_functions())
for runtime in (rt, luaplug.Runtime(second)):
    s = runtime.host_api.struct
    assert runtime.host_api._peers != 0
    assert (int(ffi.cast("uintptr_t", s.find_guest_contract)), int(ffi.cast("uintptr_t", s.resolve_guest_contract)),
            int(ffi.cast("uintptr_t", s.create_guest_instance)),
            int(ffi.cast("uintptr_t", s.destroy_guest_instance))) == functions
    runtime.close()
print("ok")
"""


def _child(script: str, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


def _once(backend: str) -> None:
    """Cases about the process, not a backend: run once, under the lupa selection."""
    if backend != "lupa":
        pytest.skip("a case of the process, run under the lupa backend")


def _lookup_module(name: str) -> Any:
    """The compiled module ``name`` of an installed backend (its lookups published), or skip."""
    module = import_native(name)[0]
    if module is None:
        pytest.skip(f"{name} is not installed")
    if name == "luaplug_cffi._native":
        import luaplug_cffi.engine  # noqa: F401  (its lp_install publishes the functions)
    return module


def _lookup_modules() -> list[Any]:
    """The compiled modules of the installed backends that publish the lookups."""
    found = [import_native(name)[0] for name in ("luaplug_lupa._entry", "luaplug_cffi._native")]
    if found[1] is not None:
        import luaplug_cffi.engine  # noqa: F401  (its lp_install publishes the functions)
    return [m for m in found if m is not None]


def test_lupa_alone_answers_lookups_in_c(backend: str, tmp_path: Any) -> None:
    _once(backend)
    if import_native("luaplug_lupa._entry")[0] is None:
        pytest.skip("luaplug-lupa is built without its C module")
    _child(LUPA_ONLY, CALLER, str(tmp_path))


@pytest.mark.parametrize("first", ["lupa", "cffi"])
def test_the_first_provider_serves_the_process(backend: str, first: str) -> None:
    _once(backend)
    if len(_lookup_modules()) < 2:
        pytest.skip("needs both backends' compiled modules")
    _child(FIRST_WINS, first)


class _Fake:
    """A NativePeers that offers no table (the HostApi keeps its Python callbacks)."""

    find = resolve = create = destroy = 0

    def __init__(self) -> None:
        self.made = 0

    def new(self, host_size: int, py_find: int, py_resolve: int) -> int:
        self.made += 1
        return 0

    def free(self, table: int) -> None: ...

    def stale(self, table: int) -> None: ...

    def route_python(self, table: int, delta: int) -> None: ...

    def publish(self, table: int, rows: bytes, slots: bytes) -> bool:
        return False


def test_set_native_peers_keeps_the_first(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _once(backend)
    from luaplug import hostapi

    monkeypatch.setattr(hostapi, "_native_peers", None)
    first, second = _Fake(), _Fake()
    assert hostapi.set_native_peers(first) is True
    assert hostapi.set_native_peers(second) is False
    assert hostapi.set_native_peers(first) is True  # it is still the provider
    assert hostapi._native_peers is first
    hostapi.HostApi(cast(Any, _Services()))
    assert (first.made, second.made) == (1, 0)


class _Services:
    """Just enough of HostServices for a HostApi to ask for a table."""

    def _host_publish_peers(self, publish: Any) -> None: ...


def _core_arguments() -> tuple[int, int, int]:
    """What the core passes to ``lookups_new``: the HostApi's size and its Python callbacks."""
    from luaplug import hostapi

    return hostapi._HOST_SIZE, hostapi._address(hostapi._cb_find), hostapi._address(hostapi._cb_resolve)


def test_bad_arguments_raise(backend: str) -> None:
    _once(backend)
    modules = _lookup_modules()
    if not modules:
        pytest.skip("no backend's compiled module is installed")
    size, find, resolve = _core_arguments()
    for m in modules:
        for bad, error in (
            (("x", find, resolve), TypeError),
            ((size, 1.5, resolve), TypeError),
            ((size, find, None), TypeError),
            ((-1, find, resolve), ValueError),
            ((size, -find, resolve), ValueError),
            ((size, 2**70, resolve), ValueError),
            ((0, find, resolve), ValueError),
            ((size, 0, resolve), ValueError),
            ((size, find), TypeError),
        ):
            with pytest.raises(error):
                m.lookups_new(*bad)
        table = m.lookups_new(size, find, resolve)
        assert isinstance(table, int) and table != 0
        try:
            with pytest.raises(ValueError):  # every table of a module is for one HostApi size
                m.lookups_new(size + 8, find, resolve)
            for fn in (m.lookups_free, m.lookups_stale):
                for arg, error in (("1", TypeError), (None, TypeError), (0, ValueError), (table + 8, ValueError)):
                    with pytest.raises(error):
                        fn(arg)
                with pytest.raises(TypeError):
                    fn()
            with pytest.raises(ValueError):
                m.lookups_route_python(12345, 1)  # not a table of this module
            with pytest.raises(TypeError):
                m.lookups_route_python(table, "1")
            with pytest.raises(ValueError):
                m.lookups_route_python(table, 2**40)
            with pytest.raises(TypeError):
                m.lookups_route_python(table)
            for rows, slots, error in (
                (b"\0" * 23, b"", ValueError),  # rows are 24 bytes each
                (b"\0" * 24, b"\0" * 17, ValueError),  # slots are 16 bytes each
                ("rows", b"", TypeError),
                (b"", 3, TypeError),
                (b"", None, TypeError),
            ):
                with pytest.raises(error):
                    m.lookups_publish(table, rows, slots)
            with pytest.raises(TypeError):
                m.lookups_publish(table, b"")
            with pytest.raises(ValueError):
                m.lookups_publish(table + 8, b"", b"")
            assert m.lookups_publish(table, b"", b"") is True
            assert m.lookups_publish(table, bytearray(24), memoryview(bytes(16))) is True
            m.lookups_stale(table)
            m.lookups_route_python(table, 1)
            m.lookups_route_python(table, -1)
        finally:
            m.lookups_free(table)
        with pytest.raises(ValueError):  # freed: no longer a table
            m.lookups_free(table)
        with pytest.raises(ValueError):
            m.lookups_publish(table, b"", b"")
        functions = m.lookups_functions()
        assert len(functions) == 4 and all(isinstance(a, int) and a for a in functions)
        with pytest.raises(TypeError):
            m.lookups_functions(1)


@pytest.mark.parametrize("name", ["luaplug_lupa._entry", "luaplug_cffi._native"])
def test_a_table_answers_what_was_published_until_stale_or_routed(backend: str, name: str) -> None:
    _once(backend)
    m = _lookup_module(name)
    from luaplug.abi import NULL_HANDLE_INDEX, ffi

    size = _core_arguments()[0]
    cid, other = 0x1234, 0x99
    ifaces = ffi.new("GuestContractInterface[2]")
    first, second = (int(ffi.cast("uintptr_t", ifaces + i)) for i in range(2))
    # Two providers of cid (index 3 major 1, index 5 major 2, in the registry's order), one of other.
    rows = b"".join(struct.pack("=QIIII", *r) for r in ((other, 1, 0, 2, 0), (cid, 1, 3, 7, 0), (cid, 2, 5, 1, 0)))
    slots = b"".join(
        struct.pack("@NII", *s) for s in ((first, 2, 0), (0, 0, 0), (0, 0, 0), (first, 7, 0), (0, 0, 0), (second, 1, 0))
    )
    find_fn, resolve_fn, _, _ = m.lookups_functions()
    find = ffi.cast("GuestContractHandle(*)(const HostApi*, uint64_t, uint32_t)", find_fn)
    resolve = ffi.cast("const GuestContractInterface*(*)(const HostApi*, GuestContractHandle)", resolve_fn)
    mem = ffi.new("char[]", size + 8)  # a HostApi with no runtime behind it, then its table's word
    host = ffi.cast("HostApi*", mem)
    table = m.lookups_new(*_core_arguments())
    ffi.cast("uintptr_t*", mem + size)[0] = table
    try:

        def found(contract: int, major: int) -> tuple[int, int]:
            h = find(host, contract, major)
            return int(h.index), int(h.generation)

        def resolved(index: int, generation: int) -> int:
            return int(ffi.cast("uintptr_t", resolve(host, (index, generation))))

        def answers_from_table() -> None:
            assert found(cid, 0) == found(cid, 1) == (3, 7)  # the first registered that is new enough
            assert found(cid, 2) == (5, 1)
            assert found(cid, 3)[0] == NULL_HANDLE_INDEX
            assert found(other, 1) == (0, 2)
            assert found(0x1235, 0)[0] == NULL_HANDLE_INDEX
            assert resolved(3, 7) == first and resolved(5, 1) == second and resolved(0, 2) == first
            assert resolved(3, 8) == resolved(1, 0) == resolved(6, 0) == resolved(NULL_HANDLE_INDEX, 0) == 0

        def answers_from_python() -> None:
            # The core's callbacks: with no runtime behind this HostApi they find nothing.
            assert found(cid, 1)[0] == NULL_HANDLE_INDEX
            assert resolved(3, 7) == 0

        answers_from_python()  # a new table is stale
        assert m.lookups_publish(table, rows, slots) is True
        answers_from_table()
        m.lookups_route_python(table, 1)  # a bundle's init runs
        m.lookups_route_python(table, 1)
        answers_from_python()
        m.lookups_route_python(table, -1)
        answers_from_python()
        m.lookups_route_python(table, -1)
        answers_from_table()
        m.lookups_stale(table)  # a registry change
        answers_from_python()
        assert m.lookups_publish(table, rows, slots) is True
        answers_from_table()
        assert m.lookups_publish(table, b"", b"") is True  # nothing registered
        assert found(cid, 1)[0] == NULL_HANDLE_INDEX and resolved(3, 7) == 0
    finally:
        ffi.cast("uintptr_t*", mem + size)[0] = 0
        m.lookups_free(table)
