"""Parent side of the subprocess cases: ``start`` (import + create a runtime), ``load`` and ``scale``.

Children run with the parent's interpreter. Byte-code caching is on for them, in a private
``PYTHONPYCACHEPREFIX`` (the tox envs set ``PYTHONDONTWRITEBYTECODE``, which would make
every child compile luaplug's sources again while the reference's wheel has its caches); a
warm-up child per contender fills that cache before anything is measured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import HERE

_START = """\
import time
t0 = time.perf_counter_ns()
{create}
t1 = time.perf_counter_ns()
{load}
t2 = time.perf_counter_ns()
print((t1 - t0) / 1e6, (t2 - t0) / 1e6)
"""

_CREATE = {
    "reference": (
        "import polyplug, polyplug_loaders_lua\nrt = polyplug.Runtime()\npolyplug_loaders_lua.register_lua_loader(rt)"
    ),
    "floor": "import lupa.luajit21\nlua = lupa.luajit21.LuaRuntime()",
}
_LOAD = {
    "reference": "rt.load_bundle({path!r})",
    "floor": ("lua.execute(open({main!r}, encoding='utf-8').read())\nlua.globals().polyplug_init(0, 0)"),
}


def child_env(pycache: Path) -> dict[str, str]:
    """The environment of every child: the parent's, with byte-code caching into ``pycache``."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    spec = importlib.util.find_spec("polyplug")
    if spec is not None and spec.origin is not None and not env.get("POLYPLUG_LIB"):
        # Spec section 15: polyplug dlopens POLYPLUG_LIB, else a soname the system lacks.
        lib = Path(spec.origin).parent / "_native" / "linux-x64" / "libpolyplug.so"
        if lib.is_file():
            env["POLYPLUG_LIB"] = str(lib)
    return env


def _run(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args[:2]} failed with {proc.returncode}:\n{proc.stderr.strip()}")
    return proc.stdout


def start_sample(contender: str, bundle: Path, env: dict[str, str]) -> tuple[float, float]:
    """One fresh process: ms to import + create a runtime, and ms to that plus loading ``bundle``."""
    create = _CREATE.get(contender, f"import luaplug\nrt = luaplug.Runtime({contender!r})")
    load = _LOAD.get(contender, "rt.load({path!r})").format(path=str(bundle), main=str(bundle / "main.lua"))
    out = _run(["-c", _START.format(create=create, load=load)], env)
    start, with_load = out.split()
    return float(start), float(with_load)


def scale_sample(backend: str, root: Path, n: int, calls: int, env: dict[str, str]) -> dict[str, Any]:
    """One fresh process holding ``n`` distinct bundles (see ``_worker.py``)."""
    out = _run([str(HERE / "_worker.py"), "scale", backend, str(root), str(n), str(calls)], env)
    result: dict[str, Any] = json.loads(out)
    return result


def load_sample(contender: str, root: Path, count: int, sdk: Path, env: dict[str, str]) -> dict[str, Any]:
    """One fresh process loading ``count`` bundles (see ``_worker.py``)."""
    out = _run([str(HERE / "_worker.py"), "load", contender, str(root), str(count), str(sdk)], env)
    result: dict[str, Any] = json.loads(out)
    return result
