"""The protocol cases run on the reference runtime (polyplug 0.1.3), and side by side with luaplug.

Not parametrized over luaplug backends: every test here runs once, on the reference (the
side-by-side tests pick a luaplug backend themselves). The conformance kit's ``protocol`` cases
run on the reference as ``--luaplug-backend reference`` (:mod:`.kit`); they are not repeated here.
Where the reference agrees with the spec the test asserts the spec's value; where it deviates,
the test asserts the spec anyway and is marked ``xfail(strict=True)`` with the deviation (also
listed in docs/differences.md).

The reference refuses any manifest whose ``provides`` entries lack a ``[function_count]``
entry, so every bundle in ``luaplug/testing/bundles`` has one (spec §15);
``test_bundle_without_function_count_loads`` records the deviation on copies without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.ids import bundle_id, guest_contract_id
from luaplug.testing import BUNDLES_DIR
from luaplug.testing._cdata import rep_arg, string_arg, text_of
from luaplug.testing._init_cases import CASES, init_returning

from .adapter import ReferenceContract, ReferenceRuntime, ReferenceRuntimeError, reference_available, vendored_copy

BUNDLES = BUNDLES_DIR

_REASON = reference_available()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

LoadCopy = Callable[..., Path]

UNLOAD_UNKNOWN = (
    "the reference refuses to unload a bundle it does not know "
    "('bundle not found for contract: bundle=0x<id> contract='); spec §10 says it is a no-op"
)
NO_FUNCTION_COUNT = (
    "the reference refuses a manifest whose `provides` entries have no `[function_count]` entry "
    "('function count mismatch for contract `<c>`: expected=0, found=0'), before the loader runs; "
    "spec §1 calls [function_count] informational for Lua"
)


# -- helpers ----------------------------------------------------------------------------------


def free_host(ref: ReferenceRuntime, sv: Any) -> None:
    host = ref.host
    host.free(host, ffi.cast("uint8_t*", sv.ptr), sv.len, 1)


def write_bundle(root: Path, name: str, source: str, provides: dict[str, int] | None = None) -> Path:
    """A bundle directory ``root/name`` with ``source`` as its entry (no ``provides`` unless given)."""
    d = root / name
    d.mkdir(parents=True)
    lines = [f'name = "{name}"', f"id = {bundle_id(name)}", 'loader = "lua"', 'file = "main.lua"', 'version = "1.0.0"']
    if provides:
        lines.append("provides = [" + ", ".join(f'"{c}"' for c in provides) + "]")
        lines.append("[function_count]")
        lines += [f'"{c}" = {n}' for c, n in provides.items()]
    (d / "manifest.toml").write_text("\n".join(lines) + "\n", "utf-8")
    (d / "main.lua").write_text(source, "utf-8")
    return d


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def ref() -> Iterator[ReferenceRuntime]:
    """A hot-reloading reference runtime, closed after the test."""
    with ReferenceRuntime(hot_reload=True) as rt:
        yield rt


@pytest.fixture
def copy_dir(tmp_path: Path) -> Callable[[str], Path]:
    """``copy_dir(name)``: a vendored copy of bundle ``name`` (with its ``[function_count]``)."""
    made: dict[str, int] = {}

    def copy(name: str) -> Path:
        made[name] = made.get(name, 0) + 1
        root = tmp_path / f"copies{made[name]}"
        root.mkdir(exist_ok=True)
        return vendored_copy(BUNDLES / name, root)

    return copy


@pytest.fixture
def load(ref: ReferenceRuntime, copy_dir: Callable[[str], Path]) -> Callable[[str], str]:
    """``load(name)``: load a vendored copy of bundle ``name`` into ``ref``; the bundle name."""

    def do(name: str) -> str:
        return ref.load(copy_dir(name))

    return do


def counter_serves(ref: ReferenceRuntime) -> None:
    c = ref.contract("iso.Counter@1")
    inst = c.create_instance()
    out = ffi.new("int64_t*")
    assert c.dispatch(0, 0, out, 0, inst) == 0
    assert c.dispatch(0, 0, out, 0, inst) == 0
    assert out[0] == 2
    c.destroy_instance(inst)


# -- the adapter --------------------------------------------------------------------------------


def test_vendored_copy_keeps_the_original_and_adds_the_sdk(tmp_path: Path) -> None:
    d = vendored_copy(BUNDLES / "echo", tmp_path)
    assert d == tmp_path / "echo"
    for module in ("abi.lua", "polyplug_abi.lua", "polyplug_guest.lua"):
        assert (d / module).read_bytes() == (luaplug.sdk_path() / module).read_bytes()
    assert (d / "manifest.toml").read_bytes() == (BUNDLES / "echo" / "manifest.toml").read_bytes()
    assert not (BUNDLES / "echo" / "abi.lua").exists()


def test_closed_runtime_refuses(copy_dir: Callable[[str], Path]) -> None:
    rt = ReferenceRuntime()
    rt.load(copy_dir("counter"))
    c = rt.contract("iso.Counter@1")
    rt.close()
    rt.close()
    assert rt.closed
    with pytest.raises(ReferenceRuntimeError, match="closed"):
        c.dispatch(2)
    with pytest.raises(ReferenceRuntimeError, match="closed"):
        rt.load(copy_dir("adder"))


# -- loading (spec §1-§4) -----------------------------------------------------------------------


def test_load_path_directory(ref: ReferenceRuntime, load: Callable[[str], str]) -> None:
    before = ref.revision
    assert load("counter") == "counter"
    assert ref.revision != before
    counter_serves(ref)


@pytest.mark.xfail(strict=True, reason=NO_FUNCTION_COUNT)
@pytest.mark.parametrize("name", ["counter", "multi"])
def test_bundle_without_function_count_loads(ref: ReferenceRuntime, tmp_path: Path, name: str) -> None:
    d = vendored_copy(BUNDLES / name, tmp_path)
    manifest = d / "manifest.toml"
    text = manifest.read_text("utf-8")
    manifest.write_text(text[: text.index("[function_count]")], "utf-8")
    ref.load(d)


def test_function_count_needs_the_version_major(ref: ReferenceRuntime, tmp_path: Path) -> None:
    """What the reference needs besides the table: the manifest `version` major equal to the provided major."""
    d = vendored_copy(BUNDLES / "counter", tmp_path)
    manifest = d / "manifest.toml"
    manifest.write_text(manifest.read_text("utf-8").replace('version = "1.0.0"', 'version = "2.0.0"'), "utf-8")
    with pytest.raises(ReferenceRuntimeError) as info:
        ref.load(d)
    assert info.value.message == "function count mismatch for contract `iso.Counter@1`: expected=0, found=0"


#: spec §3: the prefix of a chunk that fails to compile or raises (entry file main.lua)
LOAD_FAILED = "Lua script load failed for main.lua: "


def test_missing_entry_file(ref: ReferenceRuntime, copy_dir: Callable[[str], Path]) -> None:
    d = copy_dir("broken_missing_entry")
    with pytest.raises(ReferenceRuntimeError) as info:
        ref.load(d)
    assert info.value.bundle == "broken_missing_entry"
    assert info.value.error == f"Lua script load failed at {d / 'main.lua'}: file does not exist"


def test_manifest_without_file(ref: ReferenceRuntime, load: Callable[[str], str]) -> None:
    load("counter")
    with pytest.raises(ReferenceRuntimeError) as info:
        load("broken_nofile")
    assert info.value.message == 'bundle "broken_nofile" manifest.toml has an empty or missing `file` field'
    counter_serves(ref)


def test_tampered_id(ref: ReferenceRuntime, copy_dir: Callable[[str], Path]) -> None:
    d = copy_dir("adder")
    manifest = d / "manifest.toml"
    good = bundle_id("adder")
    manifest.write_text(manifest.read_text("utf-8").replace(f"id = {good}", f"id = {good ^ 1}"), "utf-8")
    with pytest.raises(ReferenceRuntimeError) as info:
        ref.load(d)
    assert info.value.message.startswith('bundle "adder" tampered with bundle_id: expected=')
    assert f"{good:x}" in info.value.message and f"{good ^ 1:x}" in info.value.message


# -- registration (spec §4, §5) -------------------------------------------------------------------


def test_ids_and_interfaces(ref: ReferenceRuntime, load: Callable[[str], str]) -> None:
    for name in ("counter", "greeter", "multi", "adder"):
        load(name)
    for display in ("iso.Counter@1", "iso.Greeter@1", "iso.MultiA@1", "iso.MultiB@1", "iso.Adder@1"):
        name, _, major = display.partition("@")
        c = ref.contract(display)
        assert c.contract_id == guest_contract_id(name, int(major))
        iface = c.iface
        assert iface.contract_id == c.contract_id
        v = iface.contract_version
        assert (v.major, v.minor, v.patch) == (1, 0, 0)
        assert iface.dispatch_type == luaplug.DispatchType.VirtualMachine
        assert iface.create_instance != ffi.NULL
        assert iface.destroy_instance != ffi.NULL
        assert iface.dispatch.vm.call != ffi.NULL
        assert ref.find(name, int(major), 0) == c.handle  # min_major 0 = any
        assert ref.find(name, int(major), 2) is None
    assert guest_contract_id("iso.Counter", 1) == 0x1CFBA3E335CCE708
    assert ref.find("iso.Nope", 1) is None


def test_explicit_major(ref: ReferenceRuntime, tmp_path: Path) -> None:
    src = init_returning(
        'return { ["x.V"] = { contract_version = 2, plugin_name = "vee",'
        " factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }"
    )
    ref.load(write_bundle(tmp_path, "v2", src))
    c = ref.contract("x.V@2")
    assert c.iface.contract_version.major == 2
    assert c.dispatch(0) == 0
    assert ref.find("x.V", 1) is None


def test_functions_keyed_from_one_register_zero_functions(ref: ReferenceRuntime, tmp_path: Path) -> None:
    src = init_returning(
        'return { ["x.Arr"] = { factory = function() return {} end,'
        " functions = { function() end, function() end } } }, { code = 0 }"
    )
    ref.load(write_bundle(tmp_path, "array_fns", src))
    c = ref.contract("x.Arr@1")
    inst = c.create_instance()
    for fn_id in range(3):
        assert c.dispatch(fn_id) == AbiErrorCode.FunctionNotAvailable
        assert c.dispatch(fn_id, instance=inst) == AbiErrorCode.FunctionNotAvailable


def test_function_count_stops_at_the_first_nil(ref: ReferenceRuntime, tmp_path: Path) -> None:
    src = init_returning(
        'return { ["x.Gap"] = { factory = function() return {} end,'
        " functions = { [0] = function() end, [1] = function() end, [3] = function() end } } }, { code = 0 }"
    )
    ref.load(write_bundle(tmp_path, "gap", src))
    c = ref.contract("x.Gap@1")
    assert (c.dispatch(0), c.dispatch(1), c.dispatch(2), c.dispatch(3)) == (0, 0, 6, 6)


def test_path_and_init_context(ref: ReferenceRuntime, copy_dir: Callable[[str], Path]) -> None:
    d = copy_dir("pathprobe")
    ref.load(d)
    c = ref.contract("iso.PathProbe@1")
    out = ffi.new("StringView*")
    with luaplug.CallArena(4096, host=ref.host_api_address) as arena:
        assert c.dispatch(0, 0, out, arena) == 0
        base = str(d).replace("\\", "/")
        assert text_of(out).decode().startswith(f"{base}/?.lua;{base}/?.init.lua;")
        assert c.dispatch(5, 0, out, arena) == 0
        assert text_of(out).decode().startswith(f"{base}/?.so")
        assert c.dispatch(2, 0, out, arena) == 0
        init_path = text_of(out).decode()
    assert Path(init_path).resolve() in (d.resolve(), (d / "manifest.toml").resolve())
    flags = ffi.new("int32_t*")
    assert c.dispatch(1, 0, flags) == 0
    assert flags[0] == 3  # no global leaked, the bundle dir serves modules
    u64 = ffi.new("uint64_t*")
    assert c.dispatch(3, 0, u64) == 0
    assert u64[0] == bundle_id("pathprobe")
    assert c.dispatch(4, 0, u64) == 0
    assert u64[0] == ref.host_api_address


# -- dispatch (spec §6) ---------------------------------------------------------------------------


@pytest.fixture
def calls(ref: ReferenceRuntime, load: Callable[[str], str]) -> ReferenceRuntime:
    for name in ("adder", "greeter", "faulty", "counter"):
        load(name)
    return ref


def test_lua_error_returns_generic_and_is_logged(calls: ReferenceRuntime, capfd: pytest.CaptureFixture[str]) -> None:
    faulty = calls.contract("iso.Faulty@1")
    assert faulty.dispatch(0) == AbiErrorCode.Generic
    assert faulty.last_error.message.ptr == ffi.NULL  # null message: the text is only logged
    assert faulty.dispatch(2) == AbiErrorCode.Generic  # a non-string error value
    out = ffi.new("int32_t*")
    assert faulty.dispatch(1, 0, out) == 0  # the VM keeps working
    assert out[0] == 1
    err = capfd.readouterr().err
    # no log sink: Error lines go to stderr as "[polyplug] [<scope>] <message>"
    assert "[polyplug] [loader.lua] Lua function call failed: " in err
    assert "boom from faulty" in err
    assert "stack traceback" in err
    assert "explode" in err
    assert err.count("Lua function call failed: ") == 2


def test_foreign_caller_through_the_raw_vm_call(calls: ReferenceRuntime) -> None:
    """The benchmark path: ``vm_call`` and ``loader_data`` straight from the adapter."""
    adder = calls.contract("iso.Adder@1")
    call, data = adder.vm_call, adder.loader_data
    inst = ffi.new("GuestContractInstance*")
    err = ffi.new("AbiError*")
    args = ffi.new("struct { int32_t a; int32_t b; } *", {"a": 40, "b": 2})
    out = ffi.new("int32_t*")
    call(data, inst[0], 0, args, out, ffi.NULL, err)
    assert (err.code, out[0]) == (0, 42)
    call(data, inst[0], 7, ffi.NULL, ffi.NULL, ffi.NULL, err)
    assert err.code == AbiErrorCode.FunctionNotAvailable


# -- instances (spec §7) -----------------------------------------------------------------------------


@pytest.fixture
def counter(ref: ReferenceRuntime, load: Callable[[str], str]) -> ReferenceContract:
    load("counter")
    return ref.contract("iso.Counter@1")


def count(c: ReferenceContract, fn_id: int, inst: int = 0) -> int:
    out = ffi.new("int64_t*")
    assert c.dispatch(fn_id, 0, out, 0, inst) == 0
    return int(out[0])


def test_destroying_the_default_is_a_no_op(counter: ReferenceContract) -> None:
    assert count(counter, 0) == 1
    counter.destroy_instance(0)
    assert count(counter, 1) == 1


def test_destroy(counter: ReferenceContract) -> None:
    keep, gone = counter.create_instance(), counter.create_instance()
    count(counter, 0, keep)
    count(counter, 0, gone)
    counter.destroy_instance(gone)
    assert counter.dispatch(1, 0, ffi.new("int64_t*"), 0, gone) == AbiErrorCode.FunctionNotAvailable
    assert count(counter, 1, keep) == 1


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


def test_a_factory_failure_is_logged(ref: ReferenceRuntime, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The reference's log line for a factory that raised (the null instance: the kit's cases)."""
    ref.load(write_bundle(tmp_path, "once", FAILING_FACTORY))
    c = ref.contract("x.Once@1")
    assert c.create_instance() != 0
    assert c.create_instance() == 0  # the factory raised
    err = capfd.readouterr().err
    assert "Lua create_instance: factory call failed: " in err
    assert "factory refuses instance 3" in err


