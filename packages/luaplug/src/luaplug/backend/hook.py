"""The ``luaplug`` entry-point hook a backend's plugin module exposes."""

from __future__ import annotations

from collections.abc import Callable

from luaplug.backends import BackendInfo, BackendRegistry
from luaplug.hookspecs import hookimpl

__all__ = ["register_backends"]


def register_backends(*infos: BackendInfo) -> Callable[[BackendRegistry], None]:
    """The hook implementation adding ``infos``; a plugin module binds it to the hook's name:
    ``luaplug_register_backends = register_backends(BackendInfo(...))``."""

    @hookimpl
    def luaplug_register_backends(register: BackendRegistry) -> None:
        for info in infos:
            register.add(info)

    return luaplug_register_backends
