"""Entry point of the ``cffi`` backend (group ``luaplug``). Imports nothing heavy."""

from __future__ import annotations

from luaplug.backend import BackendInfo, register_backends

luaplug_register_backends = register_backends(
    BackendInfo(
        name="cffi",
        engine="luaplug_cffi.engine:CffiEngine",
        priority=20,
        description="the system LuaJIT (libluajit-5.1) through a compiled cffi module",
        install_hint="install libluajit-5.1-dev, then reinstall luaplug-cffi",
    )
)