# -- peer calls and re-entrancy (spec §9, §13) --------------------------------------------------------


def relay(ref: ReferenceRuntime, text: str, arena: luaplug.CallArena | None) -> tuple[int, str]:
    arg, _keep = string_arg(text.encode("utf-8"))
    out = ffi.new("StringView*")
    code = ref.contract("iso.Consumer@1").dispatch(0, arg, out, arena or 0)
    if code:
        return code, ""
    result = text_of(out).decode("utf-8")
    if arena is None:
        free_host(ref, out)
    return code, result


def test_consumer_when_echo_is_missing(ref: ReferenceRuntime, load: Callable[[str], str]) -> None:
    load("consumer")
    assert relay(ref, "anyone?", None) == (AbiErrorCode.Generic, "")
    load("echo")
    assert relay(ref, "now", None) == (0, "echo: now")
    ref.unload("echo")
    assert relay(ref, "gone?", None) == (AbiErrorCode.Generic, "")


def test_calls_from_several_threads_wait(ref: ReferenceRuntime, load: Callable[[str], str]) -> None:
    load("counter")
    c = ref.contract("iso.Counter@1")
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def work() -> None:
        out = ffi.new("int64_t*")
        barrier.wait()
        for _ in range(250):
            codes.append(c.dispatch(0, 0, out))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == [0] * 1000
    assert count(c, 1) == 1000


