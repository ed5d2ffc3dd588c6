"""luaplug, luaplug-lupa and luaplug-cffi are released in lockstep.

Each distribution's version has one source, ``<package>/_version.py`` (read by setuptools as
the dynamic ``version``); the backends pin ``luaplug==<that version>`` and the core's extras pin
the backends to it. Checked on the installed distributions and, in a checkout, on the sources.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import luaplug

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - luaplug depends on tomli there
    import tomli as tomllib

#: distribution -> (import package, source directory relative to the repository root)
DISTRIBUTIONS = {
    "luaplug": ("luaplug", "packages/luaplug"),
    "luaplug-lupa": ("luaplug_lupa", "backends/luaplug-lupa"),
    "luaplug-cffi": ("luaplug_cffi", "backends/luaplug-cffi"),
}
BACKENDS = ("luaplug-lupa", "luaplug-cffi")
#: the core's extras and the backends each pins
EXTRAS = {"lupa": {"luaplug-lupa"}, "cffi": {"luaplug-cffi"}, "all": {"luaplug-lupa", "luaplug-cffi"}}

# packages/luaplug/tests/test_versions.py -> the repository root, when this is a checkout
REPO = Path(__file__).resolve().parents[3]
IN_CHECKOUT = all((REPO / src / "pyproject.toml").is_file() for _, src in DISTRIBUTIONS.values())

# name==version, or name (==version): setuptools < 67 writes Requires-Dist in that older form.
_PIN = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([^\s;]+)|\(\s*==\s*([^\s;)]+)\s*\))\s*(?:;\s*(.*))?")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str] | None) -> dict[tuple[str, str | None], str]:
    """``{(distribution, extra or None): version}`` of the ``name==version`` requirements."""
    found: dict[tuple[str, str | None], str] = {}
    for req in requirements or []:
        m = _PIN.fullmatch(req)
        if m is None:
            continue
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", m.group(4) or "")
        found[(_norm(m.group(1)), extra.group(1) if extra else None)] = m.group(2) or m.group(3)
    return found


def installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def source_version(src: str, package: str) -> str:
    """The literal ``__version__`` of ``<src>/src/<package>/_version.py``, without importing it."""
    tree = ast.parse((REPO / src / "src" / package / "_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            targets: list[ast.expr] = [node.target]
        elif isinstance(node, ast.Assign):
            targets = node.targets
        else:
            continue
        named = any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets)
        if named and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node.value.value
    raise AssertionError(f"{src}/src/{package}/_version.py: no literal __version__")


def pyproject(src: str) -> dict[str, Any]:
    with (REPO / src / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_version_comes_from_version_module() -> None:
    from luaplug import _version

    assert luaplug.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", luaplug.__version__)


@pytest.mark.parametrize("dist", BACKENDS)
def test_backend_package_has_the_core_version(dist: str) -> None:
    package = DISTRIBUTIONS[dist][0]
    try:
        module = importlib.import_module(package)
    except ImportError:
        pytest.skip(f"{dist} is not installed")
    assert module.__version__ == luaplug.__version__


@pytest.mark.parametrize("dist", list(DISTRIBUTIONS))
def test_installed_metadata_matches_the_package(dist: str) -> None:
    if not installed(dist):
        pytest.skip(f"{dist} is not installed")
    version = importlib.metadata.version(dist)
    assert version == luaplug.__version__, (
        f"{dist} is installed as {version} but the code says {luaplug.__version__}: a stale install (tox -r)"
    )


@pytest.mark.parametrize("dist", BACKENDS)
def test_installed_backend_pins_the_core(dist: str) -> None:
    if not installed(dist):
        pytest.skip(f"{dist} is not installed")
    assert pins(importlib.metadata.requires(dist)).get(("luaplug", None)) == luaplug.__version__


def test_installed_core_extras_pin_the_backends() -> None:
    found = pins(importlib.metadata.requires("luaplug"))
    for extra, dists in EXTRAS.items():
        for dist in dists:
            assert found.get((dist, extra)) == luaplug.__version__, f"luaplug[{extra}] does not pin {dist}"


@pytest.mark.skipif(not IN_CHECKOUT, reason="not a checkout of the luaplug repository")
def test_sources_are_in_lockstep() -> None:
    versions = {dist: source_version(src, package) for dist, (package, src) in DISTRIBUTIONS.items()}
    assert len(set(versions.values())) == 1, f"versions differ: {versions}"
    version = versions["luaplug"]
    for dist, (package, src) in DISTRIBUTIONS.items():
        project = pyproject(src)
        assert "version" not in project["project"], f"{src}/pyproject.toml: version must be dynamic"
        assert "version" in project["project"]["dynamic"]
        attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
        assert attr == f"{package}._version.__version__", f"{src}/pyproject.toml"
        if dist in BACKENDS:
            assert pins(project["project"]["dependencies"]).get(("luaplug", None)) == version, (
                f"{src}/pyproject.toml must depend on luaplug=={version}"
            )
    extras = pyproject("packages/luaplug")["project"]["optional-dependencies"]
    for extra, dists in EXTRAS.items():
        assert {d for (d, _), v in pins(extras[extra]).items() if v == version} == dists, f"luaplug[{extra}]"


@pytest.mark.skipif(not IN_CHECKOUT, reason="not a checkout of the luaplug repository")
def test_each_distribution_carries_the_license() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "luaplug authors" in text
    for _, src in DISTRIBUTIONS.values():
        assert (REPO / src / "LICENSE").read_text(encoding="utf-8") == text, f"{src}/LICENSE"
        # The license is setup.cfg's (the form setuptools 66.1 to the newest accept), dynamic in pyproject.toml.
        project = pyproject(src)["project"]
        assert "license" in project["dynamic"] and "license" not in project and "license-files" not in project
        cfg = configparser.ConfigParser()
        cfg.read(REPO / src / "setup.cfg", encoding="utf-8")
        assert (cfg["metadata"]["license"], cfg["metadata"]["license_files"]) == ("MIT", "LICENSE"), src


@pytest.mark.skipif(not IN_CHECKOUT, reason="needs the repository's pyproject.toml files")
def test_the_distributions_share_their_project_urls() -> None:
    urls = [pyproject(src)["project"]["urls"] for _, src in DISTRIBUTIONS.values()]
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls[0])
    assert all(u == urls[0] for u in urls)
    assert all(v.startswith("https://") for v in urls[0].values())
