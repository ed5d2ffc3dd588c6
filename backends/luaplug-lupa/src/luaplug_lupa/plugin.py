"""Entry point of the ``lupa`` backend (group ``luaplug``). Imports nothing heavy."""

from __future__ import annotations

from luaplug.backends import BackendInfo, BackendRegistry
from luaplug.hookspecs import hookimpl


@hookimpl
def luaplug_register_backends(register: BackendRegistry) -> None:
    """Describe the lupa backend."""
    register.add(
        BackendInfo(
            name="lupa",
            engine="luaplug_lupa.engine:LupaEngine",
            priority=10,
            description="LuaJIT 2.1 bundled with lupa (lupa.luajit21)",
            install_hint="pip install luaplug-lupa (needs a lupa wheel with lupa.luajit21)",
        )
    )