# -- reload and unload (spec §10) ---------------------------------------------------------------------


def test_failed_reload_keeps_the_old_version(ref: ReferenceRuntime, copy_dir: Callable[[str], Path]) -> None:
    d = copy_dir("counter")
    ref.load(d)
    c = ref.contract("iso.Counter@1")
    assert count(c, 0) == 1
    (d / "main.lua").write_text("function polyplug_init(\n", "utf-8")
    with pytest.raises(ReferenceRuntimeError) as info:
        ref.reload("counter")
    assert LOAD_FAILED in info.value.message
    assert count(c, 0) == 2  # the old VM, with its state


@pytest.mark.xfail(strict=True, reason=UNLOAD_UNKNOWN)
def test_unloading_an_unknown_bundle_is_a_no_op(ref: ReferenceRuntime) -> None:
    ref.unload("no_such_bundle")


# -- luaplug and the reference side by side ----------------------------------------------------------


def _luaplug_backend() -> str:
    backends = luaplug.available_backends()
    if not backends:
        pytest.skip("no luaplug backend is available")
    return backends[0]


class _Side:
    """Either runtime seen only through its ``HostApi`` and the C interfaces: the same calls, by address."""

    def __init__(self, host_address: int) -> None:
        self.host_address = host_address
        self.host: Any = ffi.cast("const HostApi*", host_address)

    def _iface(self, display: str) -> Any:
        name, _, major = display.partition("@")
        h = self.host.find_guest_contract(self.host, guest_contract_id(name, int(major)), int(major))
        assert h.index != 0xFFFFFFFF, display
        iface = self.host.resolve_guest_contract(self.host, h)
        assert iface != ffi.NULL, display
        return iface

    def contract(self, display: str) -> Callable[..., int]:
        iface = self._iface(display)
        vm = iface.dispatch.vm
        err = ffi.new("AbiError*")

        def call(fn_id: int, args: Any, out: Any, arena: luaplug.CallArena | int | None, instance: int) -> int:
            inst = ffi.new("GuestContractInstance*", {"data": ffi.cast("void*", instance)})
            inst.contract_id = iface.contract_id
            arena_ptr = ffi.cast("CallArena*", arena.address if isinstance(arena, luaplug.CallArena) else 0)
            vm.call(vm.loader_data, inst[0], fn_id, ffi.cast("void*", args), ffi.cast("void*", out), arena_ptr, err)
            return int(err.code)

        return call

    def create(self, display: str) -> int:
        inst = ffi.new("GuestContractInstance*")
        self.host.create_guest_instance(self.host, self._iface(display), ffi.NULL, inst)
        return int(ffi.cast("uintptr_t", inst.data))


