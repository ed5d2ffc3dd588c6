"""Manifest validation: every problem names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from luaplug import ManifestError, manifest
from luaplug.ids import bundle_id, guest_contract_id


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "manifest.toml").write_text(body, encoding="utf-8")
    return tmp_path


def good(name: str = "demo", extra: str = "") -> str:
    return f'name = "{name}"\nid = {bundle_id(name)}\nloader = "lua"\nfile = "main.lua"\nversion = "1.2.3"\n{extra}'


def test_the_api_key_names_a_file_in_the_bundle(tmp_path: Path) -> None:
    assert manifest.load(write(tmp_path, good(extra='api = "contracts/api.toml"\n'))).api == "contracts/api.toml"
    assert manifest.load(write(tmp_path, good())).api == ""


def test_valid_manifest(tmp_path: Path) -> None:
    m = manifest.load(write(tmp_path, good(extra='provides = ["a.B@2", "c.D", "e.F@3.1.0"]\n')))
    assert m.name == "demo" and m.id == bundle_id("demo") and m.file == "main.lua"
    assert m.version == (1, 2, 3)
    assert [(p.name, p.major) for p in m.provides] == [("a.B", 2), ("c.D", 1), ("e.F", 3)]
    assert m.path == tmp_path and m.manifest_path == tmp_path / "manifest.toml"


def test_path_may_name_a_file_in_the_bundle(tmp_path: Path) -> None:
    write(tmp_path, good())
    (tmp_path / "main.lua").write_text("")
    assert manifest.load(tmp_path / "main.lua").name == "demo"


@pytest.mark.parametrize(
    "form", ["dir", "dir-str", "dir-slash", "manifest", "lua-file", "relative-dot", "relative-file"]
)
def test_every_way_to_name_a_bundle_gives_the_same_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """The bundle directory, its manifest or any file in it, as a Path or a string,
    relative or not: the same manifest and the same (normal form) paths."""
    write(tmp_path, good())
    (tmp_path / "main.lua").write_text("")
    monkeypatch.chdir(tmp_path)
    arg: str | Path = {
        "dir": tmp_path,
        "dir-str": str(tmp_path),
        "dir-slash": f"{tmp_path}/",
        "manifest": tmp_path / "manifest.toml",
        "lua-file": str(tmp_path / "main.lua"),
        "relative-dot": ".",
        "relative-file": "./main.lua",
    }[form]
    m = manifest.load(arg)
    relative = form.startswith("relative")
    assert m.name == "demo"
    assert m.manifest_path == (Path("manifest.toml") if relative else tmp_path / "manifest.toml")
    assert m.path == (Path(".") if relative else tmp_path)


def test_a_named_toml_file_is_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "alt.toml").write_text(good("alt"), encoding="utf-8")
    m = manifest.load(tmp_path / "alt.toml")
    assert m.name == "alt" and m.manifest_path == tmp_path / "alt.toml" and m.path == tmp_path


def test_a_path_that_cannot_name_a_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest parse error for"):
        manifest.load(f"{tmp_path}/a\x00b")
    with pytest.raises(ManifestError, match="file not found"):
        manifest.load(tmp_path / "main.lua")  # neither a bundle nor a file in one


def test_hex_and_large_ids(tmp_path: Path) -> None:
    name = "x"  # fnv1a64("x") is above the signed 64-bit range
    bid = bundle_id(name)
    assert bid > (1 << 63)
    body = f'name = "{name}"\nid = "{bid:#x}"\nloader = "lua"\nfile = "main.lua"\n'
    assert manifest.load(write(tmp_path, body)).id == bid


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('id = 1\nloader = "lua"\nfile = "m.lua"\n', "name"),
        ('name = "demo"\nloader = "lua"\nfile = "m.lua"\n', "id"),
        ('name = "demo"\nid = 0\nloader = "lua"\nfile = "m.lua"\n', "id"),
        (f'name = "demo"\nid = {bundle_id("demo")}\nfile = "m.lua"\n', "loader"),
        (f'name = "demo"\nid = {bundle_id("demo")}\nruntime = "lua"\nfile = "m.lua"\n', "loader"),
        (f'name = "demo"\nid = {bundle_id("demo")}\nloader = "lua"\nfile = 3\n', "file"),
        (good(extra='provides = ["@1"]\n'), "provides"),
        (good().replace('version = "1.2.3"', 'version = "one"'), "version"),
        (good().replace('version = "1.2.3"\n', "") + 'provides = ["a.B@1"]\n', "version"),
        (good(extra='[function_count]\n"a@1" = "x"\n'), "function_count"),
        (good(extra="needs_reinit_on_dep_reload = 1\n"), "needs_reinit_on_dep_reload"),
        (good(extra="bundle_dependencies = [1]\n"), "bundle_dependencies"),
        (good(extra="api = 1\n"), "api"),
        (good(extra='api = "/etc/api.toml"\n'), "api"),
        (good(extra='api = "../other/api.toml"\n'), "api"),
        (good(extra='[[dependency]]\nkind = "weird"\n'), "dependency.kind"),
        (good(extra='[[dependency]]\nkind = "contract"\ncontract = "a.B"\nmin_version = "1.0.0"\ncontract_id = 5\n'),
         "dependency.contract_id"),
    ],
)  # fmt: skip
def test_invalid_key_is_named(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ManifestError) as info:
        manifest.load(write(tmp_path, body))
    assert info.value.key == key
    assert info.value.path == str(tmp_path / "manifest.toml")
    assert str(tmp_path / "manifest.toml") in str(info.value) or "tampered" in str(info.value)


def test_tampered_id(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        manifest.load(write(tmp_path, good().replace(str(bundle_id("demo")), "12345")))
    assert (
        str(info.value)
        == f'bundle "demo" tampered with bundle_id: expected={bundle_id("demo"):#018x}, found={12345:#018x}'
    )


def test_parse_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest parse error for .*manifest\.toml"):
        manifest.load(write(tmp_path, "name = \n"))
    with pytest.raises(ManifestError, match="file not found"):
        manifest.load(tmp_path / "nowhere")


def test_missing_file_key_is_left_to_the_loader(tmp_path: Path) -> None:
    m = manifest.load(write(tmp_path, good().replace('file = "main.lua"\n', "")))
    assert m.file == ""


@pytest.mark.parametrize("file", ["/etc/passwd", "../x.lua", "a/../../x.lua", "..", "a\\..\\..\\x.lua", "//x"])
def test_a_file_leaving_the_bundle_directory_is_refused(tmp_path: Path, file: str) -> None:
    body = good().replace('file = "main.lua"', f"file = {file!r}")
    with pytest.raises(ManifestError, match="bundle directory") as info:
        manifest.load(write(tmp_path, body))
    assert info.value.key == "file"


@pytest.mark.parametrize("file", ["main.lua", "src/main.lua", "a..b.lua", "x:main.lua", "./main.lua"])
def test_a_file_inside_the_bundle_directory_is_kept(tmp_path: Path, file: str) -> None:
    assert manifest.load(write(tmp_path, good().replace('file = "main.lua"', f"file = {file!r}"))).file == file


def test_platform_file_table(tmp_path: Path) -> None:
    key = manifest.platform_key()
    os_part, arch = key.split(".", 1)
    body = good().replace('file = "main.lua"\n', f'[file]\n{os_part}.{arch} = "native.lua"\nother.arch = "x.lua"\n')
    assert manifest.load(write(tmp_path, body)).file == "native.lua"
    body = good().replace('file = "main.lua"\n', '[file]\nother.arch = "x.lua"\n')
    with pytest.raises(ManifestError, match=f"no file entry for platform {key}"):
        manifest.load(write(tmp_path, body))


def test_dependency_with_matching_contract_id(tmp_path: Path) -> None:
    cid = guest_contract_id("a.B", 2)
    m = manifest.load(
        write(
            tmp_path, good(extra=f'[[dependency]]\ncontract = "a.B"\nmin_version = "2.1.0"\ncontract_id = "{cid:#x}"\n')
        )
    )
    assert m.dependencies[0].contract_id == cid and m.dependencies[0].min_version == (2, 1, 0)


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    assert manifest.load(write(tmp_path, good(extra='whatever = "x"\n'))).name == "demo"
