"""The fixtures and hooks of luaplug's conformance kit.

Every test that asks for ``backend`` (directly or through ``runtime``) runs once per available
backend, or once per ``--luaplug-backend NAME``. Tests differ by capability
(``@pytest.mark.requires("nested_same_bundle_calls")``), never by backend name.

A runtime that is no luaplug backend (``pytest_luaplug_runtimes``, :mod:`luaplug.testing.hooks`)
is one more value of ``backend`` when ``--luaplug-backend`` names it; ``runtime`` is then made by
its factory.

A ``conftest.py`` applies them to its directory with ``from luaplug.testing.fixtures import *``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

import luaplug
from luaplug.testing import BACKEND_DEST, BUNDLES_DIR
from luaplug.testing.hooks import RuntimeFactory

__all__ = [
    "backend_capabilities",
    "bundles",
    "copy_bundle",
    "new_runtime",
    "pytest_generate_tests",
    "runtime",
    "_requires",
]

CopyBundle = Callable[..., Path]

_BACKENDS_KEY = pytest.StashKey[list[str]]()
_EXTRAS_KEY = pytest.StashKey[dict[str, RuntimeFactory]]()


def extra_runtimes(config: pytest.Config) -> Mapping[str, RuntimeFactory]:
    """The runtimes of the ``pytest_luaplug_runtimes`` hook, by name."""
    extras = config.stash.get(_EXTRAS_KEY, None)
    if extras is None:
        extras = {}
        for answer in config.hook.pytest_luaplug_runtimes(config=config):
            extras.update(answer or {})
        config.stash[_EXTRAS_KEY] = extras
    return extras


def chosen_backends(config: pytest.Config) -> list[str]:
    """The backends to run on; unknown or unusable names are a usage error.

    Without ``--luaplug-backend``: every available luaplug backend (no extra runtime).
    """
    names = config.stash.get(_BACKENDS_KEY, None)
    if names is not None:
        return names
    names = []
    for raw in config.getoption(BACKEND_DEST, default=None) or []:
        for name in str(raw).split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    available = luaplug.available_backends()
    if not names:
        names = available
    else:
        extras = extra_runtimes(config)
        unknown = [n for n in names if n not in available and n not in extras]
        if unknown:
            installed = sorted(luaplug.installed_backends())
            raise pytest.UsageError(
                f"--luaplug-backend: no usable luaplug backend named {', '.join(map(repr, unknown))} "
                f"(available: {', '.join([*available, *extras]) or 'none'}; "
                f"installed: {', '.join(installed) or 'none'})"
            )
    config.stash[_BACKENDS_KEY] = names
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = chosen_backends(metafunc.config)
        metafunc.parametrize("backend", names, ids=names, scope="session")


_capability_cache: dict[str, frozenset[str]] = {}


def _new_runtime(config: pytest.Config, backend: str, hot_reload: bool) -> luaplug.Runtime:
    factory = extra_runtimes(config).get(backend)
    if factory is None:
        return luaplug.Runtime(backend, hot_reload=hot_reload)
    # The protocol part of luaplug.Runtime, which is all a `protocol` case uses of it.
    rt: luaplug.Runtime = factory(hot_reload)
    return rt


def backend_capabilities(backend: str, config: pytest.Config | None = None) -> frozenset[str]:
    """The capability names of ``backend`` (one throwaway runtime per backend)."""
    caps = _capability_cache.get(backend)
    if caps is None:
        if config is None:
            rt = luaplug.Runtime(backend)
        else:
            rt = _new_runtime(config, backend, hot_reload=False)
        try:
            caps = frozenset(rt.capabilities)
        finally:
            rt.close()
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
    caps = backend_capabilities(request.getfixturevalue("backend"), request.config)
    missing = [cap for cap in wanted if cap not in caps]
    if missing:
        pytest.skip(f"the backend lacks capability {', '.join(missing)}")


@pytest.fixture
def runtime(backend: str, request: pytest.FixtureRequest) -> Iterator[luaplug.Runtime]:
    """A hot-reloading runtime on ``backend``, closed after the test."""
    rt = _new_runtime(request.config, backend, hot_reload=True)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def new_runtime(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., luaplug.Runtime]]:
    """``new_runtime(hot_reload=False)``: one more runtime on ``backend``, closed after the test."""
    made: list[luaplug.Runtime] = []

    def new(hot_reload: bool = False) -> luaplug.Runtime:
        rt = _new_runtime(request.config, backend, hot_reload)
        made.append(rt)
        return rt

    try:
        yield new
    finally:
        for rt in made:
            rt.close()


@pytest.fixture
def bundles() -> Path:
    """The directory of the kit's bundles (:data:`luaplug.testing.BUNDLES_DIR`)."""
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
