"""The repository's integration suite: the conformance kit's fixtures (``luaplug.testing``) for the
cases only this repository runs (code generation, docs examples, fuzzing, soak, internals, both
backends at once).

``--backend NAME`` is this suite's spelling of the kit's ``--luaplug-backend NAME``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from luaplug.testing import BACKEND_DEST
from luaplug.testing.fixtures import *  # noqa: F403

# Test modules import their helpers (_fuzz_strategies, soak, test_fuzz) as top-level
# modules; make that work under --import-mode=importlib too (the offline build uses it).
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        dest=BACKEND_DEST,
        metavar="NAME",
        help="the same as --luaplug-backend NAME",
    )
