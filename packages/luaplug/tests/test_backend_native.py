"""What luaplug.backend gives every backend's engine: the shared C entry's header, one error
mapping helper, the prelude cache, the import guard and the switch to the pure-Python call path."""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from luaplug import reentry
from luaplug.abi import DispatchType
from luaplug.abi import core_ffi as ffi
from luaplug.backend import (
    CAP_MEMORY_LIMIT,
    DEFAULT_OPTIONS,
    NO_NATIVE_ENTRY,
    BackendInfo,
    BackendRegistry,
    EngineState,
    GuardedEngine,
    LuaError,
    LuaMemoryError,
    LuaplugError,
    LuaSyntaxError,
    StateOptions,
    get_include,
    import_native,
    lua_errors,
    map_errors,
    native_entries,
    prelude_code,
    prelude_source,
    register_backends,
    vm_interface,
)


def test_get_include_holds_the_entry_header_with_the_cells_slots() -> None:
    header = Path(get_include(), "luaplug_entry.h").read_text(encoding="utf-8")
    slots = {m[1]: int(m[2]) for m in re.finditer(r"#define LUAPLUG_CELL_(\w+) (\d+)", header)}
    assert slots == {
        "THREAD": reentry.CELL_THREAD,
        "DEPTH": reentry.CELL_DEPTH,
        "RETIRED": reentry.CELL_RETIRED,
        "LIVE": reentry.CELL_LIVE,
        "SLOTS": reentry.CELL_SLOTS,
    }
    for name in ("_py_dispatch", "_py_call", "_failed", "_translate", "_address", "cell_address"):
        assert f'"{name}"' in header  # the native-entry protocol's names, read by string


def test_the_prelude_names_the_same_cell_slots() -> None:
    found = re.search(r"local THREAD, DEPTH, RETIRED, LIVE = (\d+), (\d+), (\d+), (\d+)", prelude_source())
    assert found is not None
    assert tuple(map(int, found.groups())) == (
        reentry.CELL_THREAD,
        reentry.CELL_DEPTH,
        reentry.CELL_RETIRED,
        reentry.CELL_LIVE,
    )
    assert not re.search(r"cell\[\d\]", prelude_source())


class EngineSyntax(Exception):
    pass


class EngineError(Exception):
    pass


class EngineNestedSyntax(EngineSyntax):
    pass


def test_map_errors_by_code_and_by_exception_class() -> None:
    codes = map_errors({2: LuaSyntaxError, 3: LuaMemoryError})
    assert type(codes(2, "bad")) is LuaSyntaxError and str(codes(2, "bad")) == "bad"
    assert type(codes(3, "full")) is LuaMemoryError
    assert type(codes(1, "ran")) is LuaError  # anything else: the default
    exceptions = map_errors({EngineSyntax: LuaSyntaxError}, default=LuaMemoryError)
    mapped = exceptions(EngineNestedSyntax("x = = 1"))  # along the class hierarchy
    assert type(mapped) is LuaSyntaxError and str(mapped) == "x = = 1"
    assert type(exceptions(EngineError("oom"))) is LuaMemoryError


def test_lua_errors_maps_syntax_and_memory_and_the_rest_to_lua_error() -> None:
    codes = lua_errors(2, 3)
    assert [type(codes(k, "t")) for k in (1, 2, 3)] == [LuaError, LuaSyntaxError, LuaMemoryError]
    caught = lua_errors(EngineSyntax, None, catch=(EngineSyntax, EngineError))
    with pytest.raises(LuaSyntaxError, match="x = = 1"):
        with caught:
            raise EngineNestedSyntax("x = = 1")
    with pytest.raises(LuaError) as other:
        with caught:
            raise EngineError("ran")
    assert type(other.value) is LuaError and str(other.value) == "ran"


def test_map_errors_as_a_context_manager_reraises_what_it_catches() -> None:
    mapped = map_errors({EngineSyntax: LuaSyntaxError}, catch=(EngineSyntax, EngineError))
    with pytest.raises(LuaSyntaxError, match="bad") as info:
        with mapped:
            raise EngineNestedSyntax("bad")
    assert isinstance(info.value.__cause__, EngineNestedSyntax)
    with pytest.raises(LuaError) as other:
        with mapped:
            raise EngineError("ran")
    assert type(other.value) is LuaError
    with pytest.raises(KeyError):  # not the engine's: passes unchanged
        with mapped:
            raise KeyError("x")
    with mapped:
        pass


