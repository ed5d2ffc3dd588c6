"""The version of this distribution: the single source the build backend reads.

luaplug, luaplug-lupa and luaplug-cffi are released in lockstep; the backends pin
``luaplug==`` this version (checked by ``packages/luaplug/tests/test_versions.py``).
"""

from __future__ import annotations

from typing import Final

__version__: Final = "0.1.0"
