"""A test-only adapter for the reference runtime (polyplug 0.1.3) and the protocol cases run on it.

Nothing here is part of luaplug: the adapter exists so the integration suite (and the
benchmarks) can put luaplug side by side with the runtime the spec describes, and so the
conformance kit's ``protocol`` cases run on it (``kit.py``, ``--luaplug-backend reference``).
"""

from __future__ import annotations

from .adapter import (
    ReferenceContract,
    ReferenceRuntime,
    ReferenceRuntimeError,
    reference_available,
    vendored_copy,
)

__all__ = [
    "ReferenceContract",
    "ReferenceRuntime",
    "ReferenceRuntimeError",
    "reference_available",
    "vendored_copy",
]