def test_prelude_code_is_dumped_once_and_falls_back_to_the_source() -> None:
    calls: list[bytes] = []

    def dump(src: bytes) -> bytes:
        calls.append(src)
        return b"\x1bLJ" + src[:4]

    code = prelude_code(dump)
    assert code() == code() == b"\x1bLJ" + prelude_source().encode()[:4]
    assert calls == [prelude_source().encode()]
    assert prelude_code(lambda src: None)() == prelude_source().encode()
    # the limits part: dumped on its first use, once, apart from the host part
    harden = prelude_source("harden").encode()
    assert code("harden") == code("harden") == b"\x1bLJ" + harden[:4]
    assert calls == [prelude_source().encode(), harden]
    assert prelude_code(lambda src: None)("harden") == harden


def test_the_prelude_parts_are_two_files_and_nothing_else() -> None:
    assert prelude_source() == prelude_source("host")
    assert "function P.harden(" in prelude_source("harden") and "function P.values(" in prelude_source("harden")
    # the host part only loads the other one; it defines neither entry itself
    assert "function P.harden(" not in prelude_source() and "function P.load_part(" in prelude_source()
    with pytest.raises(ValueError, match="no prelude part"):
        prelude_source("../luaplug_host")


@pytest.mark.parametrize(("value", "native"), [(None, True), ("", True), ("0", True), ("1", False), ("yes", False)])
def test_native_entries_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, native: bool
) -> None:
    if value is None:
        monkeypatch.delenv(NO_NATIVE_ENTRY, raising=False)
    else:
        monkeypatch.setenv(NO_NATIVE_ENTRY, value)
    assert native_entries() is native


class Missing(GuardedEngine):
    name = "missing"
    import_error = "the native module cannot be loaded (no such file)"
    state_class = EngineState  # never made: the module is missing

    def lua_version(self) -> str:
        return ""


def test_a_guarded_engine_without_its_module_is_unavailable_and_opens_nothing() -> None:
    assert Missing.unavailable_reason() == "the native module cannot be loaded (no such file)"
    with pytest.raises(LuaplugError, match="no such file"):
        Missing().new_state(host_address=0, bundle="b", options=DEFAULT_OPTIONS)


def test_register_backends_is_a_hook_adding_each_backend() -> None:
    import pluggy

    from luaplug.backend import discovery

    a, b = BackendInfo(name="a", engine="m:A"), BackendInfo(name="b", engine="m:B", priority=3)
    plugin = types.ModuleType("plugin")  # hashable, as pluggy 1.0 needs a plugin to be
    plugin.luaplug_register_backends = register_backends(a, b)  # type: ignore[attr-defined]
    pm = pluggy.PluginManager(discovery.PROJECT_NAME)
    pm.add_hookspecs(discovery.HookSpecs)
    pm.register(plugin)
    registry = BackendRegistry()
    pm.hook.luaplug_register_backends(register=registry)
    assert registry.backends == {"a": a, "b": b}


class Recording(EngineState):
    """A state whose compiled entry is ``bind`` recording its arguments; ``targets`` maps a
    contract index to what :meth:`native_target` answers (an exception: raised)."""

    def __init__(self, options: StateOptions = DEFAULT_OPTIONS, targets: dict[int, object] | None = None) -> None:
        super().__init__()
        self.options = options
        self.targets = targets or {}
        self.native_bind = lambda *args: ("entry", *args)

    def native_target(self, cidx: int, instance_id: int) -> tuple[object, int, int] | None:
        found = self.targets.get(cidx)
        if isinstance(found, Exception):
            raise found
        return found  # type: ignore[return-value]

    def call_prelude(self, entry: str, *args: int | str) -> tuple[object, ...]:
        return ()

    def dispatcher(self, cidx: int) -> object:  # type: ignore[override]
        return None

    def close(self) -> None:
        pass


