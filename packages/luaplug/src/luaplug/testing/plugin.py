"""The ``luaplug`` pytest plugin (entry point group ``pytest11``), loaded in every pytest run where
luaplug is installed.

It only registers the kit's command-line option and its marks: an option must be known before
pytest collects anything, and ``--pyargs luaplug.testing`` does not load the kit's ``conftest.py``
that early. The fixtures and the parametrization are in :mod:`luaplug.testing.fixtures`, which the
kit's ``conftest.py`` applies to the kit's own directory only, so no other test suite is touched.
"""

from __future__ import annotations

import pytest

from luaplug.testing import BACKEND_DEST


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
    if config.getoption(BACKEND_DEST, default=None):
        # A name that is no usable backend is a usage error before anything is collected.
        from luaplug.testing.fixtures import chosen_backends

        chosen_backends(config)
