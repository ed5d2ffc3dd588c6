"""The TOML reader: ``tomllib``, or ``tomli`` before Python 3.11.

Importing it costs a few milliseconds, so modules import this one inside the
functions that read TOML, never at module level: creating a runtime reads none
in the common case (no configuration file; manifests in ``_simpletoml``'s subset).
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from tomllib import TOMLDecodeError, load, loads
else:  # pragma: no cover - exercised on 3.10 only
    from tomli import TOMLDecodeError, load, loads

__all__ = ["TOMLDecodeError", "load", "loads"]
