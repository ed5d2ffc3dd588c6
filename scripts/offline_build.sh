#!/usr/bin/env bash
# The offline build check: luaplug built and tested the way a distribution does it.
#
#   1. an sdist of each of luaplug, luaplug-lupa, luaplug-cffi (python -m build --sdist --no-isolation),
#      from a clean copy of its source tree (no build/, egg-info, compiled module, caches);
#   2. a wheel from each sdist (pip wheel --no-index --no-build-isolation --no-deps); the build
#      dependencies (setuptools, wheel, cffi) come from the running environment;
#   3. the cffi sdist built twice more: once with LuaJIT hidden from pkg-config (must fail naming
#      libluajit-5.1-dev) and once through LUAPLUG_LUAJIT_INCLUDE_DIR / LUAPLUG_LUAJIT_LIB_DIR alone;
#   4. the wheels installed (pip install --no-index --find-links) into a fresh venv that sees, besides
#      them, only the running environment's packages (as a distribution's python3-cffi, python3-lupa,
#      python3-pytest): the import check proves luaplug comes from that venv's site-packages;
#   5. the unit tests unpacked from the sdists, then the conformance kit from the installed wheel (--pyargs
#      luaplug.testing) with the integration suite (a copy of integration/), on every installed backend, run
#      from a directory where no source tree is importable; the unit run includes
#      tests/test_distributions.py, which inspects the sdists and wheels built here.
#
# Steps 1-4 run without network: in a network namespace (unshare -rn) when the system allows it,
# otherwise with no index, no pip configuration and a dead proxy.
#
# usage: scripts/offline_build.sh [PYTEST-ARGS...]      (tox -e packaging [-- PYTEST-ARGS])
# env:   PYTHON                 the build/test interpreter (default: python, the tox env's)
#        LUAPLUG_PACKAGING_DIR  work directory, emptied first (default: a temporary one, removed at exit)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tag=offline_build
py="$("${PYTHON:-python}" -c 'import sys; print(sys.executable)')" # absolute: the script changes directory
started=$SECONDS
# shellcheck source=scripts/_distbuild.sh
. "$repo/scripts/_distbuild.sh"

if [ -n "${LUAPLUG_PACKAGING_DIR:-}" ]; then
  rm -rf "$LUAPLUG_PACKAGING_DIR"
  dist_prepare "$LUAPLUG_PACKAGING_DIR"
else
  dist_prepare "$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi

"$py" -c 'import build, cffi, setuptools, wheel' 2>/dev/null ||
  fail "$py lacks a build dependency: it needs build, setuptools, wheel and cffi (tox -e packaging installs them)"
"$py" -c 'import lupa, pluggy, pytest' 2>/dev/null ||
  fail "$py lacks a test dependency: it needs pytest, lupa and pluggy (tox -e packaging installs them)"
echo "offline: $offline_how; work directory: $work"

# --- 1. sdists ------------------------------------------------------------------------------------
step "sdists (python -m build --sdist --no-isolation)"
dist_sdists "$py"

# --- 2. wheels from the sdists --------------------------------------------------------------------
step "wheels from the sdists (pip wheel --no-index --no-build-isolation --no-deps)"
dist_wheels "$py"

# --- 3. the cffi build without pkg-config's LuaJIT, and through the override --------------------
step "luaplug-cffi: LuaJIT missing, then LuaJIT through LUAPLUG_LUAJIT_INCLUDE_DIR / LUAPLUG_LUAJIT_LIB_DIR"
cffi_sdist="$(dist_sdist luaplug_cffi)"
hidden=(env -u LUAPLUG_LUAJIT_INCLUDE_DIR -u LUAPLUG_LUAJIT_LIB_DIR -u LUAPLUG_LUAJIT_LIB
  PKG_CONFIG_LIBDIR=/nonexistent PKG_CONFIG_PATH=)
if offline "${hidden[@]}" "$py" -m pip wheel --no-index --no-build-isolation --no-deps \
  --wheel-dir "$work/missing" "$cffi_sdist" >"$work/logs/cffi-missing-luajit.log" 2>&1; then
  fail "the luaplug-cffi build succeeded with LuaJIT hidden from pkg-config"
fi
grep -q 'libluajit-5\.1-dev' "$work/logs/cffi-missing-luajit.log" ||
  fail "the failed luaplug-cffi build does not name libluajit-5.1-dev (log: $work/logs/cffi-missing-luajit.log)"
echo "LuaJIT missing: fails naming libluajit-5.1-dev"
if lj_cflags="$(pkg-config --cflags-only-I luajit 2>/dev/null)" && lj_libdir="$(pkg-config --variable=libdir luajit)"; then
  lj_inc="${lj_cflags#-I}"
  lj_inc="${lj_inc%% *}"
  logged cffi-override "${hidden[@]}" LUAPLUG_LUAJIT_INCLUDE_DIR="$lj_inc" LUAPLUG_LUAJIT_LIB_DIR="$lj_libdir" \
    PYTHONPATH="$work/core" \
    "$py" -m pip wheel --no-index --no-build-isolation --no-deps --wheel-dir "$work/override" "$cffi_sdist"
  mkdir -p "$work/override/x"
  (cd "$work/override/x" && "$py" -m zipfile -e ../luaplug_cffi-*.whl .)
  # The ldd output is captured first: a pipe into an early-exiting reader (grep -q, head) would
  # SIGPIPE ldd and fail the pipeline under pipefail.
  linked="$(ldd "$work"/override/x/luaplug_cffi/_native*.so)"
  case "$linked" in
    *libluajit-5.1.so*) ;;
    *) fail "the override build does not link the shared libluajit-5.1" ;;
  esac
  lj_so="$(sed -n 's/.*\(libluajit-5\.1\.so[^ ]*\).*/\1/p' <<<"$linked")"
  echo "override ($lj_inc, $lj_libdir): builds, links ${lj_so%%$'\n'*}"
else
  echo "pkg-config does not know luajit: override build skipped"
fi

# --- 4. a fresh venv with the wheels --------------------------------------------------------------
step "install into a fresh venv (pip install --no-index --find-links wheels 'luaplug[all]==$version')"
"$py" -m venv --without-pip "$work/venv"
vpy="$work/venv/bin/python"
vsite="$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The running environment stands in for the system's site-packages (cffi, lupa, pluggy, pytest, pip).
"$py" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' |
  sort -u >"$vsite/_packaging_deps.pth"
logged install "$vpy" -m pip install --no-index --find-links "$work/wheels" "luaplug[all]==$version"
logged pip-check "$vpy" -m pip check
dist_check_imports "$vpy"
ldd "$vsite"/luaplug_cffi/_native*.so | grep 'luajit' | sed 's/^[[:space:]]*/luaplug_cffi._native links /'

# --- 5. tests against the installed packages ------------------------------------------------------
dist_test_trees

step "unit tests from the sdists, against the installed wheels"
LUAPLUG_DIST_DIR="$work" dist_pytest "$vpy" -q "${unit_dirs[@]}" "$@"

step "conformance kit (pytest --pyargs luaplug.testing) and integration suite on every installed backend, against the installed wheels"
dist_pytest "$vpy" -q --pyargs luaplug.testing "$work/suite/integration" "$@"

step "done in $((SECONDS - started))s: $version"
dist_sizes
