"""The conformance kit as a backend's author runs it: ``pytest --pyargs luaplug.testing
--luaplug-backend NAME`` from any directory, with no checkout of this repository."""

from __future__ import annotations

import os
import re
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


EXTRA_RUNTIME_PLUGIN = """
import luaplug

made = []


def other_runtime(hot_reload):
    made.append(hot_reload)
    return luaplug.Runtime({backend!r}, hot_reload=hot_reload)


def pytest_luaplug_runtimes(config):
    return {{"other": other_runtime}}
"""

EXTRA_RUNTIME_CASES = """
import pytest

import luaplug
import luaplug_extra_rt


@pytest.mark.protocol
def test_protocol(runtime, backend):
    assert isinstance(runtime, luaplug.Runtime)
    assert runtime.hot_reload
    if backend == "other":
        assert luaplug_extra_rt.made[-1] is True


def test_full_api(runtime):
    pass


def test_no_backend():
    pass
"""


def write_extra_runtime(root: Path) -> str:
    """A plugin module adding the runtime ``other`` (a luaplug runtime in disguise); the backend it uses."""
    names = luaplug.available_backends()
    if not names:
        pytest.skip("no luaplug backend is available")
    (root / "luaplug_extra_rt.py").write_text(EXTRA_RUNTIME_PLUGIN.format(backend=names[0]), "utf-8")
    return names[0]


def test_an_extra_runtime_runs_the_protocol_cases_when_named(tmp_path: Path) -> None:
    backend = write_extra_runtime(tmp_path)
    (tmp_path / "conftest.py").write_text("from luaplug.testing.fixtures import *  # noqa: F403\n", "utf-8")
    (tmp_path / "test_cases.py").write_text(EXTRA_RUNTIME_CASES, "utf-8")
    plugin = ("-p", "luaplug_extra_rt")
    alone = run_pytest(tmp_path, *plugin, "-v", "test_cases.py", "--luaplug-backend", "other")
    assert alone.returncode == pytest.ExitCode.OK, alone.stdout + alone.stderr
    assert "test_protocol[other] PASSED" in alone.stdout
    assert "test_no_backend PASSED" in alone.stdout
    assert "test_full_api" not in alone.stdout
    assert "1 deselected" in alone.stdout
    both = run_pytest(tmp_path, *plugin, "-v", "test_cases.py", "--luaplug-backend", f"other,{backend}")
    assert both.returncode == pytest.ExitCode.OK, both.stdout + both.stderr
    for case in ("test_protocol[other]", f"test_protocol[{backend}]", f"test_full_api[{backend}]"):
        assert f"{case} PASSED" in both.stdout
    assert "test_full_api[other]" not in both.stdout
    default = run_pytest(tmp_path, *plugin, "-v", "test_cases.py")
    assert default.returncode == pytest.ExitCode.OK, default.stdout + default.stderr
    assert "[other]" not in default.stdout
    assert "deselected" not in default.stdout
    wrong = run_pytest(tmp_path, *plugin, "-q", "test_cases.py", "--luaplug-backend", "nosuch")
    assert wrong.returncode == pytest.ExitCode.USAGE_ERROR
    assert "available: " in wrong.stderr and "other" in wrong.stderr


def test_an_extra_runtime_alone_runs_only_the_kit_protocol_cases(tmp_path: Path) -> None:
    write_extra_runtime(tmp_path)
    proc = run_pytest(
        tmp_path, "-p", "luaplug_extra_rt", "--collect-only", "-q",
        "--pyargs", "luaplug.testing", "--luaplug-backend", "other",
    )  # fmt: skip
    assert proc.returncode == pytest.ExitCode.OK, proc.stdout + proc.stderr
    collected = {line.split("::")[1].split("[")[0] for line in proc.stdout.splitlines() if "::" in line}
    marked = set()
    for source in Path(luaplug.testing.__file__).parent.glob("test_*.py"):
        marked |= set(re.findall(r"@pytest\.mark\.protocol\n(?:@.*\n)*def (test_\w+)", source.read_text("utf-8")))
    assert marked
    assert collected == marked
    assert "deselected" in proc.stdout
