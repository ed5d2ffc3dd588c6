"""Fuzzing (issue 8): random and mutated manifests, entry files, registration tables and
dispatch arguments; untrusted-mode escape attempts (issue 17).

Whatever goes in, only luaplug errors (``LuaplugError``) or ``AbiErrorCode`` values come out
(plus ``OverflowError``/``TypeError``/``ValueError`` where the Python dispatch API validates its
own arguments), nothing crashes, a failed load leaves nothing registered (runtime-semantics:
"luaplug's load is all-or-nothing") and the runtime keeps serving a known-good bundle.

Each hypothesis test shares one runtime between its examples on purpose: the runtime has to
survive every fault in a row.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Distribution builds may lack hypothesis (or lupa, used here as a bytecode tool): skip, don't fail.
pytest.importorskip("hypothesis")
try:
    import lupa.luajit21 as lupa_luajit
except ImportError:  # lupa 1.x: its one Lua, LuaJIT where it was built against it (Debian's python3-lupa)
    lupa_luajit = pytest.importorskip("lupa")

from _fuzz_strategies import (
    LIMIT_API,
    escape_attempt,
    init_source,
    limit_attack,
    lua_value,
    mutated_bytes,
    pointer_hunt,
    toml_value,
)
from hypothesis import HealthCheck, assume, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

import luaplug
from luaplug import AbiErrorCode
from luaplug.abi import ffi
from luaplug.backend import CAP_MEMORY_LIMIT, CAP_REFUSES_BYTECODE
from luaplug.ids import bundle_id, guest_contract_id
from luaplug.testing import BUNDLES_DIR

#: Examples per fuzz test: 150, or LUAPLUG_FUZZ_EXAMPLES. The test command runs the full count once
#: (the host Python's env) and fewer where the run checks an interpreter or a build rather than
#: exploring inputs (the other Pythons of the matrix, the distribution builds).
FUZZ_EXAMPLES = int(os.environ.get("LUAPLUG_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROBE = "fuzz.Probe@1"
_U64 = 1 << 64


def outcome(text: str) -> None:
    """Count ``text`` in hypothesis' statistics (``--hypothesis-show-statistics``); no-op elsewhere."""
    if currently_in_test_context():
        event(text)


# -- the harness -------------------------------------------------------------------------------


@dataclass
class Harness:
    """A runtime with a known-good bundle (counter) loaded, and what it must keep serving.

    :ivar count: what the counter's default impl has counted so far
    """

    runtime: luaplug.Runtime
    work: Path
    count: int = 0
    made: int = field(default=0)

    def state(self) -> tuple[list[str], int, int, list[str]]:
        """Everything a failed load must leave unchanged."""
        rt = self.runtime
        return sorted(rt.contracts()), rt.loader.live_states, rt.revision, sorted(rt.bundles)

    def fresh_dir(self) -> Path:
        """An empty directory for one example's bundle."""
        self.made += 1
        d = self.work / f"b{self.made}"
        d.mkdir()
        return d

    def attempt(self, load: Callable[[], luaplug.Bundle], *, poke: bool = False) -> luaplug.Bundle | None:
        """Run ``load``: a luaplug error must leave the runtime untouched; a bundle that did load
        must list its contracts (and, with ``poke``, serve each: only for handlers that never
        dereference their pointers) and unload cleanly. Anything else propagates."""
        before = self.state()
        try:
            bundle = load()
        except luaplug.LuaplugError as exc:
            outcome(f"refused: {type(exc).__name__}")
            assert self.state() == before, "a failed load changed the runtime"
            self.check_known_good()
            return None
        outcome("loaded")
        added = sorted(set(self.runtime.contracts()) - set(before[0]))
        assert self.runtime.loader.live_states == before[1] + 1
        assert added or bundle.name in self.runtime.bundles
        for name in added if poke else ():
            self.poke(name)
        self.runtime.unload(bundle)
        self.runtime.collector.collect()
        after = self.state()
        assert (after[0], after[1], after[3]) == (before[0], before[1], before[3])
        self.check_known_good()
        return bundle

    def poke(self, display: str) -> None:
        """Call every function of a freshly loaded contract once, then one past the end."""
        name, _, major = display.rpartition("@")
        found = self.runtime.registry.find(guest_contract_id(name, int(major)), int(major))
        assert found is not None, f"{display} is listed but cannot be found"
        contract = luaplug.Contract(self.runtime, name, int(major), found)
        n = contract.function_count
        for fn_id in range(min(n, 8)):
            assert contract.default.dispatch(fn_id) in (AbiErrorCode.Ok, AbiErrorCode.Generic)
        assert contract.default.dispatch(n) == AbiErrorCode.FunctionNotAvailable

    def check_known_good(self) -> None:
        """The counter still counts."""
        out = ffi.new("int64_t*")
        self.runtime.contract("iso.Counter@1").default.call(0, 0, out)
        self.count += 1
        assert out[0] == self.count


