"""Loading bundles from every source, and every way a load can fail (spec §1-§4, §10).

A failed load must leave the runtime exactly as it was: no contract, no VM, no
revision bump, and the bundles loaded before keep serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.abi import ffi
from luaplug.ids import bundle_id
from luaplug.manifest import platform_key

COUNTER = "iso.Counter@1"


def snapshot(rt: luaplug.Runtime) -> tuple[Any, ...]:
    return (sorted(rt.contracts()), rt.loader.live_states, rt.revision, sorted(rt.bundles))


def assert_counter_serves(rt: luaplug.Runtime) -> None:
    out = ffi.new("int64_t*")
    inst = rt.contract(COUNTER).create_instance()
    inst.call(0, 0, out)
    inst.call(0, 0, out)
    assert out[0] == 2
    inst.destroy()


@pytest.fixture
def loaded(runtime: luaplug.Runtime, bundles: Path) -> luaplug.Runtime:
    """A runtime with the counter bundle loaded (it must survive every failure below)."""
    runtime.load(bundles / "counter")
    return runtime


# -- sources ---------------------------------------------------------------------------------


def test_load_path_directory(runtime: luaplug.Runtime, bundles: Path) -> None:
    b = runtime.load(bundles / "counter")
    assert b.name == "counter"
    assert b.id == bundle_id("counter")
    assert runtime.contracts() == [COUNTER]
    assert runtime.loader.live_states == 1
    assert_counter_serves(runtime)


@pytest.mark.parametrize("inside", ["manifest.toml", "main.lua"])
def test_load_path_naming_a_file_in_the_bundle(runtime: luaplug.Runtime, bundles: Path, inside: str) -> None:
    b = runtime.load(str(bundles / "counter" / inside))
    assert b.name == "counter"
    assert_counter_serves(runtime)


def test_load_code(runtime: luaplug.Runtime, bundles: Path) -> None:
    src = (bundles / "counter" / "main.lua").read_text("utf-8")
    b = runtime.load_code(src, "counter_code")
    assert (b.name, b.id) == ("counter_code", bundle_id("counter_code"))
    assert runtime.contracts() == [COUNTER]
    assert_counter_serves(runtime)


def test_load_bytes(runtime: luaplug.Runtime, bundles: Path) -> None:
    data = (bundles / "counter" / "main.lua").read_bytes()
    b = runtime.load_bytes(data, "counter_bytes")
    assert b.name == "counter_bytes"
    assert_counter_serves(runtime)


def test_in_memory_bundle_can_require_the_sdk(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load_code((bundles / "echo" / "main.lua").read_text("utf-8"), "echo_code")
    assert runtime.contracts() == ["iso.Echo@1"]


def test_invalid_utf8_bytes(loaded: luaplug.Runtime) -> None:
    before = snapshot(loaded)
    with pytest.raises(luaplug.InvalidSourceEncoding) as info:
        loaded.load_bytes(b"-- caf\xe9\nfunction polyplug_init() end\n", "badenc")
    err = info.value
    assert isinstance(err, luaplug.LoadError)
    assert (err.loader, err.source_kind, err.bundle) == ("lua", "bytes", "badenc")
    assert snapshot(loaded) == before
    assert_counter_serves(loaded)


def test_same_bundle_name_twice_is_refused(loaded: luaplug.Runtime, bundles: Path) -> None:
    before = snapshot(loaded)
    with pytest.raises(luaplug.LoadError):
        loaded.load(bundles / "counter")
    with pytest.raises(luaplug.LoadError):
        loaded.load_code((bundles / "adder" / "main.lua").read_text("utf-8"), "counter")
    assert snapshot(loaded) == before
    assert_counter_serves(loaded)


# -- broken bundles on disk --------------------------------------------------------------------

LOAD_FAILED = "Lua script load failed for main.lua: "

PATH_CASES = [
    # (bundle, exact text or None, prefix, substring: the Lua message at the chunk's line)
    ("broken_noinit", "Lua plugin missing polyplug_init function: bundle=main.lua", "", ""),
    ("broken_syntax", None, LOAD_FAILED, "[string \"main.lua\"]:3: unexpected symbol near ','"),
    ("broken_chunk_error", None, LOAD_FAILED, '[string "main.lua"]:3: chunk exploded'),
]


@pytest.mark.protocol
@pytest.mark.parametrize(("name", "text", "prefix", "contains"), PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_broken_bundle_on_disk(
    loaded: luaplug.Runtime, bundles: Path, name: str, text: str | None, prefix: str, contains: str
) -> None:
    with pytest.raises(luaplug.InitFailed) as info:
        loaded.load(bundles / name)
    err = info.value
    assert err.bundle == name
    assert str(err).startswith(f"bundle {name!r}")
    if text is not None:
        assert err.error == text
    assert err.error.startswith(prefix)
    assert contains in err.error
    assert_counter_serves(loaded)


@pytest.mark.parametrize("name", [c[0] for c in PATH_CASES])
def test_a_broken_bundle_on_disk_leaves_nothing(loaded: luaplug.Runtime, bundles: Path, name: str) -> None:
    before = snapshot(loaded)
    with pytest.raises(luaplug.InitFailed):
        loaded.load(bundles / name)
    assert snapshot(loaded) == before


@pytest.mark.protocol
def test_chunk_error_text_names_the_chunk_and_the_error(loaded: luaplug.Runtime, bundles: Path) -> None:
    with pytest.raises(luaplug.InitFailed) as info:
        loaded.load(bundles / "broken_chunk_error")
    assert "main.lua" in info.value.error[len("Lua script load failed for main.lua: ") :]
    assert "chunk exploded" in info.value.error


def test_missing_entry_file(loaded: luaplug.Runtime, bundles: Path) -> None:
    before = snapshot(loaded)
    with pytest.raises(luaplug.InitFailed) as info:
        loaded.load(bundles / "broken_missing_entry")
    entry = bundles / "broken_missing_entry" / "main.lua"
    assert info.value.error == f"Lua script load failed at {entry}: file does not exist"
    assert snapshot(loaded) == before


def test_entry_file_that_is_not_utf8(loaded: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("adder")
    entry = d / "main.lua"
    entry.write_bytes(b"-- caf\xe9\n" + entry.read_bytes())
    before = snapshot(loaded)
    with pytest.raises(luaplug.InvalidSourceEncoding) as info:
        loaded.load(d)
    assert info.value.error.startswith(f"Lua script load failed at {entry}: ")
    assert "does not exist" not in info.value.error and "UTF-8" in info.value.error
    assert info.value.path == str(entry) and info.value.source_kind == "file"
    assert snapshot(loaded) == before


def test_manifest_without_file(loaded: luaplug.Runtime, bundles: Path) -> None:
    before = snapshot(loaded)
    with pytest.raises(luaplug.ManifestMissingFile) as info:
        loaded.load(bundles / "broken_nofile")
    assert isinstance(info.value, luaplug.LoadError)
    assert info.value.bundle == "broken_nofile"
    assert info.value.error == 'bundle "broken_nofile" manifest.toml has an empty or missing `file` field'
    assert snapshot(loaded) == before
    assert_counter_serves(loaded)


MANIFEST_EDITS = [
    # (what to replace, replacement, offending key or None)
    (f"id = {bundle_id('adder')}", f"id = {bundle_id('adder') ^ 1}", "id"),
    ('name = "adder"', 'name = ""', "name"),
    ('loader = "lua"', 'runtime = "lua"', "loader"),
    ('version = "1.0.0"', 'version = "one"', "version"),
    ('provides = ["iso.Adder@1"]', "provides = 3", "provides"),
    ('provides = ["iso.Adder@1"]', "provides = [", None),
]


@pytest.mark.parametrize(("old", "new", "key"), MANIFEST_EDITS, ids=[str(e[2]) for e in MANIFEST_EDITS])
def test_malformed_manifest(loaded: luaplug.Runtime, copy_bundle: Any, old: str, new: str, key: str | None) -> None:
    d: Path = copy_bundle("adder")
    manifest = d / "manifest.toml"
    text = manifest.read_text("utf-8")
    assert old in text
    manifest.write_text(text.replace(old, new), "utf-8")
    before = snapshot(loaded)
    with pytest.raises(luaplug.ManifestError) as info:
        loaded.load(d)
    assert info.value.path == str(manifest)
    assert info.value.key == key
    if key == "id":
        expected = bundle_id("adder")
        assert str(info.value).startswith('bundle "adder" tampered with bundle_id: expected=')
        assert f"{expected:x}" in str(info.value) and f"{expected ^ 1:x}" in str(info.value)
    else:
        assert str(info.value).startswith(f"manifest parse error for {manifest}: ")
    assert snapshot(loaded) == before
    assert_counter_serves(loaded)


def test_missing_manifest(loaded: luaplug.Runtime, tmp_path: Path) -> None:
    with pytest.raises(luaplug.ManifestError) as info:
        loaded.load(tmp_path)
    assert info.value.path == str(tmp_path / "manifest.toml")


def edit_manifest(d: Path, old: str, new: str) -> Path:
    manifest = d / "manifest.toml"
    text = manifest.read_text("utf-8")
    assert old in text
    manifest.write_text(text.replace(old, new), "utf-8")
    return manifest


def test_manifest_id_spellings(runtime: luaplug.Runtime, bundles: Path, copy_bundle: Any) -> None:
    assert bundle_id("multi") > 2**63  # above the signed 64-bit range, written in decimal
    runtime.load(bundles / "multi")
    d: Path = copy_bundle("adder")
    edit_manifest(d, f"id = {bundle_id('adder')}", f"id = {bundle_id('adder'):#x}")
    assert runtime.load(d).id == bundle_id("adder")


def test_manifest_file_keyed_by_platform(runtime: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("adder")
    edit_manifest(d, 'file = "main.lua"\n', "")
    (d / "manifest.toml").write_text(
        (d / "manifest.toml").read_text("utf-8") + f'\n[file]\n{platform_key()} = "main.lua"\nplan9.mips = "x.lua"\n'
    )
    runtime.load(d)
    assert runtime.contracts() == ["iso.Adder@1"]


def test_manifest_file_table_without_this_platform(loaded: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("adder")
    manifest = edit_manifest(d, 'file = "main.lua"\n', "")
    manifest.write_text(manifest.read_text("utf-8") + '\n[file]\nplan9.mips = "main.lua"\n')
    before = snapshot(loaded)
    with pytest.raises(luaplug.ManifestError) as info:
        loaded.load(d)
    assert info.value.key == "file"
    assert f"no file entry for platform {platform_key()}, available: " in str(info.value)
    assert snapshot(loaded) == before


def test_manifest_with_an_empty_file(loaded: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("adder")
    edit_manifest(d, 'file = "main.lua"', 'file = ""')
    with pytest.raises(luaplug.ManifestMissingFile):
        loaded.load(d)
    assert loaded.contracts() == ["iso.Counter@1"]


def test_manifest_for_another_loader(loaded: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("adder")
    edit_manifest(d, 'loader = "lua"', 'loader = "wasm"')
    before = snapshot(loaded)
    with pytest.raises(luaplug.LoadError):
        loaded.load(d)
    assert snapshot(loaded) == before


def test_unknown_backend_name() -> None:
    with pytest.raises(luaplug.BackendNotFoundError):
        luaplug.Runtime("no-such-backend")


def test_runtime_reports_its_backend(runtime: luaplug.Runtime, backend: str) -> None:
    assert runtime.backend_name == backend
    assert backend in luaplug.available_backends()
    assert isinstance(runtime.capabilities, frozenset)


def test_load_on_an_unknown_backend_is_refused(runtime: luaplug.Runtime, bundles: Path) -> None:
    with pytest.raises(luaplug.BackendNotFoundError, match="nope"):
        runtime.load(bundles / "counter", backend="nope")
    assert runtime.contracts() == [] and runtime.bundles == {}
    assert runtime.load(bundles / "counter").backend == runtime.backend_name
