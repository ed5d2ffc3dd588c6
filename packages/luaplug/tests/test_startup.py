"""What ``import luaplug`` and creating a runtime import: only what a runtime needs.

Each case runs in a fresh interpreter, so the test process's own imports do not count.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

import luaplug

#: Never imported by ``import luaplug`` + ``luaplug.Runtime(...)`` in a directory without a
#: luaplug configuration: each costs milliseconds and serves rarely used paths only.
HEAVY = (
    "importlib.metadata",  # backends are found by luaplug._entrypoints
    "tomllib",  # manifests in the simple subset, configuration files
    "tomli",
    "pathlib",
    "platform",  # platform file tables of manifests
    "zipfile",
    "email",
    "luaplug.manifest",  # the first load imports it
    "luaplug.hostcontract",  # the first host contract served or registered imports it
    "luaplug.events",  # the first event posted imports it
    "luaplug.typed",
    "luaplug.cli",
)


def imported_after(code: str, cwd: Path) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter in ``cwd``; the modules it imported, and ``result``."""
    script = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "result = None\n"
        f"{code}\n"
        "print(json.dumps({'modules': sorted(set(sys.modules) - before), 'result': result}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return out


def test_import_luaplug_imports_nothing_else(tmp_path: Path) -> None:
    modules = imported_after("import luaplug", tmp_path)["modules"]
    assert modules == ["__future__", "luaplug"]  # __future__: its ``annotations`` import


@pytest.mark.parametrize("backend", ["lupa", "cffi"])
def test_creating_a_runtime_stays_light(backend: str, tmp_path: Path) -> None:
    if backend not in luaplug.available_backends():
        pytest.skip(f"the {backend} backend is not available here")
    # Another project's pyproject.toml on the way up: passed over without a TOML parser.
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "host"\ndependencies = ["luaplug", "luaplug-cffi"]\n# luaplug is configured elsewhere\n',
        "utf-8",
    )
    code = (
        "import luaplug\n"
        f"rt = luaplug.Runtime({backend!r})\n"
        "from luaplug import backends\n"
        f"result = [rt.backend_name, backends.plugin_manager().get_plugin({backend!r}).__name__, rt.config.path]\n"
    )
    out = imported_after(code, tmp_path)
    # Found through its entry point (group "luaplug", entry name = backend name) and pluggy.
    assert out["result"] == [backend, f"luaplug_{backend}.plugin", None]
    modules = set(out["modules"])  # type: ignore[call-overload]
    assert "pluggy" in modules and "logging" in modules
    # What pluggy imports itself is not luaplug's doing: pluggy < 1.2 imports importlib.metadata
    # (and with it email, zipfile, pathlib...) as it is imported; later ones only when asked to.
    by_pluggy = set(imported_after("import pluggy", tmp_path)["modules"])  # type: ignore[call-overload]
    heavy = sorted(m for m in modules - by_pluggy if any(m == h or m.startswith(f"{h}.") for h in HEAVY))
    assert heavy == []


def test_lazy_names_match_the_imports(tmp_path: Path) -> None:
    # The TYPE_CHECKING imports of luaplug/__init__.py are what type checkers see; each
    # name must be the object the lazy lookup hands out at run time.
    tree = ast.parse(Path(luaplug.__file__).read_text("utf-8"))
    checked = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    declared: dict[str, object] = {}
    for node in checked.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names:
            if node.module is None:
                declared[alias.name] = import_module(f"luaplug.{alias.name}")
            else:
                declared[alias.name] = getattr(import_module(f"luaplug.{node.module}"), alias.name)
    assert sorted(declared) == sorted(luaplug.__all__)
    for name, obj in declared.items():
        assert getattr(luaplug, name) is obj, name
    assert set(luaplug.__all__) <= set(dir(luaplug))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = luaplug.nothing_here  # type: ignore[attr-defined]


def test_every_public_name_resolves_in_a_fresh_interpreter(tmp_path: Path) -> None:
    code = "import luaplug\nresult = [n for n in luaplug.__all__ if getattr(luaplug, n, None) is None]\n"
    assert imported_after(code, tmp_path)["result"] == []
    code = "from luaplug import *\nresult = sorted(n for n in dir() if not n.startswith('_'))\n"
    out = imported_after(code, tmp_path)["result"]
    assert isinstance(out, list)
    assert set(luaplug.__all__) - {"__version__"} <= {*out, "json", "sys", "before", "result"}