@pytest.fixture
def harness(runtime: luaplug.Runtime, bundles: Path) -> Iterator[Harness]:
    """The runtime fixture with counter loaded; at the end, everything reclaimed."""
    runtime.load(bundles / "counter")
    with tempfile.TemporaryDirectory(prefix="luaplug-fuzz-") as work:
        h = Harness(runtime, Path(work))
        yield h
        h.check_known_good()
        runtime.load(bundles / "adder")  # a fresh load still works
        out = ffi.new("int32_t*")
        runtime.contract("iso.Adder@1").default.call(0, ffi.new("int32_t[2]", [40, 2]), out)
        assert out[0] == 42
        assert runtime.loader.live_states == 2
        runtime.collector.collect()
        assert runtime.collector.pending == 0


def write_bundle(d: Path, manifest: bytes, entry: bytes, entry_name: str = "main.lua") -> Path:
    """A bundle directory holding exactly ``manifest`` and ``entry``."""
    (d / "manifest.toml").write_bytes(manifest)
    (d / entry_name).write_bytes(entry)
    return d


def manifest_for(name: str, provides: str = "fuzz.A@1") -> bytes:
    """A valid manifest for bundle ``name``."""
    return (
        f'name = "{name}"\nid = {bundle_id(name)}\nloader = "lua"\nfile = "main.lua"\n'
        f'version = "1.0.0"\nprovides = ["{provides}"]\n'
    ).encode()


# -- manifests ---------------------------------------------------------------------------------

BUNDLES = BUNDLES_DIR
#: The entry file the manifest fuzzers load: fuzzprobe's handlers never dereference a pointer.
PROBE_MAIN = (BUNDLES / "fuzzprobe" / "main.lua").read_bytes()


@FUZZ
@given(data=st.data())
def test_mutated_manifests(harness: Harness, data: st.DataObject) -> None:
    """TOML text mutations of a valid manifest, including bit flips into non-UTF-8 bytes."""
    base = (BUNDLES / "fuzzprobe" / "manifest.toml").read_bytes().replace(b'"fuzzprobe"', b'"fuzzed"')
    base = base.replace(str(bundle_id("fuzzprobe")).encode(), str(bundle_id("fuzzed")).encode())
    text = data.draw(mutated_bytes(base))
    d = write_bundle(harness.fresh_dir(), text, PROBE_MAIN)
    harness.attempt(lambda: harness.runtime.load(d), poke=True)


