"""Fixtures of the luaplug integration suite.

Every test that asks for ``backend`` (directly or through ``runtime``) runs once per
available backend, or once per ``--backend NAME`` given on the command line. Tests
differ by capability (``@pytest.mark.requires("nested_same_bundle_calls")``), never by
backend name.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import luaplug

BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"

# Test modules import their helpers (_fuzz_strategies, soak, test_fuzz) as top-level
# modules; make that work under --import-mode=importlib too (the offline build uses it).
if str(BUNDLES_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BUNDLES_DIR.parent))

CopyBundle = Callable[..., Path]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="run the integration suite on backend NAME only (repeatable; default: every available backend)",
    )


def _chosen_backends(config: pytest.Config) -> list[str]:
    """The backends to run on; unknown or unusable names are a usage error."""
    names: list[str] = []
    for raw in config.getoption("--backend", default=None) or []:
        for name in str(raw).split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    available = luaplug.available_backends()
    if not names:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        installed = sorted(luaplug.installed_backends())
        raise pytest.UsageError(
            f"--backend: no usable luaplug backend named {', '.join(map(repr, unknown))} "
            f"(available: {', '.join(available) or 'none'}; installed: {', '.join(installed) or 'none'})"
        )
    return names


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(capability): skip unless the runtime's backend has this capability (luaplug.backend.CAP_*)",
    )
    config.stash[_BACKENDS_KEY] = _chosen_backends(config)


_BACKENDS_KEY = pytest.StashKey[list[str]]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = metafunc.config.stash.get(_BACKENDS_KEY, None)
        if names is None:
            names = _chosen_backends(metafunc.config)
        metafunc.parametrize("backend", names, ids=names, scope="session")


_capability_cache: dict[str, frozenset[str]] = {}


def backend_capabilities(backend: str) -> frozenset[str]:
    """The capability names of ``backend`` (one throwaway runtime per backend)."""
    caps = _capability_cache.get(backend)
    if caps is None:
        with luaplug.Runtime(backend) as rt:
            caps = rt.capabilities
        _capability_cache[backend] = caps
    return caps


@pytest.fixture(autouse=True)
def _requires(request: pytest.FixtureRequest) -> None:
    """Honour ``@pytest.mark.requires(capability, ...)``."""
    wanted = [cap for mark in request.node.iter_markers("requires") for cap in mark.args]
    if not wanted:
        return
    if "backend" not in request.fixturenames:
        raise pytest.UsageError(f"{request.node.nodeid}: @requires needs the backend (or runtime) fixture")
    caps = backend_capabilities(request.getfixturevalue("backend"))
    missing = [cap for cap in wanted if cap not in caps]
    if missing:
        pytest.skip(f"the backend lacks capability {', '.join(missing)}")


@pytest.fixture
def runtime(backend: str) -> Iterator[luaplug.Runtime]:
    """A hot-reloading runtime on ``backend``, closed after the test."""
    rt = luaplug.Runtime(backend, hot_reload=True)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def bundles() -> Path:
    """The directory of the suite's bundles (``integration/bundles``)."""
    return BUNDLES_DIR


@pytest.fixture
def copy_bundle(tmp_path: Path) -> CopyBundle:
    """``copy_bundle(name, dest=None)``: a copy of bundle ``name`` under ``tmp_path``.

    ``dest`` is the directory name of the copy (any characters the file system takes);
    the copy can be edited freely (reload tests) without touching the originals.
    """

    def copy(name: str, dest: str | None = None) -> Path:
        target = tmp_path / (dest if dest is not None else name)
        shutil.copytree(BUNDLES_DIR / name, target)
        return target

    return copy
