"""What a user feels of ``import luaplug``: the optional parts stay unimported, and it works.

Each case runs in a fresh interpreter, so the test process's own imports do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import luaplug

#: Imported on first use only: each serves a rarely used path and costs start-up time.
OPTIONAL = (
    "luaplug.typed",
    "luaplug.cli",
    "tomllib",  # the TOML reader (manifests beyond the simple subset, configuration files)
    "tomli",
    "importlib.metadata",  # backend discovery reads the entry points without it
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


def _dependencies(cwd: Path) -> set[str]:
    """What luaplug's dependencies import by themselves (pluggy 1.0 imports importlib.metadata)."""
    modules = imported_after("import cffi, pluggy", cwd)["modules"]
    assert isinstance(modules, list)
    return set(modules)


def _optional(modules: object, cwd: Path) -> list[str]:
    """The optional parts among ``modules`` that luaplug's dependencies do not import themselves."""
    assert isinstance(modules, list)
    ours = set(modules) - _dependencies(cwd)
    return sorted(m for m in ours if any(m == name or m.startswith(f"{name}.") for name in OPTIONAL))


def test_import_luaplug_leaves_the_optional_parts_unimported(tmp_path: Path) -> None:
    out = imported_after("import luaplug\nresult = luaplug.Runtime.__name__", tmp_path)
    assert out["result"] == "Runtime"
    assert _optional(out["modules"], tmp_path) == []


@pytest.mark.parametrize("backend", ["lupa", "cffi"])
def test_a_fresh_interpreter_loads_and_calls(backend: str, tmp_path: Path) -> None:
    if backend not in luaplug.available_backends():
        pytest.skip(f"the {backend} backend is not available here")
    # Another project's pyproject.toml on the way up: passed over without a TOML parser.
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "host"\n# luaplug is configured elsewhere\n', "utf-8")
    counter = Path(luaplug.__file__).parent / "examples" / "counter"
    code = (
        "import luaplug\n"
        "from luaplug.abi import core_ffi as ffi\n"
        f"with luaplug.Runtime({backend!r}) as rt:\n"
        f"    rt.load({str(counter)!r})\n"
        "    inst = rt.contract('demo.Counter').create_instance()\n"
        "    out = ffi.new('int64_t*')\n"
        "    inst.call(0, 0, out)\n"
        "    inst.call(0, 0, out)\n"
        "    result = [rt.backend_name, int(out[0]), rt.config.path]\n"
    )
    out = imported_after(code, tmp_path)
    assert out["result"] == [backend, 2, None]
    # Neither the TOML reader nor the typed layer (a simple manifest and no configuration), nor
    # importlib.metadata (the entry points are read from the metadata directories on sys.path).
    assert _optional(out["modules"], tmp_path) == []


def test_every_public_name_resolves_in_a_fresh_interpreter(tmp_path: Path) -> None:
    code = "import luaplug\nresult = [n for n in luaplug.__all__ if getattr(luaplug, n, None) is None]\n"
    assert imported_after(code, tmp_path)["result"] == []
    code = "from luaplug import *\nresult = sorted(n for n in dir() if not n.startswith('_'))\n"
    out = imported_after(code, tmp_path)["result"]
    assert isinstance(out, list)
    assert set(luaplug.__all__) - {"__version__"} <= {*out, "json", "sys", "before", "result"}


def test_start_up_computes_no_signatures(tmp_path: Path) -> None:
    # A dataclass without a docstring gets one made from inspect.signature at import.
    code = (
        "import inspect\n"
        "asked = []\n"
        "real = inspect.signature\n"
        "inspect.signature = lambda obj, *a, **k: asked.append(repr(obj)) or real(obj, *a, **k)\n"
        "import luaplug\n"
        "luaplug.installed_backends()\n"
        "result = asked\n"
    )
    assert imported_after(code, tmp_path)["result"] == []