@st.composite
def manifest_tables(draw: st.DrawFn) -> bytes:
    """Manifests built key by key: each key valid, of a random type, or missing."""
    name = draw(st.one_of(st.just("fuzzed"), st.text(min_size=1, max_size=12)))
    valid: dict[str, str] = {
        "name": json_str(name),
        "id": draw(
            st.sampled_from([str(bundle_id(name)), f"0x{bundle_id(name):x}", json_str(f"0x{bundle_id(name):x}")])
        ),
        "loader": '"lua"',
        "file": '"main.lua"',
        "version": '"1.0.0"',
        "provides": '["fuzz.Probe@1"]',
    }
    lines = []
    for key in (*valid, "needs_reinit_on_dep_reload", "bundle_dependencies", "runtime"):
        choice = draw(st.sampled_from(["valid", "valid", "valid", "random", "missing"]))
        if choice == "valid" and key in valid:
            lines.append(f"{key} = {valid[key]}")
        elif choice == "random":
            lines.append(f"{key} = {draw(toml_value())}")
    if draw(st.booleans()):
        lines.append("[function_count]")
        for _ in range(draw(st.integers(0, 3))):
            lines.append(f"{json_str(draw(st.text(max_size=8)))} = {draw(toml_value(0))}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append("[[dependency]]")
        for key in draw(st.lists(st.sampled_from(["kind", "contract", "min_version", "contract_id", "bundle_id"]))):
            lines.append(f"{key} = {draw(toml_value(1))}")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def json_str(text: str) -> str:
    """``text`` as a TOML basic string."""
    return json.dumps(text)


@FUZZ
@given(manifest=manifest_tables())
def test_manifests_with_wrong_types_huge_ids_and_missing_keys(harness: Harness, manifest: bytes) -> None:
    d = write_bundle(harness.fresh_dir(), manifest, PROBE_MAIN)
    harness.attempt(lambda: harness.runtime.load(d), poke=True)


@pytest.mark.parametrize(
    "manifest",
    [
        b"",
        b"\xff\xfe\x00",
        b'name = "fuzzed"\nid = 99999999999999999999999999999\nloader = "lua"\nfile = "main.lua"\n',
        b'name = "fuzzed"\nid = -1\nloader = "lua"\nfile = "main.lua"\n',
        b'name = "fuzzed"\nid = "0x"\nloader = "lua"\nfile = "main.lua"\n',
        b'name = "\xc3\x28"\nid = 1\n',
        b'name = ["fuzzed"]\n',
        b"[name]\nid = 1\n",
        f'name = "fuzzed"\nid = {bundle_id("fuzzed")}\nloader = "lua"\nfile = {{ linux = 1 }}\n'.encode(),
        f'name = "fuzzed"\nid = {bundle_id("fuzzed")}\nloader = "lua"\nfile = "../../../etc/passwd"\n'.encode(),
        f'name = "fuzzed"\nid = {bundle_id("fuzzed")}\nloader = "lua"\nfile = "."\n'.encode(),
        f'name = "fuzzed"\nid = {bundle_id("fuzzed")}\nloader = "lua"\nfile = "main.lua\\u0000x"\n'.encode(),
    ],
    ids=lambda m: repr(m[:24]),
)
def test_hostile_manifest_examples(harness: Harness, manifest: bytes) -> None:
    """Fixed worst cases next to the random ones: they must fail as luaplug errors."""
    d = write_bundle(harness.fresh_dir(), manifest, PROBE_MAIN)
    assert harness.attempt(lambda: harness.runtime.load(d)) is None


# -- entry files -------------------------------------------------------------------------------


def load_three_ways(harness: Harness, entry: bytes) -> None:
    """``entry`` as a path bundle's main.lua, as in-memory bytes and as in-memory text."""
    d = write_bundle(harness.fresh_dir(), manifest_for("fuzzentry"), entry)
    rt = harness.runtime
    harness.attempt(lambda: rt.load(d))
    harness.attempt(lambda: rt.load_bytes(entry, "fuzzbytes"))
    harness.attempt(lambda: rt.load_code(entry.decode("utf-8", "replace"), "fuzzcode"))


@FUZZ
@given(text=st.text(max_size=300))
def test_random_entry_text(harness: Harness, text: str) -> None:
    load_three_ways(harness, text.encode("utf-8"))


@FUZZ
@given(blob=st.binary(max_size=300))
def test_binary_garbage_entry(harness: Harness, blob: bytes) -> None:
    load_three_ways(harness, blob)
    harness.attempt(lambda: harness.runtime.load_code(blob.decode("latin-1"), "fuzzlatin"))


VALID_SOURCES = ["counter", "greeter", "echo", "multi", "adder", "faulty"]


@FUZZ
@given(which=st.sampled_from(VALID_SOURCES), data=st.data())
def test_truncated_and_mutated_valid_bundles(harness: Harness, which: str, data: st.DataObject) -> None:
    """Valid entry files cut short or edited: whatever still loads must work, the rest fails cleanly."""
    src = (BUNDLES / which / "main.lua").read_bytes()
    cut = data.draw(st.integers(0, len(src)))
    d = harness.fresh_dir()
    shutil.copytree(BUNDLES / which, d, dirs_exist_ok=True)
    (d / "manifest.toml").write_bytes(manifest_for("fuzztrunc"))  # another name than the loaded counter
    (d / "main.lua").write_bytes(src[:cut])
    harness.attempt(lambda: harness.runtime.load(d))
    mutated = data.draw(mutated_bytes(src, max_ops=3))
    assume(mutated != src)
    (d / "main.lua").write_bytes(mutated)
    harness.attempt(lambda: harness.runtime.load(d))


_dumper: Any = None


def bytecode_of(source: str, strip: bool) -> bytes:
    """LuaJIT bytecode of ``source``, dumped by a lupa runtime (``string.dump``)."""
    global _dumper
    if _dumper is None:
        _dumper = lupa_luajit.LuaRuntime(encoding=None)
        if not bytes(_dumper.eval(b"jit and jit.version or _VERSION")).startswith(b"LuaJIT 2.1"):
            pytest.skip("lupa has no LuaJIT 2.1 here to dump bytecode with")
    dump = _dumper.eval("function(src, strip) return string.dump(assert(loadstring(src)), strip) end")
    return bytes(dump(source.encode("utf-8"), strip))


@pytest.mark.requires(CAP_REFUSES_BYTECODE)
@FUZZ
@given(which=st.sampled_from(VALID_SOURCES), strip=st.booleans(), data=st.data())
def test_bytecode_entries_are_refused(harness: Harness, which: str, strip: bool, data: st.DataObject) -> None:
    """``string.dump`` of valid bundles, whole, truncated or mutated: never loaded, never a crash."""
    code = bytecode_of((BUNDLES / which / "main.lua").read_text("utf-8"), strip)
    assert code.startswith(b"\x1bLJ")
    variant = data.draw(
        st.one_of(
            st.just(code),
            st.integers(1, len(code)).map(lambda n: code[:n]),
            mutated_bytes(code, max_ops=3).filter(lambda b: b.startswith(b"\x1b")),
        )
    )
    rt = harness.runtime
    d = write_bundle(harness.fresh_dir(), manifest_for("fuzzbc"), variant)
    for load in (
        lambda: rt.load(d),
        lambda: rt.load_bytes(variant, "fuzzbc_bytes"),
        lambda: rt.load_code(variant.decode("latin-1"), "fuzzbc_code"),
    ):
        assert harness.attempt(load) is None, "precompiled bytecode was loaded"


# -- registration tables -----------------------------------------------------------------------


@FUZZ
@given(source=init_source())
def test_random_registration_tables(harness: Harness, source: str) -> None:
    """``polyplug_init`` returning random nested Lua values in every position."""
    harness.attempt(lambda: harness.runtime.load_code(source, "fuzzregs"), poke=True)


@FUZZ
@given(impl=lua_value(2), raising=st.booleans())
def test_random_factory_results(harness: Harness, impl: str, raising: bool) -> None:
    """Any value (or error) from ``factory``: the default impl and every instance built from it."""
    factory = f"function() error({impl}) end" if raising else f"function() return {impl} end"
    source = (
        "local n = 0\nfunction polyplug_init()\n  return { ['fuzz.F'] = { factory = function() n = n + 1 "
        f"if n == 1 then return {{}} end return ({factory})() end, functions = {{ [0] = function() end }} }} }}, "
        "{ code = 0 }\nend\n"
    )
    rt = harness.runtime
    rt.load_code(source, "fuzzfactory")
    c = rt.contract("fuzz.F@1")
    for _ in range(3):
        try:
            inst = c.create_instance()
        except luaplug.LuaplugError:
            continue
        assert inst.dispatch(0) == AbiErrorCode.Ok
        inst.destroy()
    assert c.default.dispatch(0) == AbiErrorCode.Ok
    rt.unload("fuzzfactory")
    harness.check_known_good()


@pytest.mark.requires(CAP_MEMORY_LIMIT)
@settings(FUZZ, max_examples=40)
@given(untrusted=st.booleans(), data=st.data())
def test_budget_and_cap_attacks_are_stopped(harness: Harness, untrusted: bool, data: st.DataObject) -> None:
    """Attacks on the instruction budget and the memory cap (issue 17): the call ends with a
    luaplug error, the bundle stays usable and unloads."""
    source = data.draw(limit_attack(untrusted))
    rt = harness.runtime
    limits = {"instruction_limit": 200_000, "memory_limit": 4 * 2**20}
    if untrusted:
        # an untrusted bundle is on the value protocol: a directory with its api.toml
        d = harness.fresh_dir()
        manifest = manifest_for("fuzzlimit").decode().replace('provides = ["fuzz.A@1"]\n', "")
        write_bundle(d, (manifest + 'api = "api.toml"\n').encode(), source.encode())
        (d / "api.toml").write_text(LIMIT_API, "utf-8")
        rt.load(d, untrusted=True, **limits)
    else:
        rt.load_code(source, "fuzzlimit", **limits)
    try:
        inst = rt.contract("fuzz.L@1").default
        with pytest.raises(luaplug.DispatchError):
            inst.call(0)
        assert inst.dispatch(1) == AbiErrorCode.Ok
    finally:
        rt.unload("fuzzlimit")
    rt.collector.collect()
    harness.check_known_good()


# -- dispatch arguments ------------------------------------------------------------------------

_ADDRESSES = st.one_of(st.just(0), st.integers(0, 2**63 - 1), st.sampled_from([1, 8, 2**32, 2**47, 2**53 + 1]))


@pytest.fixture
def probe(harness: Harness, bundles: Path) -> Iterator[luaplug.Contract]:
    """fuzz.Probe@1 (handlers that never dereference args/out) loaded next to counter."""
    harness.runtime.load(bundles / "fuzzprobe")
    yield harness.runtime.contract(PROBE)
    harness.runtime.unload("fuzzprobe")


def address_kind(value: Any) -> str:
    """``address`` (a cffi pointer or an int below 2**63), ``u64`` (an int up to 2**64-1) or ``garbage``."""
    if isinstance(value, ffi.CData):
        return "address"
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64:
        return "address" if value < 2**63 else "u64"
    return "garbage"


def expected_code(fn_id: int) -> int:
    """What fuzz.Probe@1 answers for ``fn_id`` on a live instance (spec §6)."""
    return {0: 0, 1: AbiErrorCode.Generic, 2: 0, 3: 0}.get(fn_id, AbiErrorCode.FunctionNotAvailable)


@FUZZ
@given(
    fn_id=st.one_of(st.integers(-(2**70), 2**70), st.integers(-2, 6), st.sampled_from([2**31, 2**32 - 1, 2**32])),
    args=st.one_of(_ADDRESSES, st.integers(-(2**70), 2**70), st.sampled_from([None, ffi.NULL, "x", 1.5])),
    out=st.one_of(_ADDRESSES, st.integers(-(2**70), 2**70)),
    which=st.sampled_from(["default", "created", "destroyed"]),
    arena=st.sampled_from(["none", "live", "closed"]),
)
def test_python_dispatch_arguments(
    harness: Harness, probe: luaplug.Contract, fn_id: int, args: Any, out: int, which: str, arena: str
) -> None:
    """``Instance.dispatch`` with any fn_id / address / instance / arena: a code, or a Python-side
    argument error for values that are no uint32 / address / open arena."""
    inst = probe.default if which == "default" else probe.create_instance()
    if which == "destroyed":
        inst.destroy()
    if fn_id == 3:
        args = 16  # fn 3 reads args as a size and bumps the arena: keep them sane
    call_arena = None if arena == "none" else luaplug.CallArena(64, host=harness.runtime)
    if arena == "closed":
        assert call_arena is not None
        call_arena.close()
    kinds = {address_kind(args), address_kind(out)}
    valid = 0 <= fn_id < 2**32 and arena != "closed" and kinds <= {"address", "u64"}
    try:
        code = inst.dispatch(fn_id, args, out, call_arena)
    except (OverflowError, TypeError, ValueError) as exc:
        # Addresses past 2**63 are no user-space address: refusing them is Python-side validation.
        assert not valid or "u64" in kinds, f"refused valid arguments: {exc!r}"
        code = None
    finally:
        if call_arena is not None:
            call_arena.close()
    if code is not None:
        assert isinstance(code, int)
        if which == "destroyed":
            assert code in (AbiErrorCode.StaleHandle, AbiErrorCode.FunctionNotAvailable)
        elif valid:
            assert code == expected_code(fn_id)
        else:  # garbage accepted (addresses are plain numbers to Lua): still a code
            assert code in (0, AbiErrorCode.Generic, AbiErrorCode.FunctionNotAvailable)
    if which != "default":
        inst.destroy()
    assert probe.default.dispatch(0) == 0
    harness.check_known_good()


@contextmanager
def no_callback_errors() -> Iterator[list[logging.LogRecord]]:
    """Collect records of exceptions that escaped into a C callback (they cannot propagate)."""
    records: list[logging.LogRecord] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info is not None or "callback raised" in record.getMessage():
                records.append(record)

    handler = Grab(level=logging.ERROR)
    root = logging.getLogger("luaplug")
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


def c_interface(rt: luaplug.Runtime, name: str) -> tuple[Any, Any]:
    """``(HostApi*, GuestContractInterface*)`` of contract ``name`` (major 1), as a C guest sees them."""
    host = ffi.cast("HostApi*", rt.host_api_address)
    handle = host.find_guest_contract(host, guest_contract_id(name, 1), 1)
    iface = host.resolve_guest_contract(host, handle)
    assert iface != ffi.NULL
    return host, iface


@FUZZ
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["call", "call", "call", "create", "destroy"]),
            st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 8)),
            st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 6)),
            _ADDRESSES,
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_c_dispatch_with_random_instances_and_fn_ids(
    harness: Harness, probe: luaplug.Contract, ops: list[tuple[str, int, int, int, bool]]
) -> None:
    """Foreign callers through the C interface (spec §6, §7): any instance id (live, destroyed,
    never created), any fn_id, null ``err``; the answers follow the spec exactly."""
    host, iface = c_interface(harness.runtime, "fuzz.Probe")
    vm = iface.dispatch.vm
    live: set[int] = set()
    err = ffi.new("AbiError*")
    with no_callback_errors() as escaped:
        for op, iid, fn_id, addr, with_err in ops:
            inst = ffi.new("GuestContractInstance*", {"data": ffi.cast("void*", iid)})
            if op == "create":
                made = ffi.new("GuestContractInstance*")
                iface.create_instance(vm.loader_data, host, ffi.cast("void*", addr), made)
                new = int(ffi.cast("uintptr_t", made.data))
                assert new and new not in live
                live.add(new)
            elif op == "destroy":
                iface.destroy_instance(vm.loader_data, host, inst[0])  # unknown ids: a no-op
                live.discard(iid)
            else:
                args = 16 if fn_id == 3 else addr
                err.code = 0xDEAD
                iface.dispatch.vm.call(
                    vm.loader_data,
                    inst[0],
                    fn_id,
                    ffi.cast("void*", args),
                    ffi.cast("void*", addr),
                    ffi.NULL,
                    err if with_err else ffi.NULL,
                )
                if with_err:
                    alive = iid == 0 or iid in live
                    assert err.code == (expected_code(fn_id) if alive else AbiErrorCode.FunctionNotAvailable)
        null_data = ffi.new("VmLoaderData*")
        iface.dispatch.vm.call(null_data[0], ffi.new("GuestContractInstance*")[0], 0, ffi.NULL, ffi.NULL, ffi.NULL, err)
        assert err.code == AbiErrorCode.InvalidPointer
    assert escaped == []
    for iid in live:
        iface.destroy_instance(
            vm.loader_data, host, ffi.new("GuestContractInstance*", {"data": ffi.cast("void*", iid)})[0]
        )
    assert probe.default.dispatch(2) == 0
    harness.check_known_good()