def _scenario(side: _Side) -> list[Any]:
    """The same calls on either side; codes, outputs and strings, in order."""
    results: list[Any] = []
    counter = side.contract("iso.Counter@1")
    inst = side.create("iso.Counter@1")
    out64 = ffi.new("int64_t*")
    for _ in range(3):
        results.append((counter(0, 0, out64, 0, inst), int(out64[0])))
    results.append((counter(1, 0, out64, 0, 0), int(out64[0])))
    results.append(("oor", counter(3, 0, 0, None, 0), counter(2**32 - 1, 0, 0, 0, inst)))
    results.append(("unknown instance", counter(1, 0, out64, 0, 77)))

    adder = side.contract("iso.Adder@1")
    out32 = ffi.new("int32_t*")
    for a, b in ((2, 3), (-7, 4), (2**31 - 2, 1)):
        args = ffi.new("struct { int32_t a; int32_t b; } *", {"a": a, "b": b})
        results.append((adder(0, args, out32, 0, 0), int(out32[0])))
    results.append((adder(2, 0, out32, 0, 0), int(out32[0])))

    greeter = side.contract("iso.Greeter@1")
    sv = ffi.new("StringView*")
    with luaplug.CallArena(64, host=side.host_address) as arena:
        for name in ("world", "wörld ✓ 日本語", ""):
            arg, _keep = string_arg(name.encode())
            results.append((greeter(0, arg, sv, arena, 0), text_of(sv), arena.overflow_blocks))
        rep, _keep = rep_arg("é".encode(), 3000)
        results.append((greeter(1, rep, sv, arena, 0), text_of(sv), arena.overflow_blocks))
        results.append((adder(2, 0, out32, arena, 0), int(out32[0])))
    arg, _keep = string_arg(b"no arena")
    results.append((greeter(0, arg, sv, 0, 0), text_of(sv)))
    host = ffi.cast("HostApi*", side.host)
    host.free(host, ffi.cast("uint8_t*", sv.ptr), sv.len, 1)

    faulty = side.contract("iso.Faulty@1")
    results.append(("faulty", faulty(0, 0, 0, 0, 0), faulty(2, 0, 0, 0, 0), faulty(1, 0, out32, 0, 0), out32[0]))

    consumer = side.contract("iso.Consumer@1")
    with luaplug.CallArena(256, host=side.host_address) as arena:
        for text in ("hi", "wörld ✓", "x" * 5000):
            arg, _keep = string_arg(text.encode())
            results.append((consumer(0, arg, sv, arena, 0), text_of(sv)))

    echo, sdkuser = side.contract("iso.Echo@1"), side.contract("iso.SdkUser@1")
    with luaplug.CallArena(256, host=side.host_address) as arena:
        for data in (b"\xff\x2c\x78", b"\xc0\x80", b"\xed\xa0\x80", "ok ✓".encode(), b""):
            arg, _keep = string_arg(data)
            for fn_id, call in ((0, echo), (0, sdkuser), (1, sdkuser)):
                sv.ptr, sv.len = ffi.NULL, 0
                results.append(("sdk", fn_id, data, call(fn_id, arg, sv, arena, 0), text_of(sv) if sv.len else b""))

    reenter = side.contract("iso.Reenter@1")
    res = ffi.new("int32_t[3]")
    results.append(("reenter", reenter(0, 0, res, 0, 0), list(res), reenter(1, 0, out32, 0, 0), out32[0]))
    return results


