#!/usr/bin/env bash
# The Debian check: luaplug built and tested with nothing but Debian's own packages, the way a
# Debian packager builds it (docs/how-to/packaging.md, "Debian"), on whichever Debian release
# this machine runs.
#
#   1. the build and test dependencies from the Debian archive (apt-get, as root; the only network
#      use, and only when one is missing);
#   2. a venv of the system Python (/usr/bin/python3 -m venv --system-site-packages): besides
#      pip, it sees Debian's python3-* packages only;
#   3. the three sdists (python3 -m build --sdist --no-isolation) and their wheels (pip wheel
#      --no-deps --no-index --no-build-isolation), offline (scripts/_distbuild.sh);
#   4. the wheels installed with pip install --no-deps --no-index; a check then proves that
#      Debian's packages meet every declared dependency;
#   5. `luaplug backends` and what each backend runs on: lupa on python3-lupa, whose extension
#      links the system libluajit-5.1, cffi on the same library;
#   6. the unit tests from the sdists, then the conformance kit and the integration suite on lupa and on cffi, against
#      the installed wheels.
#
# Elsewhere it prints one line and exits 0: on a system that is not Debian, or as a user other
# than root when a package is missing.
#
# usage: scripts/debian_build.sh [PYTEST-ARGS...]
# env:   LUAPLUG_DEBIAN_DIR  work directory, emptied first (default: a temporary one, removed at exit)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tag=debian_build
started=$SECONDS

os_id="$(. /etc/os-release 2>/dev/null && echo "${ID:-unknown}")" || os_id=unknown
if [ "$os_id" != debian ]; then
  echo "debian_build: skipped: this system is not Debian (os-release ID: $os_id)"
  exit 0
fi
release="$(. /etc/os-release && echo "${PRETTY_NAME:-Debian}")"

# --- 1. Debian's packages -------------------------------------------------------------------------
# The build-deps of the three source packages and the test dependencies. No version numbers: the
# check runs on whatever the release ships (the declared minimums are Debian 12's).
deb_packages=(
  python3-setuptools python3-wheel python3-build python3-venv python3-dev python3-cffi
  libluajit-5.1-dev pkg-config gcc
  python3-pluggy python3-lupa python3-pytest python3-hypothesis
)
missing=()
for pkg in "${deb_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "debian_build: skipped: Debian packages missing (${missing[*]}); run as root to install them"
    exit 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi

# shellcheck source=scripts/_distbuild.sh
. "$repo/scripts/_distbuild.sh"
if [ -n "${LUAPLUG_DEBIAN_DIR:-}" ]; then
  rm -rf "$LUAPLUG_DEBIAN_DIR"
  dist_prepare "$LUAPLUG_DEBIAN_DIR"
else
  dist_prepare "$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi

step "$release: Debian's packages"
dpkg-query -W -f '  ${Package} ${Version}\n' "${deb_packages[@]}" libluajit-5.1-2
echo "offline: $offline_how; work directory: $work"

# --- 2. the system Python's venv ------------------------------------------------------------------
# /usr/bin/python3 by its path: a python3 earlier on PATH (pyenv, a venv) is not the system's.
/usr/bin/python3 -m venv --system-site-packages "$work/venv"
vpy="$work/venv/bin/python"
"$vpy" -c 'import sys; print("python", sys.version.split()[0], sys.executable)'

# --- 3. sdists and wheels -------------------------------------------------------------------------
step "sdists (python3 -m build --sdist --no-isolation)"
dist_sdists "$vpy"
step "wheels from the sdists (pip wheel --no-deps --no-index --no-build-isolation)"
dist_wheels "$vpy"

# --- 4. install ----------------------------------------------------------------------------------
step "install (pip install --no-deps --no-index); the declared dependencies met by Debian's packages"
logged install "$vpy" -m pip install --no-deps --no-index "$work"/wheels/*.whl
# Our three distributions' requirements only: pip check would judge every package of the system.
"$vpy" - <<'EOF'
import importlib.metadata as md
import sys

try:
    from packaging.requirements import Requirement
except ImportError:  # python3-packaging comes with python3-build; pip vendors it too
    from pip._vendor.packaging.requirements import Requirement

for dist in ("luaplug", "luaplug-lupa", "luaplug-cffi"):
    for text in md.requires(dist) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's, or another Python's
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            sys.exit(f"debian_build: {dist} requires {req}: not installed")
        if not req.specifier.contains(have, prereleases=True):
            sys.exit(f"debian_build: {dist} requires {req}: {req.name} {have} is installed")
        print(f"  {dist}: {req} <- {req.name} {have}")
EOF
dist_check_imports "$vpy"

# --- 5. the backends and what they link -----------------------------------------------------------
step "luaplug backends"
backends="$("$work/venv/bin/luaplug" backends)"
printf '%s\n' "$backends"
for name in lupa cffi; do
  line="$(sed -n "s/^$name[[:space:]]\{1,\}//p" <<<"$backends")"
  case "$line" in
    available*) ;;
    *) fail "the $name backend is not available on Debian's packages: ${line:-not listed}" ;;
  esac
done
# lupa's extension modules (python3-lupa's) and the cffi backend's: each links the shared system
# libluajit-5.1. The ldd output is captured before it is matched (no early-exiting reader in a pipe).
mapfile -t sos < <("$vpy" -c '
import glob, os, lupa, luaplug_cffi
for mod in (lupa, luaplug_cffi):
    print("\n".join(sorted(glob.glob(os.path.join(os.path.dirname(mod.__file__), "*.so")))))')
lupa_links=""
for so in "${sos[@]}"; do
  [ -n "$so" ] || continue
  linked="$(ldd "$so")"
  lj="$(sed -n 's/^[[:space:]]*\(libluajit-5\.1\.so[^ ]*\) => \([^ ]*\).*/\1 => \2/p' <<<"$linked")"
  echo "$so: ${lj:-no shared LuaJIT}"
  case "$so:$lj" in
    */lupa/*:libluajit-5.1.so*) lupa_links="$lj" ;;
    */luaplug_cffi/*:libluajit-5.1.so*) ;;
    */luaplug_cffi/*) fail "luaplug_cffi's module does not link the shared libluajit-5.1" ;;
  esac
done
[ -n "$lupa_links" ] || fail "no extension module of lupa links the shared libluajit-5.1"

# --- 6. tests against the installed wheels ---------------------------------------------------------
dist_test_trees
step "unit tests from the sdists, against the installed wheels"
LUAPLUG_DIST_DIR="$work" dist_pytest "$vpy" -q "${unit_dirs[@]}" "$@" 2>&1 | tee "$work/logs/unit.log"
for name in lupa cffi; do
  step "conformance kit and integration suite on $name, against the installed wheels"
  dist_pytest "$vpy" -q --pyargs luaplug.testing "$work/suite/integration" --backend "$name" "$@" 2>&1 | tee "$work/logs/integration-$name.log"
done

step "done in $((SECONDS - started))s on $release: $version, lupa on $lupa_links"
for run in unit integration-lupa integration-cffi; do
  printf '  %-18s %s\n' "$run" "$(tail -n 1 "$work/logs/$run.log")"
done
dist_sizes
