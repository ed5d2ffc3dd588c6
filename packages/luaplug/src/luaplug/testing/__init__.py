"""luaplug's conformance kit: the behaviour every luaplug backend must have, as a pytest suite.

Run it on an installed backend, with no checkout of luaplug::

    pip install luaplug my-backend pytest
    pytest --pyargs luaplug.testing --luaplug-backend NAME

The cases use luaplug's public API only. A case that needs an optional capability carries
``@pytest.mark.requires("memory_limit")`` (the names of :attr:`luaplug.Runtime.capabilities`) and is
skipped on a backend without it. A case marked ``@pytest.mark.protocol`` also runs on the runtimes
a plugin adds through the ``pytest_luaplug_runtimes`` hook (:mod:`luaplug.testing.hooks`).
``--luaplug-backend`` is registered by the ``luaplug`` pytest plugin (:mod:`luaplug.testing.plugin`);
the fixtures live in :mod:`luaplug.testing.fixtures`.
"""

from __future__ import annotations

from pathlib import Path

#: The kit's directory (its cases).
KIT_DIR = Path(__file__).resolve().parent

#: The kit's plugin bundles (one directory each, with its ``manifest.toml``).
BUNDLES_DIR = KIT_DIR / "bundles"

#: The ``dest`` of ``--luaplug-backend``; a suite may add its own spelling of the option with it.
BACKEND_DEST = "luaplug_backend"

__all__ = ["BACKEND_DEST", "BUNDLES_DIR", "KIT_DIR"]