SIDE_BY_SIDE = ("counter", "adder", "greeter", "faulty", "echo", "consumer", "reenter", "sdkuser")


def test_luaplug_and_the_reference_give_identical_results(
    ref: ReferenceRuntime, load: Callable[[str], str], capfd: pytest.CaptureFixture[str]
) -> None:
    backend = _luaplug_backend()
    for name in SIDE_BY_SIDE:
        load(name)
    reference = _scenario(_Side(ref.host_api_address))
    assert reference[:4] == [(0, 1), (0, 2), (0, 3), (0, 0)]  # the calls did run
    assert (0, "hello, wörld ✓ 日本語".encode(), 0) in reference
    # The SDK's to_str copies bytes that are not UTF-8 (code 0); to_str_utf8 refuses them (Generic).
    assert ("sdk", 0, b"\xff,x", 0, b"\xff,x") in reference
    assert ("sdk", 0, b"\xc0\x80", 0, b"hello, \xc0\x80") in reference
    assert ("sdk", 1, b"\xff,x", 1, b"") in reference
    with luaplug.Runtime(backend) as rt:
        for name in SIDE_BY_SIDE:
            rt.load(BUNDLES / name)
        ours = _scenario(_Side(rt.host_api_address))
    capfd.readouterr()  # the faulty calls' log lines
    assert ours == reference


