"""The pluggy hook a backend implements (entry-point group ``luaplug``).

A backend distribution declares::

    [project.entry-points.luaplug]
    mybackend = "mybackend_pkg.plugin"

and that module (which must import cheaply: no dlopen, no Lua state)
implements :func:`luaplug_register_backends`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pluggy

if TYPE_CHECKING:
    from .backends import BackendRegistry

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec", "luaplug_register_backends"]

PROJECT_NAME: Final = "luaplug"
hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def luaplug_register_backends(register: BackendRegistry) -> None:
    """Describe this plugin's backends with ``register.add(BackendInfo(...))``.

    :param register: collects :class:`~luaplug.backends.BackendInfo` objects
    """
