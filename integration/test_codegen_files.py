"""``luaplug codegen --bundle``: polyplugc 0.1.3's file set and names, from our own fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from luaplug import manifest, typed
from luaplug.cli import main
from luaplug.errors import ApiSpecError
from luaplug.ids import bundle_id, guest_contract_id, host_contract_id
from luaplug.typed.bundletoml import load_bundle_toml, parse_bundle_toml
from luaplug.typed.glue import generate_glue, host_caller_class, peer_class, plugin_setter

GLUE = Path(__file__).resolve().parent / "glue"


@pytest.fixture
def glue(tmp_path: Path) -> Path:
    target = tmp_path / "glue"
    shutil.copytree(GLUE, target)
    return target


def test_generate_writes_polyplugcs_file_set(glue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = glue / "text_tools" / "generated"
    assert (
        main(["generate", "--bundle", str(glue / "text_tools" / "bundle.toml"), "--lang", "lua", "-o", str(out)]) == 0
    )
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "guest/contracts.lua",
        "guest/host_contracts.lua",
        "guest/peer_callers.lua",
        "guest/types.lua",
        "manifest.toml",
    ]
    assert capsys.readouterr().out.count("wrote ") == 5
    # no [[dependency]]: no peer_callers.lua
    out2 = glue / "counter_box" / "generated"
    assert main(["codegen", "--bundle", str(glue / "counter_box" / "bundle.toml"), "--out", str(out2)]) == 0
    assert not (out2 / "guest" / "peer_callers.lua").exists()
    assert (out2 / "guest" / "host_contracts.lua").exists()


def test_the_manifest_is_one_both_runtimes_read(glue: Path) -> None:
    files = generate_glue(load_bundle_toml(glue / "text_tools" / "bundle.toml"))
    (glue / "text_tools" / "manifest.toml").write_text(files["manifest.toml"], "utf-8")
    m = manifest.load(glue / "text_tools")
    assert m.name == "text_tools" and m.id == bundle_id("text_tools")
    assert m.loader == "lua" and m.file == "main.lua"
    assert [f"{p.name}@{p.major}" for p in m.provides] == ["shapes.Scanner@1"]
    assert dict(m.function_count) == {"shapes.Scanner@1": 10}
    assert m.needs_reinit_on_dep_reload is True
    (dep,) = m.dependencies
    assert dep.contract == "shapes.Counter"
    assert dep.contract_id == guest_contract_id("shapes.Counter", 1)


def test_guest_facing_names(glue: Path) -> None:
    files = generate_glue(load_bundle_toml(glue / "text_tools" / "bundle.toml"))
    contracts = files["guest/contracts.lua"]
    assert "function M.set_scanner_factory(factory)" in contracts
    assert "function M._register_SCANNER(registrations)" in contracts
    assert "\nfunction polyplug_init(host_ptr, ctx_ptr)\n" in contracts  # a global, as the loader needs
    assert 'registrations["shapes.Scanner"] = {' in contracts
    hosts = files["guest/host_contracts.lua"]
    assert "function HostNotesContract.from_host(host_ptr, min_version)" in hosts
    assert "function HostNotesContract:tag(level, text)" in hosts
    assert f"M.HOSTNOTESCONTRACT_ID = {host_contract_id('host.notes', 1):#x}ULL" in hosts
    peers = files["guest/peer_callers.lua"]
    assert "function ShapesCounterPeer.resolve(host_ptr)" in peers
    assert f"M.SHAPESCOUNTERPEER_ID = {guest_contract_id('shapes.Counter', 1):#x}ULL" in peers
    types = files["guest/types.lua"]
    assert 'declare("ShapesScannerContractScanArgs", "typedef struct ShapesScannerContractScanArgs {' in types
    assert "M.Caps = { NoCaps = 0, Fast = 1, Wide = 2, Both = 3 }" in types


@pytest.mark.parametrize(
    ("fn", "arg", "expected"),
    [
        (plugin_setter, "Decoder", "set_decoder_factory"),
        (plugin_setter, "my-plugin.v2", "set_my_plugin_v2_factory"),
        (host_caller_class, "host.logger", "HostLoggerContract"),
        (host_caller_class, "host.fs.reader", "HostFsReaderContract"),
        (host_caller_class, "svc.clock", "HostSvcClockContract"),
        (peer_class, "pipeline.Validator", "PipelineValidatorPeer"),
    ],
)
def test_name_derivations(fn: object, arg: str, expected: str) -> None:
    assert fn(arg) == expected  # type: ignore[operator]


def _bundle(glue: Path, text: str) -> Path:
    path = glue / "text_tools" / "bundle.toml"
    path.write_text(text, "utf-8")
    return path


BASE = '[bundle]\nname = "b"\nversion = "1.0.0"\napi = "../api.toml"\nloader = "lua"\nfile = "main.lua"\n'


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[[plugin]]\nname = 'p'\n", "bundle", "missing"),
        (BASE.replace('version = "1.0.0"\n', ""), "bundle.version", "missing"),
        (BASE.replace('file = "main.lua"\n', ""), "bundle.file", "missing"),
        (
            BASE + '[[plugin]]\nname = "p"\nimplements = ["shapes.Scanner@2"]\n',
            "plugin[0].implements[0]",
            "not declared",
        ),
        (
            BASE + '[[plugin]]\nname = "p"\nimplements = ["shapes.Scanner@1.3"]\n',
            "plugin[0].implements[0]",
            "not declared",
        ),
        (BASE + '[[plugin]]\nname = "p"\nimplements = ["shapes.Scanner"]\n', "plugin[0].implements[0]", "name@major"),
        (
            BASE + '[[plugin]]\nname = "p"\nimplements = ["shapes.Scanner@1"]\n'
            '[[plugin]]\nname = "q"\nimplements = ["shapes.Scanner@1.0"]\n',
            "plugin[1]",
            "implemented by plugins p and q",
        ),
        (BASE + '[[dependency]]\nkind = "peer"\ncontract = "x"\nmin_version = "1.0"\n', "dependency[0].kind", "kind"),
        (BASE + '[[dependency]]\ncontract = "x"\nmin_version = 1\n', "dependency[0].min_version", "string"),
        (BASE.replace('name = "b"', 'name = "shapes.Counter"'), "bundle.name", "also a contract"),
    ],
)
def test_bad_bundle_toml_names_the_key(glue: Path, text: str, key: str, words: str) -> None:
    path = _bundle(glue, text)
    with pytest.raises(ApiSpecError, match=words) as info:
        load_bundle_toml(path)
    assert info.value.path == str(path) and info.value.key == key


def test_bundle_toml_accepts_runtime_and_minor_versions(glue: Path) -> None:
    text = (
        BASE.replace('loader = "lua"', 'runtime = "lua"')
        + '[[plugin]]\nname = "p"\nimplements = ["shapes.Scanner@1.2.0"]\n'
    )
    spec = parse_bundle_toml(text, path=str(glue / "text_tools" / "bundle.toml"))
    assert spec.loader == "lua"
    assert [c.key for c in spec.provides] == ["shapes.Scanner@1"]


def test_codegen_usage_errors(glue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = str(glue / "text_tools" / "bundle.toml")
    api = str(glue / "api.toml")
    out = str(glue / "out")
    assert main(["codegen", "--out", out]) == 2
    assert main(["codegen", "--bundle", bundle, api, "--out", out]) == 2
    assert main(["codegen", "--bundle", bundle, "--contract", "x@1", "--out", out]) == 2
    assert main(["codegen", "--bundle", bundle, "--lang", "rust", "--out", out]) == 2
    assert "unsupported --lang" in capsys.readouterr().err
    # an api.toml alone: the guest modules, no manifest, no factory setters
    assert main(["codegen", "--api", api, "--out", out]) == 0
    assert sorted(p.name for p in (glue / "out" / "guest").iterdir()) == [
        "contracts.lua",
        "host_contracts.lua",
        "types.lua",
    ]
    assert not (glue / "out" / "manifest.toml").exists()
    # the single-file mode is still there, for scalars, strings and enums
    assert main(["codegen", api, "--plugin", "solo", "--contract", "shapes.Counter@1", "--out", out]) == 0
    assert "set_solo_factory" in (glue / "out" / "contracts.lua").read_text("utf-8")
    capsys.readouterr()
    assert main(["codegen", api, "--plugin", "solo", "--out", out]) == 1
    assert "shapes.Scanner@1 scan() uses Stamp" in capsys.readouterr().err


def test_a_python_host_contract_takes_and_returns_structs_and_buffers(tmp_path: Path) -> None:
    """What a generated host caller passes (spec §14 packs) reaches the Python impl as values."""
    from luaplug import _libc
    from luaplug.abi import core_ffi, ffi
    from luaplug.hostcontract import HostContract, host_spec

    api = tmp_path / "api.toml"
    api.write_text(
        '[[enum]]\nname = "Mode"\nrepr = "u32"\n[[enum.variants]]\nname = "Idle"\nvalue = "0"\n'
        '[[enum.variants]]\nname = "Busy"\nvalue = "1"\n'
        '[[types]]\nname = "Item"\nfields = [{ name = "mode", type = "Mode" }, { name = "tag", type = "StringView" }]\n'
        '[[host_contract]]\nname = "host.store"\nversion = "1.0.0"\n'
        '[[host_contract.functions]]\nname = "keep"\n'
        'params = [{ name = "item", type = "Item" }, { name = "blob", type = "Buffer" }]\nreturn = "Item"\n',
        "utf-8",
    )
    seen = []

    class Store:
        def keep(self, item: object, blob: bytes) -> dict[str, object]:
            seen.append((item, blob))
            return {"mode": 0, "tag": blob.decode() + "!"}

    spec = host_spec("host.store@1", api)
    hc = HostContract(spec, Store())
    item_t, buf_t = "struct { uint32_t mode; StringView tag; }", "struct { void* ptr; size_t len; size_t cap; }"
    args = ffi.new(f"struct {{ {item_t} item; {buf_t} blob; }} *")
    tag, blob = ffi.new("char[]", b"t1"), ffi.new("char[]", b"xyz")
    args.item.mode, args.item.tag.ptr, args.item.tag.len = 1, ffi.cast("uint8_t*", tag), 2
    args.blob.ptr, args.blob.len, args.blob.cap = blob, 3, 3
    out = ffi.new(f"{item_t} *")
    err = core_ffi.new("AbiError*")

    def addr(p: object) -> object:
        return core_ffi.cast("void*", int(ffi.cast("uintptr_t", p)))

    instance = core_ffi.cast("void*", hc._create_instance())
    hc._callbacks[0](instance, addr(args), addr(out), err)
    assert err.code == 0
    ((item, got),) = seen
    Item = typed.load_api(api).struct("Item").python
    assert item == Item(mode=typed.load_api(api).enum("Mode").python.Busy, tag="t1") and got == b"xyz"
    assert out.mode == 0 and ffi.unpack(ffi.cast("char*", out.tag.ptr), out.tag.len) == b"xyz!"
    _libc.free(int(ffi.cast("uintptr_t", out.tag.ptr)))


def test_the_single_file_glue_points_host_contracts_to_their_callers(glue: Path) -> None:
    from luaplug.typed.luagen import generate_lua

    api = typed.load_api(glue / "api.toml")
    with pytest.raises(ApiSpecError, match=r"host\.notes@1 is a host contract: .* codegen --bundle"):
        generate_lua(api, "solo", ["host.notes@1"])


def test_generated_callers_return_failures_and_true_for_no_result(glue: Path) -> None:
    files = generate_glue(load_bundle_toml(glue / "text_tools" / "bundle.toml"))
    hosts = files["guest/host_contracts.lua"]
    assert '[102] = "HostContractCallFailed"' in hosts
    assert 'if not ok then return failure("host.notes@1.note", err) end' in hosts
    assert "function HostNotesContract:destroy()" in hosts
    peers = files["guest/peer_callers.lua"]
    assert 'if not ok then return failure("shapes.Counter@1.bump", err) end' in peers
