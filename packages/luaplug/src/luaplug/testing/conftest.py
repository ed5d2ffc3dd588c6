"""The kit's fixtures, for the kit's directory only (see :mod:`luaplug.testing.fixtures`)."""

from luaplug.testing.fixtures import *  # noqa: F403
