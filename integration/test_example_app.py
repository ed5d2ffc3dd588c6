"""The example application (docs/examples/filters_app) runs end to end on every backend and
prints what its README shows."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "docs" / "examples" / "filters_app"
pytestmark = pytest.mark.skipif(not APP.is_dir(), reason="needs the repository's docs/examples")


def readme_output() -> list[str]:
    """The lines the README shows after ``$ python app.py lupa``."""
    for block in re.findall(r"```text\n(.*?)```", (APP / "README.md").read_text("utf-8"), re.S):
        if block.startswith("$ python app.py lupa\n"):
            return list(block.splitlines()[1:])
    raise AssertionError("the README shows no output of `python app.py lupa`")


def test_the_filters_app_runs_as_its_readme_shows(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("filters_app", APP / "app.py")
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    app.main(backend)
    expected = readme_output()
    expected[0] = expected[0].replace("on lupa:", f"on {backend}:")
    assert capsys.readouterr().out.splitlines() == expected


def test_the_filters_app_runs_as_a_script(backend: str, tmp_path: Path) -> None:
    """``python app.py BACKEND`` from any directory (the bound is for a hang only)."""
    done = subprocess.run(
        [sys.executable, str(APP / "app.py"), backend], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == readme_output()[-2:]


def test_the_app_needs_no_ffi_of_its_own() -> None:
    """What a user writes: no cffi in the host, no FFI in the plugins (the generated glue has it)."""
    assert "cffi" not in (APP / "app.py").read_text("utf-8")
    for name in ("redact", "upper"):
        lua = (APP / name / "main.lua").read_text("utf-8")
        assert not re.search(r"\bffi\b", lua), name
        assert not (APP / name / "generated").exists(), f"{name}: the glue is generated at run time"
