"""The hooks of luaplug's conformance kit (registered by :mod:`luaplug.testing.plugin`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

#: ``factory(hot_reload)``: a new, open runtime; the kit closes it after the case.
RuntimeFactory = Callable[[bool], Any]


@pytest.hookspec
def pytest_luaplug_runtimes(config: pytest.Config) -> Mapping[str, RuntimeFactory] | None:
    """Runtimes that are not luaplug backends, by the name ``--luaplug-backend`` selects them with.

    Such a runtime runs only the cases marked ``@pytest.mark.protocol``, and only when named with
    ``--luaplug-backend``. It offers the part of :class:`luaplug.Runtime` those cases use:
    ``capabilities``, ``host_api`` and ``host_api_address`` (a ``CallArena`` host), ``revision``,
    ``load(path) -> name``, ``reload(name)``, ``unload(name)``, ``close()`` and
    ``contract("name@major")``; a contract offers ``default``, ``create_instance()``,
    ``function_count`` and ``interface_address``; an instance ``id``, ``dispatch``, ``call`` and
    ``destroy()``, with luaplug's error types.
    """
