"""The ``minilupa`` backend's entry module: registers the backend and imports nothing heavy."""

from __future__ import annotations

from luaplug.backend import BackendInfo, register_backends

luaplug_register_backends = register_backends(
    BackendInfo(
        name="minilupa",
        engine="luaplug_minilupa.engine:MiniEngine",  # imported only when the backend is probed or used
        priority=0,  # below luaplug's own backends when no backend is named
        description="LuaJIT 2.1 through lupa.luajit21, in pure Python (the example of docs/writing-a-backend.md)",
        install_hint="pip install luaplug-minilupa (lupa wheels bundle LuaJIT 2.1)",
    )
)