@FUZZ
@given(
    sizes=st.lists(
        st.one_of(st.integers(0, 1 << 16), st.sampled_from([0, 1, 4095, 4096, 1 << 20, 2**53, 2**62])),
        min_size=1,
        max_size=12,
    ),
    capacity=st.integers(0, 256),
    with_arena=st.booleans(),
)
def test_arena_alloc_sizes(
    harness: Harness, probe: luaplug.Contract, sizes: list[int], capacity: int, with_arena: bool
) -> None:
    """``arena_alloc`` (spec §8) with any size, into a real arena or host memory: memory that is
    handed out is writable (the handler fills it), impossible sizes give 0, never a crash."""
    arena = luaplug.CallArena(capacity, host=harness.runtime) if with_arena else None
    try:
        for size in sizes:
            assert probe.default.dispatch(3, size, 0, arena) == 0
            if arena is not None and size % 3 == 0:
                arena.reset()
    finally:
        if arena is not None:
            arena.close()
    harness.check_known_good()


@FUZZ
@given(
    ops=st.lists(
        st.tuples(st.integers(-(2**65), 2**65), st.integers(-(2**65), 2**65)),
        min_size=1,
        max_size=20,
    ),
    capacity=st.integers(0, 512),
)
def test_call_arena_alloc_arguments(harness: Harness, ops: list[tuple[int, int]], capacity: int) -> None:
    """``CallArena.alloc(size, align)``: 0 for size 0 or a non-power-of-two align (spec §8), else
    aligned memory inside the arena or a block; sizes beyond memory give 0 or a Python error."""
    with luaplug.CallArena(capacity, host=harness.runtime) as arena:
        for size, align in ops:
            try:
                p = arena.alloc(size, align)
            except (OverflowError, ValueError, MemoryError):
                continue
            if size <= 0 or align <= 0 or align & (align - 1):
                assert p == 0
            elif p:
                assert p % align == 0
                if size <= 1 << 16:
                    ffi.memmove(ffi.cast("uint8_t*", p), b"\xa5" * size, size)
    harness.check_known_good()


