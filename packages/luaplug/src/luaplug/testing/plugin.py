"""The ``luaplug`` pytest plugin (entry point group ``pytest11``), loaded in every pytest run where
luaplug is installed.

It registers the kit's command-line option, its marks and its hooks (:mod:`luaplug.testing.hooks`):
an option must be known before pytest collects anything, and ``--pyargs luaplug.testing`` does not
load the kit's ``conftest.py`` that early. The fixtures and the parametrization are in
:mod:`luaplug.testing.fixtures`, which the kit's ``conftest.py`` applies to the kit's own directory
only, so no other test suite is touched.
"""

from __future__ import annotations

import pytest

from luaplug.testing import BACKEND_DEST


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from luaplug.testing import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("luaplug").addoption(
        "--luaplug-backend",
        action="append",
        default=[],
        dest=BACKEND_DEST,
        metavar="NAME",
        help="run luaplug's conformance kit (luaplug.testing) on backend NAME only "
        "(repeatable or comma-separated; default: every available backend)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(capability, ...): skip unless the backend has each capability (luaplug.Runtime.capabilities)",
    )
    config.addinivalue_line("markers", "slow: long-running cases")
    config.addinivalue_line(
        "markers",
        "protocol: the case uses only the protocol part of the runtime API, so it runs on the runtimes "
        "of the pytest_luaplug_runtimes hook too (luaplug.testing.hooks)",
    )
    if config.getoption(BACKEND_DEST, default=None):
        # A name that is no usable backend is a usage error before anything is collected.
        from luaplug.testing.fixtures import chosen_backends

        chosen_backends(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the kit's cases a runtime of ``pytest_luaplug_runtimes`` cannot run (no ``protocol`` mark)."""
    from luaplug.testing import KIT_DIR
    from luaplug.testing.fixtures import chosen_backends, extra_runtimes

    extras = extra_runtimes(config)
    if not extras:
        return
    only_extras = not set(chosen_backends(config)) - set(extras)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on = callspec.params.get("backend") if callspec is not None else None
        unfit = on in extras if on is not None else only_extras and item.path.is_relative_to(KIT_DIR)
        (dropped if unfit and item.get_closest_marker("protocol") is None else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
