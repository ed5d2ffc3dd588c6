"""The reference runtime as ``--luaplug-backend reference`` of the conformance kit (:mod:`.kit`)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from luaplug.testing.hooks import RuntimeFactory

from .adapter import reference_available
from .kit import KitRuntime


def pytest_luaplug_runtimes(config: pytest.Config) -> Mapping[str, RuntimeFactory] | None:
    if reference_available() is not None:
        return None
    return {"reference": KitRuntime}
