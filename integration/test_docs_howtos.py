"""The how-to pages that show a complete application (files marked ``# file: NAME`` or
``-- file: NAME`` on their first line) run as written, on every backend."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from luaplug.cli import main as cli_main

HOWTO = Path(__file__).resolve().parents[1] / "docs" / "how-to"
pytestmark = pytest.mark.skipif(not HOWTO.is_dir(), reason="needs the repository's docs")

_BLOCK = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_FILE = re.compile(r"^(?:#|--) file: (\S+)\n")


def write_files(page: Path, root: Path) -> dict[str, str]:
    """Every ``file:`` block of ``page`` written under ``root``; the blocks by file name."""
    files = {}
    for block in _BLOCK.findall(page.read_text("utf-8")):
        m = _FILE.match(block)
        if m:
            files[m.group(1)] = block
            target = root / m.group(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block, "utf-8")
    return files


def expected_output(page: Path, command: str) -> list[str]:
    """The lines a ``text`` block shows after ``$ <command>``."""
    for block in _BLOCK.findall(page.read_text("utf-8")):
        if block.startswith(f"$ {command}\n"):
            return block.splitlines()[1:]
    raise AssertionError(f"{page}: no output shown for {command!r}")


def test_the_host_contracts_howto_runs_as_written(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = HOWTO / "host-contracts.md"
    app = tmp_path / "app"
    files = write_files(page, app)
    assert sorted(files) == ["api.toml", "host.py", "memo/bundle.toml", "memo/main.lua"]
    assert "luaplug codegen --bundle memo/bundle.toml --lang lua --out memo/generated" in page.read_text("utf-8")
    bundle = app / "memo"
    argv = ["codegen", "--bundle", str(bundle / "bundle.toml"), "--lang", "lua", "--out", str(bundle / "generated")]
    assert cli_main(argv) == 0
    shutil.copyfile(bundle / "generated" / "manifest.toml", bundle / "manifest.toml")
    capsys.readouterr()
    spec = importlib.util.spec_from_file_location("howto_host", app / "host.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(backend)
    assert capsys.readouterr().out.splitlines() == expected_output(page, "python host.py")
