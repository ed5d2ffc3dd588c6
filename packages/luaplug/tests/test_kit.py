"""The conformance kit as a backend's author runs it: ``pytest --pyargs luaplug.testing
--luaplug-backend NAME`` from any directory, with no checkout of this repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import luaplug
import luaplug.testing


def run_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a child process, started in ``cwd`` (no ini file, no conftest of this repository)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_kit_is_a_package_with_its_bundles() -> None:
    root = Path(luaplug.testing.__file__).parent
    assert luaplug.testing.BUNDLES_DIR == root / "bundles"
    assert (root / "bundles" / "adder" / "manifest.toml").is_file()
    assert (root / "conftest.py").is_file()
    assert sorted(root.glob("test_*.py"))


def test_an_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--collect-only", "-q", "--pyargs", "luaplug.testing", "--luaplug-backend", "nosuch")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "no usable luaplug backend named 'nosuch'" in proc.stderr


def test_the_kit_runs_on_the_named_backend_only(tmp_path: Path) -> None:
    names = luaplug.available_backends()
    if not names:
        pytest.skip("no luaplug backend is available")
    chosen = names[-1]
    proc = run_pytest(tmp_path, "--collect-only", "-q", "--pyargs", "luaplug.testing", "--luaplug-backend", chosen)
    assert proc.returncode == pytest.ExitCode.OK, proc.stdout + proc.stderr
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    parametrized = [i for i in ids if "[" in i]
    assert parametrized, proc.stdout
    for other in set(names) - {chosen}:
        assert not [i for i in parametrized if f"[{other}" in i or f"-{other}]" in i or f"-{other}-" in i], other
    assert any(f"[{chosen}]" in i for i in parametrized)


def test_the_option_does_not_touch_other_suites(tmp_path: Path) -> None:
    """The pytest plugin adds the option and marks only: a ``backend`` argument of another suite's
    test is that suite's own fixture, not the kit's parametrization."""
    (tmp_path / "test_other.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture\n"
        "def backend():\n"
        "    return 'mine'\n\n"
        "def test_mine(backend):\n"
        "    assert backend == 'mine'\n",
        "utf-8",
    )
    names = luaplug.available_backends()
    if not names:
        pytest.skip("no luaplug backend is available")
    proc = run_pytest(tmp_path, "-q", "test_other.py", "--luaplug-backend", names[0])
    assert proc.returncode == pytest.ExitCode.OK, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
