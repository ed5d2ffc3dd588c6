# Sourced (not run) by scripts/offline_build.sh and scripts/debian_build.sh: luaplug's three
# distributions built the way a distribution builds them, without network, and the tests run
# against the installed wheels.
#
# The sourcing script sets `repo` (the checkout), `tag` (the prefix of its failure messages) and
# calls dist_prepare WORK-DIR first; `work` is then that directory, absolute.

# shellcheck shell=bash

dist_projects=(packages/luaplug backends/luaplug-lupa backends/luaplug-cffi)

step() { printf '\n== %s\n' "$*"; }
fail() { printf '%s: %s\n' "$tag" "$*" >&2; exit 1; }

# --- offline --------------------------------------------------------------------------------------
# No index, no find-links or constraints from pip's configuration, no wheel cache, no byte-compiled
# files in the source copies.
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT PYTHONPATH
if unshare -rn true 2>/dev/null; then
  offline_how="network namespace (unshare -rn)"
  offline() { unshare -rn -- "$@"; }
else
  offline_how="no index, no pip configuration, dead proxy"
  offline() {
    env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
      HTTPS_PROXY=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 no_proxy= NO_PROXY= "$@"
  }
fi

# logged NAME CMD...: run CMD offline with its output in logs/NAME.log, shown only on failure.
logged() {
  local name="$1"; shift
  if ! offline "$@" >"$work/logs/$name.log" 2>&1; then
    tail -n 60 "$work/logs/$name.log" >&2
    fail "$name failed (full log: $work/logs/$name.log)"
  fi
}

# dist_prepare DIR: DIR (created, emptied by the caller) becomes the work directory.
dist_prepare() {
  mkdir -p "$1"
  work="$(cd "$1" && pwd)"
  mkdir -p "$work"/{src,sdist,wheels,unpacked,suite,run,logs}
}

# dist_sdists PY: an sdist of each project (PY -m build --sdist --no-isolation) from a clean copy
# of its source tree (no build/, egg-info, compiled module, caches); sets `version`, checked to be
# the same for the three (lockstep).
dist_sdists() {
  local py="$1" dir name norm core_sdist
  for dir in "${dist_projects[@]}"; do
    name="$(basename "$dir")"
    mkdir -p "$work/src/$name"
    tar -C "$repo/$dir" --exclude=./build --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ \
      --exclude='*.so' --exclude='*.o' --exclude=_native.c -cf - . | tar -C "$work/src/$name" -xf -
    (cd "$work/src/$name" &&
      logged "sdist-$name" env PYTHONPATH="$work/core" "$py" -m build --sdist --no-isolation --outdir "$work/sdist" .)
    if [ "$name" = luaplug ]; then dist_core "$py"; fi
  done
  ls "$work/sdist"
  core_sdist="$(ls "$work"/sdist/luaplug-[0-9]*.tar.gz)"
  version="$(basename "$core_sdist" .tar.gz)"
  version="${version#luaplug-}"
  for norm in luaplug_lupa luaplug_cffi; do
    dist_sdist "$norm" >/dev/null || fail "no $norm-$version.tar.gz: the versions are not in lockstep"
  done
}

# dist_core PY: luaplug's wheel, built from its sdist, unpacked in $work/core. The backends build
# against it (through PYTHONPATH) as against an installed build dependency: their C extensions
# compile luaplug.backend.get_include()'s luaplug_entry.h.
dist_core() {
  local py="$1"
  logged wheel-core "$py" -m pip wheel --no-index --no-build-isolation --no-deps --wheel-dir "$work/core-wheel" \
    "$work"/sdist/luaplug-[0-9]*.tar.gz
  (mkdir -p "$work/core" && cd "$work/core" && "$py" -m zipfile -e "$work"/core-wheel/luaplug-*.whl .)
}

# dist_sdist NAME: the path of NAME's sdist at `version`. NAME is the normalized name (luaplug_cffi):
# setuptools >= 69.3 names sdists so (PEP 625), older ones by the project name (luaplug-cffi).
dist_sdist() {
  local f
  for f in "$work/sdist/$1-$version.tar.gz" "$work/sdist/${1//_/-}-$version.tar.gz"; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  return 1
}

# dist_wheels PY: a wheel from each sdist (pip wheel --no-index --no-build-isolation --no-deps);
# the build dependencies come from PY's environment.
dist_wheels() {
  local py="$1" sdist
  for sdist in "$work"/sdist/*.tar.gz; do
    logged "wheel-$(basename "$sdist" .tar.gz)" env PYTHONPATH="$work/core" "$py" -m pip wheel --no-index --no-build-isolation --no-deps \
      --wheel-dir "$work/wheels" "$sdist"
  done
  ls "$work/wheels"
}

# dist_check_imports VPY: luaplug and both backends import from VPY's own site-packages.
dist_check_imports() {
  local vpy="$1"
  "$vpy" - <<'EOF'
import sys
import sysconfig
from pathlib import Path

import luaplug
import luaplug_cffi
import luaplug_lupa

site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
for mod in (luaplug, luaplug_lupa, luaplug_cffi):
    where = Path(mod.__file__).resolve()
    if not site & set(where.parents):
        sys.exit(f"{mod.__name__} imported from {where}, not from the venv's site-packages {sorted(map(str, site))}")
    print(f"{mod.__name__} {mod.__version__}: {where.parent}")
print("backends available:", ", ".join(luaplug.available_backends()))
EOF
}

# dist_test_trees: the unit tests unpacked from the sdists (their directories in `unit_dirs`), and a
# copy of the integration suite in $work/suite/integration (without the reference runtime's cases
# and the benchmarks).
dist_test_trees() {
  local norm sdist top
  unit_dirs=()
  for norm in luaplug luaplug_lupa luaplug_cffi; do
    sdist="$(dist_sdist "$norm")"
    tar -C "$work/unpacked" -xzf "$sdist"
    top="$(basename "$sdist" .tar.gz)"
    unit_dirs+=("$work/unpacked/$top/tests")
  done
  tar -C "$repo" --exclude=__pycache__ --exclude=./integration/reference --exclude=./integration/benchmarks \
    -cf - ./integration | tar -C "$work/suite" -xf -
}

# dist_pytest VPY ARGS...: VPY's pytest run from a directory where no source tree is importable
# (--import-mode=importlib keeps the test directories off sys.path).
dist_pytest() {
  local vpy="$1"; shift
  (cd "$work/run" && "$vpy" -m pytest -p no:cacheprovider --import-mode=importlib -c "$repo/pyproject.toml" \
    --rootdir "$work" "$@")
}

# dist_sizes: the built files and their sizes.
dist_sizes() {
  local f
  for f in "$work"/sdist/*.tar.gz "$work"/wheels/*.whl; do
    printf '  %-50s %8s bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"
  done
}
