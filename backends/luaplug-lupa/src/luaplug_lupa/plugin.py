"""Entry point of the ``lupa`` backend (group ``luaplug``). Imports nothing heavy."""

from __future__ import annotations

from luaplug.backend import BackendInfo, register_backends

luaplug_register_backends = register_backends(
    BackendInfo(
        name="lupa",
        engine="luaplug_lupa.engine:LupaEngine",
        priority=10,
        description="LuaJIT 2.1 through lupa (lupa.luajit21, or a lupa built against LuaJIT 2.1)",
        install_hint="pip install luaplug-lupa (lupa wheels have lupa.luajit21), or a lupa built against "
        "LuaJIT 2.1 (Debian: python3-lupa)",
    )
)
