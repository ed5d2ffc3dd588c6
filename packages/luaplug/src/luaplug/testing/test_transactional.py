"""All-or-nothing loads and manifest completeness (runtime-semantics "Manifest", "Registry and handles")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import luaplug
from luaplug.manifest import platform_key


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), "utf-8")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('version = "1.0.0"', 'version = "one"', "version"),
        ('provides = ["svc.HostReg@1"]', 'provides = ["@1"]', "provides"),
        ('file = "main.lua"', 'file = { "nowhere.arch" = "main.lua" }', "file"),
        (
            'version = "1.0.0"',
            'version = "1.0.0"\n[[dependency]]\nkind = "contract"\ncontract = "iso.Echo"\n'
            'min_version = "1.0.0"\ncontract_id = 1',
            "dependency.contract_id",
        ),
        ('version = "1.0.0"', 'version = "1.0.0"\nbundle_dependencies = [3]', "bundle_dependencies"),
    ],
)
def test_the_manifest_is_validated_before_any_lua_runs(
    runtime: luaplug.Runtime, copy_bundle: Any, old: str, new: str, key: str
) -> None:
    d: Path = copy_bundle("hostreg")
    edit(d / "manifest.toml", old, new)
    with pytest.raises(luaplug.ManifestError) as info:
        runtime.load(d)
    assert info.value.key == key
    assert runtime.host_contracts() == [] and runtime.contracts() == [] and runtime.bundles == {}


def test_a_failing_registration_withdraws_everything(runtime: luaplug.Runtime, bundles: Path) -> None:
    runtime.load(bundles / "counter")
    multi = bundles / "multi"
    before = runtime.contracts()
    code = (multi / "main.lua").read_text("utf-8")
    broken = "factory = function(_host) return {} end"
    assert broken in code
    with pytest.raises(luaplug.InitFailed, match=r"factory for contract 'iso\.MultiB' failed"):
        # iso.MultiA is fine; iso.MultiB's factory fails: the whole load is refused
        runtime.load_code(code.replace(broken, "factory = function() error('no') end"), "multi")
    assert runtime.contracts() == before


def test_file_as_a_platform_table(runtime: luaplug.Runtime, copy_bundle: Any) -> None:
    d: Path = copy_bundle("counter")
    os_name, arch = platform_key().split(".", 1)
    edit(d / "manifest.toml", 'file = "main.lua"', f'[file]\n{os_name}.{arch} = "main.lua"\nwindows.x86_64 = "x.lua"\n')
    text = (d / "manifest.toml").read_text("utf-8")
    # [file] must come after the top-level keys: move it to the end.
    head, _, rest = text.partition("[file]")
    table, _, tail = rest.partition("\n\n")
    (d / "manifest.toml").write_text(head + tail + "\n[file]" + table + "\n", "utf-8")
    b = runtime.load(d)
    assert b.manifest.file == "main.lua"
    assert runtime.contracts() == ["iso.Counter@1"]


def test_a_hex_id_and_provides_forms(runtime: luaplug.Runtime, bundles: Path, copy_bundle: Any) -> None:
    b = runtime.load(bundles / "hostreg")  # id = 0x...
    assert b.id == luaplug.ids.bundle_id("hostreg")
    d: Path = copy_bundle("echo")
    edit(d / "manifest.toml", 'provides = ["iso.Echo@1"]', 'provides = ["iso.Echo@1.0.0"]')
    assert [(p.name, p.major) for p in runtime.load(d).manifest.provides] == [("iso.Echo", 1)]
