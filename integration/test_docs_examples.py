"""The documentation's examples (docs/examples/) run on every backend, so the tutorial cannot rot."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from luaplug import typed
from luaplug.typed.luagen import generate_lua

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLES = DOCS / "examples"
# A copy of the suite outside the repository (the offline build's) has no docs to check.
pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="needs the repository's docs/examples")


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_first_host(backend: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUAPLUG_BACKEND", raising=False)
    _module(EXAMPLES / "first_host.py").main(backend)
    assert capsys.readouterr().out.splitlines() == [
        f"loaded hello on {backend}: hello.Greeter@1",
        "hello, world!",
        "hello, Lua!",
        "greeted 2 times",
        "TypeError: greet() argument 'name' (StringView): expected str or bytes, not int",
    ]


def test_the_example_glue_is_current() -> None:
    api = typed.load_api(EXAMPLES / "hello" / "api.toml")
    assert (EXAMPLES / "hello" / "contracts.lua").read_text("utf-8") == generate_lua(api, "hello")


def test_the_docs_include_only_existing_examples() -> None:
    # pymdownx.snippets lines: --8<-- "path" (relative to docs/examples)
    for page in DOCS.rglob("*.md"):
        for ref in re.findall(r'--8<-- "([^"]+)"', page.read_text("utf-8")):
            assert (EXAMPLES / ref.split(":")[0]).is_file(), f"{page}: {ref}"


UNTRUSTED_API = """
[[guest_contract]]
name = "demo.Calc"
version = "1.0.0"
[[guest_contract.functions]]
name = "add"
params = [{ name = "a", type = "i32" }, { name = "b", type = "i32" }]
return = "i32"
[[guest_contract.functions]]
name = "greet"
params = [{ name = "name", type = "StringView" }]
return = "StringView"
[[guest_contract.functions]]
name = "peer_add"
params = [{ name = "a", type = "i32" }, { name = "b", type = "i32" }]
return = "i32"

[[guest_contract]]
name = "other.Calc"
version = "1.0.0"
[[guest_contract.functions]]
name = "add"
params = [{ name = "a", type = "i32" }, { name = "b", type = "i32" }]
return = "i32"
"""


def test_the_untrusted_how_to_bundle_runs_untrusted(backend: str, tmp_path: Path) -> None:
    """The manifest and main.lua of how-to/untrusted-bundles.md, with an api.toml declaring what they use."""
    import luaplug

    page = (DOCS / "how-to" / "untrusted-bundles.md").read_text("utf-8")
    (manifest,) = re.findall(r"```toml\n(.*?)```", page, re.S)
    (main,) = re.findall(r"```lua\n(.*?)```", page, re.S)
    (tmp_path / "manifest.toml").write_text(manifest, "utf-8")
    (tmp_path / "main.lua").write_text(main, "utf-8")
    (tmp_path / "api.toml").write_text(UNTRUSTED_API, "utf-8")
    with luaplug.Runtime(backend) as rt:
        rt.load(tmp_path, untrusted=True)
        with rt.bind(tmp_path / "api.toml", "demo.Calc@1") as calc:
            assert calc.add(2, 3) == 5
            assert calc.greet("doc") == "hello, doc"
            with pytest.raises(luaplug.DispatchError, match=r"other\.Calc@1 is not available"):
                calc.peer_add(1, 2)


@pytest.mark.parametrize("readme", ["README.md", "packages/luaplug/README.md"])
def test_the_readme_examples_run(
    readme: str, backend: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both examples of the README (typed first, then the C ABI) on the tutorial's bundle."""
    text = (DOCS.parent / readme).read_text("utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2 and "rt.bind(" in blocks[0] and "ffi" in blocks[1]
    monkeypatch.chdir(EXAMPLES)
    monkeypatch.setenv("LUAPLUG_BACKEND", backend)
    for block in blocks[:2]:
        exec(compile(block, readme, "exec"), {})
    assert capsys.readouterr().out.splitlines() == ["hello, world!", "0"]


def test_the_tutorial_shows_every_file_as_it_is() -> None:
    """The tutorial inlines its files (readable on GitHub and in a plain text viewer): each titled
    block is the file of docs/examples it names, byte for byte."""
    text = (DOCS / "tutorial.md").read_text("utf-8")
    shown = re.findall(r'```\w+ title="([^"]+)"\n(.*?)```', text, re.S)
    assert {name for name, _ in shown} == {"hello/api.toml", "hello/manifest.toml", "hello/main.lua", "first_host.py"}
    for name, body in shown:
        assert body == (EXAMPLES / name).read_text("utf-8"), name
    assert "--8<--" not in text


def test_writing_a_backend_shows_the_example_backend_as_it_is() -> None:
    """The backend guide inlines the example backend's files (the ones `tox -e kit-example`
    installs and runs the conformance kit on), byte for byte."""
    text = (DOCS / "writing-a-backend.md").read_text("utf-8")
    shown = re.findall(r'```\w+ title="([^"]+)"\n(.*?)```', text, re.S)
    example = EXAMPLES / "minimal_backend"
    files = {p.relative_to(EXAMPLES).as_posix() for p in example.rglob("*") if p.suffix in (".py", ".toml")}
    files = {f for f in files if "/build/" not in f and ".egg-info" not in f}
    assert {name for name, _ in shown} == files
    for name, body in shown:
        assert body == (EXAMPLES / name).read_text("utf-8"), name
    imported = re.findall(r"^\s*(?:from|import) (luaplug[\w.]*)", "".join(body for _, body in shown), re.M)
    assert set(imported) == {"luaplug.backend"}


def _backend_page() -> str:
    return (DOCS / "writing-a-backend.md").read_text("utf-8")


def test_writing_a_backend_names_only_what_exists() -> None:
    """Every dotted luaplug name the backend guide writes (``luaplug.backend.get_include()``,
    ``luaplug.reentry.CELL_*``) is a module or an attribute of one."""
    names = set(re.findall(r"`(luaplug(?:\.\w+)+\*?)", _backend_page()))
    assert "luaplug.backend" in names
    for name in sorted(names):
        parts = name.rstrip("*").split(".")
        if name.endswith("*"):  # a family of names: at least one has the prefix
            module = importlib.import_module(".".join(parts[:-1]))
            assert any(n.startswith(parts[-1]) for n in dir(module)), name
            continue
        # the longest importable prefix, then attributes
        for cut in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            break
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"writing-a-backend.md names {name}, which does not exist"
            obj = getattr(obj, attr)


@pytest.mark.parametrize("cls_name", ["Engine", "EngineState"])
def test_writing_a_backend_tables_match_the_classes(cls_name: str) -> None:
    """The guide's table of ``Engine`` / ``EngineState`` lists attributes the class has, and the
    rows it marks required are exactly the class's abstract methods."""
    import luaplug.backend

    cls = getattr(luaplug.backend, cls_name)
    (table,) = re.findall(rf"^\| `{cls_name}` \|.*?\n((?:\|.*\n)+)", _backend_page(), re.M)
    rows = [row.split(" | ", 1) for row in table.splitlines()[1:]]
    required = set()
    for first, rest in rows:
        for name in re.findall(r"`(\w+)", first):
            has = hasattr(cls, name) or name in cls.__annotations__  # a ClassVar without a default
            assert has, f"the {cls_name} table lists {name}, which {cls_name} does not have"
            if rest.startswith("**required.**"):
                required.add(name)
    if cls_name == "EngineState":
        assert required == set(cls.__abstractmethods__)
