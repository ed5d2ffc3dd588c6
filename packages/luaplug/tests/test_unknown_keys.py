"""Unknown keys in manifest.toml and api.toml are reported (issue 19): file, key, nearest known key."""

from __future__ import annotations

import logging

import pytest

from luaplug.ids import bundle_id
from luaplug.manifest import parse
from luaplug.typed import parse_api

_BASE = f'name = "b"\nid = {bundle_id("b")}\nloader = "lua"\nfile = "main.lua"\nversion = "1.0.0"\n'


def test_manifest_typos_are_warned(caplog: pytest.LogCaptureFixture) -> None:
    text = _BASE + 'verison = "2.0.0"\nprovide = ["x@1"]\n[[dependency]]\ncontract = "x"\nmin_versoin = "1"\n'
    with caplog.at_level(logging.WARNING, "luaplug.manifest"):
        m = parse(text, "/b/manifest.toml")
    assert m.warnings == (
        "/b/manifest.toml: unknown key `verison` (did you mean `version`?)",
        "/b/manifest.toml: unknown key `provide` (did you mean `provides`?)",
        "/b/manifest.toml: unknown key `dependency[0].min_versoin` (did you mean `min_version`?)",
    )
    assert [r.getMessage() for r in caplog.records] == list(m.warnings)
    assert all(r.levelno == logging.WARNING and r.name == "luaplug.manifest" for r in caplog.records)


def test_a_clean_manifest_warns_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse(_BASE + 'provides = ["x@1"]\n', "m.toml").warnings == ()
    assert not caplog.records


def test_api_typos_are_warned(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        '[[guest_contract]]\nname = "text.Filter"\nversion = "1.0.0"\n'
        '[[guest_contract.function]]\nname = "apply"\n'
        '[[host_contract]]\nname = "host.Store"\nversion = "1.0.0"\nsingleton = true\n'
        '[[host_contract.functions]]\nname = "get"\nretrun = "i32"\n'
        'params = [{ name = "k", type = "i32", dosc = "key" }]\n'
        '[[enum]]\nname = "E"\nvariants = [{ name = "A", valeu = 1 }]\n'
    )
    with caplog.at_level(logging.WARNING, "luaplug.typed"):
        api = parse_api(text, path="api.toml")
    assert api.warnings == (
        "api.toml: unknown key `enum[0].variants[0].valeu` (did you mean `value`?)",
        "api.toml: unknown key `guest_contract[0].function` (did you mean `functions`?)",
        "api.toml: unknown key `host_contract[0].functions[0].retrun` (did you mean `return`?)",
        "api.toml: unknown key `host_contract[0].functions[0].params[0].dosc` (did you mean `docs`?)",
    )
    assert [r.getMessage() for r in caplog.records] == list(api.warnings)
