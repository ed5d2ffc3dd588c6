"""cffi build script (API mode, out of line): compiles ``luaplug_cffi._native``
against the system LuaJIT found with ``pkg-config luajit``.

Overrides: ``LUAPLUG_LUAJIT_INCLUDE_DIR`` / ``LUAPLUG_LUAJIT_LIB_DIR`` (and
``LUAPLUG_LUAJIT_LIB``, default ``luajit-5.1``) when pkg-config is not wanted.
It links the shared system library; nothing of LuaJIT is copied.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
MISSING = (
    "LuaJIT development files not found: install libluajit-5.1-dev (Debian/Ubuntu) "
    "or set LUAPLUG_LUAJIT_INCLUDE_DIR and LUAPLUG_LUAJIT_LIB_DIR"
)

CDEF = """
typedef struct lp_vm lp_vm;
typedef struct lp_value { int type; double num; const char *str; size_t len; } lp_value;
typedef struct lp_contract { lp_vm *vm; int cidx; uint64_t contract_id; } lp_contract;
typedef struct { void *data; } VmLoaderDataC;
typedef struct { void *data; uint64_t contract_id; } InstanceC;
typedef struct { const uint8_t *ptr; size_t len; } StringViewC;
typedef struct { uint32_t code; StringViewC message; } AbiErrorC;

lp_vm *lp_new(size_t mem_limit);
int lp_dump(const char *src, size_t len, const char *name, char **out, size_t *out_len);
void lp_free_buf(char *p);
int lp_close(lp_vm *vm);
void lp_free(lp_vm *vm);
int lp_load(lp_vm *vm, const char *src, size_t len);
uint64_t lp_arena_alloc(double size, double arena, double host);
int lp_call(lp_vm *vm, const char *entry, int nargs, const lp_value *args, lp_value **res, int *nres);
void lp_free_results(lp_value *vals, int n);
int lp_dispatch(lp_vm *vm, int cidx, uint32_t fn_id, uint64_t iid, uintptr_t args, uintptr_t out, uintptr_t arena);
const char *lp_last_error(size_t *len);
int lp_foreign_wait_begin(uintptr_t cell);
void lp_foreign_wait_end(void);
const char *lp_luajit_version(void);
void lp_vm_call(VmLoaderDataC ld, InstanceC inst, uint32_t fn_id, const void *args, void *out,
                void *arena, AbiErrorC *err);
void lp_create_instance(VmLoaderDataC ld, const void *host, const void *args, InstanceC *out);
void lp_destroy_instance(VmLoaderDataC ld, const void *host, InstanceC inst);

extern "Python" void lp_log_failure(int kind, const char *text, size_t len);
int lp_install(const char *module_name);
"""


def luajit_flags() -> dict[str, list[str]]:
    """include_dirs / library_dirs / libraries for the system LuaJIT."""
    inc = os.environ.get("LUAPLUG_LUAJIT_INCLUDE_DIR")
    lib = os.environ.get("LUAPLUG_LUAJIT_LIB_DIR")
    name = os.environ.get("LUAPLUG_LUAJIT_LIB", "luajit-5.1")
    if inc or lib:
        return {"include_dirs": [inc] if inc else [], "library_dirs": [lib] if lib else [], "libraries": [name]}
    try:
        out = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "luajit"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(MISSING) from exc
    flags: dict[str, list[str]] = {"include_dirs": [], "library_dirs": [], "libraries": []}
    for tok in shlex.split(out):
        if tok.startswith("-I"):
            flags["include_dirs"].append(tok[2:])
        elif tok.startswith("-L"):
            flags["library_dirs"].append(tok[2:])
        elif tok.startswith("-l"):
            flags["libraries"].append(tok[2:])
    if not flags["libraries"]:
        raise RuntimeError(MISSING)
    return flags


def entry_include_dir() -> str:
    """The directory of luaplug_entry.h (lp_pyfast.c includes it): luaplug.backend.get_include(),
    or, building in this repository's checkout without luaplug installed, the core's source."""
    checkout = HERE.parents[3] / "packages" / "luaplug" / "src" / "luaplug" / "backend"
    try:
        from luaplug.backend import get_include
    except ImportError:
        if (checkout / "luaplug_entry.h").is_file():
            return str(checkout)
        raise RuntimeError("building luaplug-cffi needs luaplug (luaplug.backend.get_include()) installed") from None
    return get_include()


ffibuilder = FFI()
ffibuilder.cdef(CDEF)
_flags = luajit_flags()
_flags["include_dirs"].append(entry_include_dir())
ffibuilder.set_source(
    "luaplug_cffi._native",
    # lp_pyfast.c uses the full C API (METH_FASTCALL), hence no py_limited_api; and the macro that
    # keeps cffi's header from defining Py_LIMITED_API anyway (cffi < 1.16 does not set it itself).
    "\n".join((HERE / name).read_text(encoding="utf-8") for name in ("lp_core.c", "lp_pyfast.c")),
    py_limited_api=False,
    define_macros=[("_CFFI_NO_LIMITED_API", None)],
    extra_compile_args=["-O2", "-pthread"],
    extra_link_args=["-pthread"],
    **_flags,
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=False)
