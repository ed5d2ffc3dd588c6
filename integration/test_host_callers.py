"""A Python host contract called through the generated ``host_contracts.lua`` callers
(``kv:get(key)``): results, and a raising implementation as the guest and the Python caller
see it (``HostContractCallFailed`` with the exception's text; ``DispatchError.__cause__``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from _filters import Store, build_filters

import luaplug
from luaplug import AbiErrorCode, DispatchError, typed


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_filters(tmp_path)


@pytest.fixture
def store(runtime: luaplug.Runtime, root: Path) -> Store:
    impl = Store()
    runtime.provide("host.Store@1", impl, api=root / "api.toml")
    return impl


@pytest.fixture
def upper(runtime: luaplug.Runtime, root: Path, store: Store) -> Iterator[typed.TypedProxy]:
    runtime.load(root / "upper")
    with runtime.bind(root / "api.toml", "text.Filter@1") as proxy:
        yield proxy


def test_typed_host_calls_reach_the_python_store(upper: typed.TypedProxy, store: Store) -> None:
    assert upper.apply("abc") == "ABC #1"
    assert upper.apply("x") == "X #2"
    assert store.data == {"upper": "2"}
    assert upper.apply("put:colour=blue") == "true"  # a function without a result returns true
    assert upper.apply("get:colour") == "got blue"
    assert upper.apply("assert:colour") == "got blue"
    assert store.data["colour"] == "blue"


def test_a_raising_implementation_returns_nil_text_and_code_to_lua(
    upper: typed.TypedProxy, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="luaplug.hostcontract"):
        answer = upper.apply("get:nope")
    code = int(AbiErrorCode.HostContractCallFailed)
    assert answer == f"error {code}: host.Store@1.get: KeyError: 'nope' (HostContractCallFailed)"
    assert len(store.raised) == 1
    assert "KeyError" in caplog.text  # the traceback is still logged


def test_get_last_error_carries_the_exceptions_text(upper: typed.TypedProxy) -> None:
    assert upper.apply("why:nope") == "host.Store@1.get: KeyError: 'nope'"


def test_a_propagated_failure_chains_the_python_exception(upper: typed.TypedProxy, store: Store) -> None:
    with pytest.raises(DispatchError) as info:
        upper.apply("assert:missing")
    assert "host.Store@1.get: KeyError: 'missing' (HostContractCallFailed)" in (info.value.lua_error or "")
    assert info.value.__cause__ is store.raised[-1]
    assert isinstance(info.value.__cause__, KeyError)


def test_a_handled_failure_is_not_chained_to_a_later_error(upper: typed.TypedProxy, store: Store) -> None:
    assert upper.apply("get:gone").startswith("error ")
    with pytest.raises(DispatchError) as info:
        upper.apply("fail")
    assert "unrelated failure" in (info.value.lua_error or "")
    assert info.value.__cause__ is None


def test_without_the_host_contract_the_caller_is_nil(runtime: luaplug.Runtime, root: Path) -> None:
    runtime.load(root / "upper")
    with runtime.bind(root / "api.toml", "text.Filter@1") as proxy:
        assert proxy.apply("abc") == "no store"


def test_a_call_of_the_default_impl_chains_too(runtime: luaplug.Runtime, root: Path, store: Store) -> None:
    runtime.load(root / "upper")
    with runtime.bind(root / "api.toml", "text.Filter@1", instance=False) as proxy:
        with pytest.raises(DispatchError) as info:
            proxy.apply("assert:k1")
    assert info.value.__cause__ is store.raised[-1]


def test_destroy_releases_a_callers_own_instance(runtime: luaplug.Runtime, root: Path) -> None:
    hc = runtime.provide("host.Store@1", Store, api=root / "api.toml", singleton=False)
    runtime.load(root / "upper")
    with runtime.bind(root / "api.toml", "text.Filter@1") as proxy:
        before = hc.live_instances
        answer = proxy.apply("own:k")
    # apply's own caller stays (the bundle does not destroy it); the destroyed one is released
    assert hc.live_instances == before + 1
    assert answer == (
        "1 then nil 4: host.Store@1.bump: no interface: the caller was destroyed, or its provider is gone (NotFound)"
    )


def test_destroy_keeps_a_singletons_instance(upper: typed.TypedProxy, store: Store) -> None:
    assert upper.apply("own:k").startswith("1 then nil 4: ")
    assert upper.apply("own:k").startswith("2 then nil 4: ")  # the shared instance still serves
    assert upper.apply("get:k") == "got 2"


def test_error_err_chains_as_assert_does(upper: typed.TypedProxy, store: Store) -> None:
    with pytest.raises(DispatchError) as info:
        upper.apply("raise:absent")
    assert "main.lua" in (info.value.lua_error or "")  # error() added the position
    assert info.value.__cause__ is store.raised[-1]


def test_a_bundle_on_another_backend_calls_the_store(runtime: luaplug.Runtime, root: Path, store: Store) -> None:
    others = [b for b in luaplug.available_backends() if b != runtime.backend_name]
    if not others:
        pytest.skip("one backend only")
    runtime.load(root / "upper", backend=others[0])
    with runtime.bind(root / "api.toml", "text.Filter@1") as proxy:
        assert proxy.apply("abc") == "ABC #1"
        with pytest.raises(DispatchError) as info:
            proxy.apply("assert:nope")
    assert info.value.__cause__ is store.raised[-1]