def test_native_entry_binds_the_target_unless_none_closed_or_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NO_NATIVE_ENTRY, raising=False)
    target = (print, 0x1000, 7)
    state = Recording(targets={1: target, 2: LuaplugError("the bundle VM is closed")})
    assert state.native_entry(1, 7, "inst", 1) == ("entry", state, "inst", 1, *target)
    assert state.native_entry(2, 7, "inst", 0) is None  # closed meanwhile
    assert state.native_entry(3, 7, "inst", 0) is None  # no target
    monkeypatch.setenv(NO_NATIVE_ENTRY, "1")
    assert state.native_entry(1, 7, "inst", 0) is None
    state.native_bind = None
    monkeypatch.delenv(NO_NATIVE_ENTRY)
    assert state.native_entry(1, 7, "inst", 0) is None


class Bound(Recording):
    """A state whose bound dispatchers are Python callables (none for contract 3)."""

    def bound_dispatcher(self, cidx: int, instance_id: int) -> Callable[..., object] | None:
        return None if cidx == 3 else functools.partial(print, cidx, instance_id)

    native_target = EngineState.native_target  # the default, over bound_dispatcher


def test_the_default_native_target_is_the_bound_dispatcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NO_NATIVE_ENTRY, raising=False)
    state = Bound()
    entry = state.native_entry(2, 9, "inst", 0)
    assert entry[:4] == ("entry", state, "inst", 0) and entry[5:] == (0, 0)
    assert (entry[4].args, entry[4].func) == ((2, 9), print)
    assert state.native_entry(3, 9, "inst", 0) is None
    assert EngineState.native_target(Recording(), 1, 1) is None  # no bound dispatcher: no entry


class Uncapped(GuardedEngine):
    name = "uncapped"
    state_class = Recording

    def lua_version(self) -> str:
        return "LuaJIT 2.1"


class Capped(Uncapped):
    capabilities = frozenset({CAP_MEMORY_LIMIT})


def test_a_guarded_engine_without_the_memory_capability_never_makes_a_capped_state() -> None:
    capped = StateOptions(memory_limit=1 << 20)
    with pytest.raises(LuaplugError, match="uncapped engine cannot cap a VM's memory"):
        Uncapped().new_state(host_address=0, bundle="b", options=capped)
    assert isinstance(Uncapped().new_state(host_address=0, bundle="b"), Recording)
    state = Capped().new_state(host_address=0, bundle="b", options=capped)
    assert isinstance(state, Recording) and state.options is capped


def test_import_native_gives_the_module_or_why_not() -> None:
    assert import_native("luaplug.abi") == (pytest.importorskip("luaplug.abi"), None)
    module, reason = import_native("luaplug._no_such_native", "install a compiler")
    assert module is None
    assert reason is not None and reason.startswith("the compiled module luaplug._no_such_native cannot be loaded (")
    assert reason.endswith("; install a compiler")
    assert import_native("luaplug._no_such_native")[1] == reason.removesuffix("; install a compiler")


def test_vm_interface_takes_pointers_or_their_addresses() -> None:
    provider = types.SimpleNamespace(contract_id=0xABC, major=2)
    fns = [ffi.cast(t, 0x1000 + i) for i, t in enumerate(("CreateInstanceFn", "DestroyInstanceFn", "VmCallFn"))]
    by_pointer = vm_interface(provider, *fns, ffi.cast("void*", 0x2000))  # type: ignore[arg-type]
    by_address = vm_interface(provider, 0x1000, 0x1001, 0x1002, 0x2000)  # type: ignore[arg-type]
    for iface in (by_pointer, by_address):
        assert (iface.contract_id, iface.contract_version.major) == (0xABC, 2)
        assert iface.dispatch_type == DispatchType.VirtualMachine
        fields = (
            iface.create_instance,
            iface.destroy_instance,
            iface.dispatch.vm.call,
            iface.dispatch.vm.loader_data.data,
        )
        assert [int(ffi.cast("uintptr_t", p)) for p in fields] == [0x1000, 0x1001, 0x1002, 0x2000]