# -- untrusted-mode escapes --------------------------------------------------------------------------


@pytest.fixture
def escape_kit(harness: Harness) -> Path:
    """OUT: files outside any bundle that an untrusted bundle must not read."""
    out = harness.work / "outside"
    out.mkdir()
    (out / "secret.lua").write_text('return "SECRET module ran"', "utf-8")
    (out / "shadow").write_text("root SECRET-HASH:1:2:3\n", "utf-8")
    return out


@FUZZ
@given(attempts=st.lists(escape_attempt(), min_size=1, max_size=4))
def test_untrusted_escape_attempts(harness: Harness, escape_kit: Path, attempts: list[str]) -> None:
    """Whatever an untrusted bundle does to package/require/the preload and loaded tables, it
    gets no full ffi, io, os, debug, loadlib or jit.util, runs no bytecode and reads no file
    outside its directory."""
    from test_sandbox import ATTACK, FORBIDDEN, assert_contained, bytecode_of_return, report_of, write_bundle

    out = str(escape_kit).replace("\\", "/")
    probes = "\n".join(f"probe({i}, function()\n{a}\nend)" for i, a in enumerate(attempts))
    d = write_bundle(harness.fresh_dir(), ATTACK % (FORBIDDEN + f"local OUT = {out!r}\n" + probes))
    (d / "compiled.lua").write_bytes(bytecode_of_return("ESCAPED bytecode ran"))
    (d / "link.lua").symlink_to(escape_kit / "secret.lua")
    (d / "linkdir").symlink_to(escape_kit, target_is_directory=True)
    before = harness.state()
    report = report_of(harness.runtime, d)
    assert set(report) == {str(i) for i in range(len(attempts))}
    assert_contained(report)
    outcome("escaped nothing")
    assert harness.state() == before
    harness.check_known_good()


