"""``polyplug_init`` and registration-table errors (spec §3-§4), as in-memory bundles.

In-memory bundles run as a chunk named after the bundle, so the texts carry that
name where a path bundle would say ``main.lua``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.testing._init_cases import CASES, GOOD_ENTRY, good_registrations, init_returning


@pytest.fixture
def loaded(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    runtime.load(bundles / "counter")
    return runtime


def snapshot(rt: luaplug.Runtime) -> tuple[Any, ...]:
    return (sorted(rt.contracts()), rt.loader.live_states, rt.revision, sorted(rt.bundles))


@pytest.mark.protocol
@pytest.mark.parametrize(("case", "src", "text", "prefix", "contains"), CASES, ids=[c[0] for c in CASES])
def test_init_error(loaded: luaplug.Runtime, case: str, src: str, text: str | None, prefix: str, contains: str) -> None:
    name = f"bad_{case}"
    with pytest.raises(luaplug.InitFailed) as info:
        loaded.load_code(src, name)
    err = info.value
    assert err.bundle == name
    if text is not None:
        assert err.error == text.format(b=name)
    assert err.error.startswith(prefix.format(b=name))
    assert contains in err.error
    # the loaded bundle still serves
    out = ffi.new("int64_t*")
    loaded.contract("iso.Counter@1").default.call(0, 0, out)
    assert out[0] == 1
    # the name is free again
    loaded.load_code(good_registrations("{ code = 0 }"), name)
    loaded.contract("x.Good@1").default.call(0, 0, out)
    assert ffi.cast("int32_t*", out)[0] == 5


@pytest.mark.parametrize(("case", "src"), [c[:2] for c in CASES], ids=[c[0] for c in CASES])
def test_a_failed_init_leaves_nothing(loaded: luaplug.Runtime, case: str, src: str) -> None:
    before = snapshot(loaded)
    with pytest.raises(luaplug.InitFailed):
        loaded.load_code(src, f"bad_{case}")
    assert snapshot(loaded) == before


@pytest.mark.protocol
@pytest.mark.parametrize("status", ["{}", '{ code = "7" .. "x" }', "{ code = false }"])
def test_status_code_that_is_not_a_u32_counts_as_ok(runtime: luaplug.Runtime, status: str) -> None:
    runtime.load_code(good_registrations(status), "lenient")
    out = ffi.new("int32_t*")
    runtime.contract("x.Good@1").default.call(0, 0, out)
    assert out[0] == 5


def test_one_bad_entry_fails_the_whole_load(loaded: luaplug.Runtime) -> None:
    src = init_returning(f'return {{ ["x.Good"] = {GOOD_ENTRY}, ["x.Bad"] = {{ functions = {{}} }} }}, {{ code = 0 }}')
    before = snapshot(loaded)
    with pytest.raises(luaplug.InitFailed) as info:
        loaded.load_code(src, "half")
    assert info.value.error.startswith("Lua handlers error: contract 'x.Bad' needs a `factory` function: ")
    assert snapshot(loaded) == before
    with pytest.raises(luaplug.ContractNotFoundError):
        loaded.contract("x.Good@1")


def test_duplicate_registration_in_one_load_is_refused(loaded: luaplug.Runtime) -> None:
    # The numeric key 1 and the string key "1" both name contract "1".
    src = init_returning(f'return {{ [1] = {GOOD_ENTRY}, ["1"] = {GOOD_ENTRY} }}, {{ code = 0 }}')
    before = snapshot(loaded)
    with pytest.raises(luaplug.InitFailed) as info:
        loaded.load_code(src, "dup")
    assert info.value.error.startswith("register_guest_contract error for contract '1': code=")
    assert "DuplicateProvider" in info.value.error
    assert snapshot(loaded) == before


def test_refused_registration_error_names_the_refused_contract(loaded: luaplug.Runtime) -> None:
    # regs[1] sits in the table's array part, so pairs() yields contract "1" first; the
    # duplicate is contract "7" (keys 7 and "7").
    src = init_returning(
        f"local regs = {{}}\n  regs[1] = {GOOD_ENTRY}\n  regs[7] = {GOOD_ENTRY}\n"
        f'  regs["7"] = {GOOD_ENTRY}\n  return regs, {{ code = 0 }}'
    )
    before = snapshot(loaded)
    with pytest.raises(luaplug.InitFailed) as info:
        loaded.load_code(src, "dup7")
    assert snapshot(loaded) == before
    assert info.value.error.startswith("register_guest_contract error for contract '7': code=")


def test_functions_keyed_from_one_register_zero_functions(runtime: luaplug.Runtime) -> None:
    src = init_returning(
        'return { ["x.Arr"] = { factory = function() return {} end,'
        " functions = { function() end, function() end } } }, { code = 0 }"
    )
    runtime.load_code(src, "array_fns")
    c = runtime.contract("x.Arr@1")
    assert c.function_count == 0
    inst = c.create_instance()
    for fn_id in range(3):
        assert c.default.dispatch(fn_id) == luaplug.AbiErrorCode.FunctionNotAvailable
        assert inst.dispatch(fn_id) == 6
    with pytest.raises(luaplug.DispatchError) as info:
        c.default.call(0)
    assert info.value.code == luaplug.AbiErrorCode.FunctionNotAvailable


def test_function_count_stops_at_the_first_nil(runtime: luaplug.Runtime) -> None:
    src = init_returning(
        'return { ["x.Gap"] = { factory = function() return {} end,'
        " functions = { [0] = function() end, [1] = function() end, [3] = function() end } } }, { code = 0 }"
    )
    runtime.load_code(src, "gap")
    c = runtime.contract("x.Gap@1")
    assert c.function_count == 2
    assert c.default.dispatch(1) == 0
    assert c.default.dispatch(3) == 6


@pytest.mark.protocol
def test_factory_may_return_nil(runtime: luaplug.Runtime) -> None:
    src = init_returning(
        'return { ["x.Nil"] = { factory = function() return nil end, functions = { [0] = function(self, _a, out)'
        ' require("ffi").cast("int32_t*", out)[0] = (self == nil) and 1 or 0 end } } }, { code = 0 }'
    )
    runtime.load_code(src, "nil_impl")
    c = runtime.contract("x.Nil@1")
    out = ffi.new("int32_t*")
    c.default.call(0, 0, out)
    assert out[0] == 1
    inst = c.create_instance()
    out[0] = 0
    inst.call(0, 0, out)
    assert out[0] == 1


def _failure_texts(backend: str, bundles: Path) -> list[str]:
    texts = []
    with luaplug.Runtime(backend) as rt:
        for name in ("broken_syntax", "broken_chunk_error"):
            with pytest.raises(luaplug.LoadError) as info:
                rt.load(bundles / name)
            texts.append(info.value.error)
        rt.load(bundles / "faulty")
        with pytest.raises(luaplug.DispatchError) as dinfo:
            rt.contract("iso.Faulty@1").default.call(0)
        texts.append(dinfo.value.lua_error or "")
    return texts


def test_error_texts_end_at_the_bundle_frames(backend: str, bundles: Path) -> None:
    for text in _failure_texts(backend, bundles):
        assert "luaplug_host" not in text and "xpcall" not in text, text
        assert "main.lua" in text


def test_every_backend_reports_the_same_error_texts(bundles: Path) -> None:
    names = luaplug.available_backends()
    if len(names) < 2:
        pytest.skip("needs two available backends")
    first = _failure_texts(names[0], bundles)
    for other in names[1:]:
        assert _failure_texts(other, bundles) == first


@pytest.mark.requires("memory_limit")
def test_a_chunk_out_of_memory_carries_the_memory_label(runtime: luaplug.Runtime) -> None:
    """The Lua runtime's label of an allocation failure, as polyplug's Lua runtime (mlua) words it."""
    greedy = "local t = {} for i = 1, 1e7 do t[i] = string.rep('y', 64) .. i end\n"
    with pytest.raises(luaplug.InitMemoryError) as info:
        runtime.load_code(greedy, "greedy", memory_limit=4 << 20)
    assert info.value.error == "Lua script load failed for greedy: memory error: not enough memory"


@pytest.mark.parametrize(
    ("value", "name"),
    [("1.5", "number"), ("2^53", "integer"), ("-2^63", "integer"), ("2^63", "number"), ("-0.0", "number"),
     ("0/0", "number"), ("true", "boolean"), ('"s"', "string"), ("function() end", "function"),
     ("coroutine.create(function() end)", "thread"), ("newproxy()", "userdata"),
     ('require("ffi").new("int64_t", 5)', "other")],
)  # fmt: skip
def test_a_wrong_status_names_its_type_as_polyplug_does(runtime: luaplug.Runtime, value: str, name: str) -> None:
    """polyplug 0.1.3's `error converting Lua <type> to table`, its Lua runtime's type names included."""
    with pytest.raises(luaplug.InitFailed) as info:
        runtime.load_code(init_returning(f'return {{ ["x.Good"] = {GOOD_ENTRY} }}, {value}'), "bad")
    assert info.value.error == f"Lua polyplug_init failed: error converting Lua {name} to table"
