"""Generate ``_abi_ffi.py``: the core's FFI in cffi's out-of-line ABI mode.

Run ``python -m luaplug._abi_build`` after changing :data:`luaplug.abi.ABI_CDEF`,
:data:`luaplug.abi.LIBC_CDEF` or :data:`luaplug.abi.INTERNAL_CDEF`; ``tests/test_abi.py`` fails while the
committed module is stale. Not imported at run time.
"""

from __future__ import annotations

import ast
import sys
import tempfile
from pathlib import Path

import cffi

MODULE = Path(__file__).resolve().parent / "_abi_ffi.py"


def _declarations() -> tuple[str, str]:
    # Read the two constants from abi.py's source: importing luaplug.abi needs
    # the module this script generates.
    tree = ast.parse((MODULE.parent / "abi.py").read_text("utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id in ("ABI_CDEF", "LIBC_CDEF", "INTERNAL_CDEF") and isinstance(node.value, ast.Constant):
                found[node.target.id] = str(node.value.value)
    return found["ABI_CDEF"], found["LIBC_CDEF"] + found["INTERNAL_CDEF"]


def generate() -> str:
    """The text ``_abi_ffi.py`` must have."""
    abi, libc = _declarations()
    builder = cffi.FFI()
    builder.cdef(abi + libc)
    builder.set_source("luaplug._abi_ffi", None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "_abi_ffi.py"
        builder.emit_python_code(str(out))
        return out.read_text("utf-8")


def main() -> int:
    MODULE.write_text(generate(), "utf-8")
    print(f"wrote {MODULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