def _lua_message(error: str, prefix: str) -> str:
    """The first line of a load error after ``prefix`` (the stack traceback lines differ)."""
    assert error.startswith(prefix), error
    return error[len(prefix) :].splitlines()[0]


@pytest.mark.parametrize("name", ["broken_noinit", "broken_syntax", "broken_chunk_error", "broken_missing_entry"])
def test_luaplug_and_the_reference_fail_loads_alike(
    ref: ReferenceRuntime, copy_dir: Callable[[str], Path], name: str
) -> None:
    """The same bundle name and the same text, the Lua runtime's label included, up to the traceback."""
    d = copy_dir(name)
    with pytest.raises(ReferenceRuntimeError) as theirs:
        ref.load(d)
    with luaplug.Runtime(_luaplug_backend()) as rt, pytest.raises(luaplug.LoadError) as ours:
        rt.load(d)
    # polyplug names the entry file for a failed polyplug_init; luaplug the bundle, and the file in .file
    assert (ours.value.file or ours.value.bundle) == theirs.value.bundle
    assert ours.value.bundle == name
    prefix = LOAD_FAILED
    if name in ("broken_syntax", "broken_chunk_error"):
        assert _lua_message(ours.value.error, prefix) == _lua_message(theirs.value.error, prefix)
    else:
        assert ours.value.error == theirs.value.error


#: Every init failure case, side by side (a syntax error and a raising chunk included).
ALL_CASES = [(case, src) for case, src, *_ in CASES]


@pytest.mark.parametrize(("case", "src"), ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_luaplug_and_the_reference_fail_inits_alike(ref: ReferenceRuntime, tmp_path: Path, case: str, src: str) -> None:
    """The same text up to the stack traceback, whose lines come from each engine's own frames."""
    d = write_bundle(tmp_path, f"bad_{case}", src, {"x.Good@1": 1})
    with pytest.raises(ReferenceRuntimeError) as theirs:
        ref.load(vendored_copy(d, tmp_path / "vendored"))
    with luaplug.Runtime(_luaplug_backend()) as rt, pytest.raises(luaplug.LoadError) as ours:
        rt.load(d)
    # polyplug names the entry file for a failed polyplug_init; luaplug the bundle, and the file in .file
    assert (ours.value.file or ours.value.bundle) == theirs.value.bundle
    assert ours.value.bundle == f"bad_{case}"
    mine, reference = ours.value.error, theirs.value.error
    assert mine.split("\nstack traceback:")[0] == reference.split("\nstack traceback:")[0]
    assert ("\nstack traceback:" in mine) == ("\nstack traceback:" in reference)