# -- untrusted mode: no way to a pointer ----------------------------------------------------------

HUNT_API = """
[[guest_contract]]
name = "iso.Counter"
version = "1.0.0"
[[guest_contract.functions]]
name = "inc"
return = "i64"

[[host_contract]]
name = "host.Math"
version = "1.2.0"
[[host_contract.functions]]
name = "add"
params = [{ name = "a", type = "i32" }, { name = "b", type = "i32" }]
return = "i32"
[[host_contract.functions]]
name = "greet"
params = [{ name = "who", type = "StringView" }]
return = "StringView"
[[host_contract.functions]]
name = "boom"
return = "i32"
"""

# The hunt runs in polyplug_init (every step protected by the pcall captured first), then walks
# everything reachable and reports through the init status.
HUNT = r"""
local PCALL, TYPE, PAIRS, GETMT, GETFENV, FLOOR = pcall, type, pairs, getmetatable, getfenv, math.floor
local FORMAT, FIND, CONCAT, MAXN = string.format, string.find, table.concat, table.maxn
local kept = {}
local function keep(...)
  local n = select("#", ...)
  for i = 1, n do kept[#kept + 1] = (select(i, ...)) end
end
function polyplug_init(host)
  local steps = { %s }
  for _, step in ipairs(steps) do PCALL(step, host) end
  local seen, queue, bad, numbers = {}, { _G, GETMT(""), kept, host }, nil, {}
  local i = 0
  while i < #queue do
    i = i + 1
    local v = queue[i]
    local t = TYPE(v)
    if t == "cdata" or t == "userdata" then bad = bad or t end
    if t == "number" and v >= 65536 and v < 2 ^ 63 and v == FLOOR(v) then numbers[#numbers + 1] = FORMAT("%%.0f", v) end
    if t == "string" and (FIND(v, "cdata<", 1, true) or FIND(v, "0[xX]%%x%%x%%x%%x%%x%%x")) then bad = bad or v end
    if (t == "table" or t == "function" or t == "thread") and not seen[v] then
      seen[v] = true
      if t == "table" then
        for k, x in PAIRS(v) do queue[#queue + 1] = k queue[#queue + 1] = x end
        queue[#queue + 1] = GETMT(v)
      elseif t == "function" then
        local ok, env = PCALL(GETFENV, v)
        if ok then queue[#queue + 1] = env end
      end
    end
  end
  local report = bad and ("ESCAPED " .. bad) or ("SAFE " .. CONCAT(numbers, ","))
  return {}, { code = 1, message = report }
end
"""

_HOST_MATH: dict[int, object] = {}


@FUZZ
@given(hunts=st.lists(pointer_hunt(), min_size=1, max_size=3))
def test_untrusted_code_finds_no_pointer(harness: Harness, bundles: Path, hunts: list[str]) -> None:
    """Whatever an untrusted bundle does with what luaplug hands it (the host object, contract
    callers, their results and errors), it never holds cdata, userdata or a host address."""
    from luaplug.testing.test_host_contracts import MATH, Math

    rt = harness.runtime
    if id(rt) not in _HOST_MATH:
        _HOST_MATH[id(rt)] = rt.provide(MATH, Math(), api=bundles / "hostuser" / "api.toml")
    steps = ", ".join(f"function(host)\n{h}\nend" for h in hunts)
    d = harness.fresh_dir()
    manifest = manifest_for(f"hunt{harness.made}").decode().replace('provides = ["fuzz.A@1"]\n', "")
    manifest += 'api = "api.toml"\n[[dependency]]\nkind = "contract"\ncontract = "iso.Counter"\n'
    manifest += 'min_version = "1.0.0"\n'
    write_bundle(d, manifest.encode(), (HUNT % steps).encode())
    (d / "api.toml").write_text(HUNT_API, "utf-8")
    before = harness.state()
    with pytest.raises(luaplug.InitFailed) as info:
        rt.load(d, untrusted=True)
    report = info.value.error
    assert report.startswith("SAFE"), report
    numbers = {int(n) for n in report[5:].split(",") if n}
    assert rt.host_api.address not in numbers
    outcome("found no pointer")
    assert harness.state() == before
    harness.check_known_good()
