#!/usr/bin/env bash
# One entry point for a fresh machine: installs what luaplug needs, then
#   scripts/dev.sh demo   -> the demo host on every available backend
#   scripts/dev.sh test   -> every test (lint, types, the Python matrix, the kit and integration per backend, the
#                            kit on the example backend of docs/, the reference,
#                            the offline and Debian-packages builds, docs, a quick benchmark)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"; shift || true

# System packages: LuaJIT headers/library and a compiler for the cffi backend.
need=()
for pkg in libluajit-5.1-dev pkg-config gcc python3-venv python3-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})) && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "note: missing system packages (${need[*]}); run as root or install them" >&2
  fi
fi

py="${PYTHON:-python3}"
venv=".venv"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q "tox>=4" >/dev/null

# The Python matrix (tox envs py310..py313): each interpreter from PATH or from pyenv's versions
# directory, linked under .tox/pythons so tox finds it even where a pyenv shim would refuse to run it.
# A missing interpreter is reported in one line and its env left out.
matrix_envs() {
  local links=".tox/pythons" v cand exe envs=()
  mkdir -p "$links"
  for v in 3.10 3.11 3.12 3.13; do
    exe=""
    for cand in "$(command -v "python$v" 2>/dev/null || true)" "$HOME"/.pyenv/versions/"$v".*/bin/"python$v"; do
      [ -n "$cand" ] && [ -x "$cand" ] || continue
      exe="$("$cand" -c 'import sys; print(sys.executable)' 2>/dev/null)" && [ -n "$exe" ] && break
      exe=""
    done
    if [ -n "$exe" ]; then
      ln -sfn "$exe" "$links/python$v"
      envs+=("py${v/./}")
    else
      rm -f "$links/python$v"
      echo "note: no python$v here (neither on PATH nor under ~/.pyenv/versions): py${v/./} skipped" >&2
    fi
  done
  local IFS=,
  echo "${envs[*]}"
}

case "$what" in
  demo) exec "$venv/bin/tox" -q -e demo -- "$@" ;;
  test)
    matrix="$(matrix_envs)"
    # Two lanes for two cores. The distribution builds (tox -e packaging, then the Debian-packages
    # build) work on copies of the sources and install nothing into the tree; they run beside the
    # envs that install the tree in place (editable, C extensions built into src/), one at a time.
    # The fuzz tests run at full strength once (py311; tox.ini) and shorter in the other runs.
    lane_log="$(mktemp)"
    ("$venv/bin/tox" -q -e packaging -- "$@" && LUAPLUG_FUZZ_EXAMPLES=25 bash scripts/debian_build.sh "$@") \
      >"$lane_log" 2>&1 &
    lane=$!
    rc=0
    PATH="$PWD/.tox/pythons:$PATH" "$venv/bin/tox" -q \
      -e "lint,type,${matrix:+$matrix,}integration-lupa,integration-cffi,kit-example,integration-python-path,reference,docs" -- "$@" || rc=$?
    lane_rc=0
    wait "$lane" || lane_rc=$?
    printf '\n== the distribution builds: tox -e packaging, scripts/debian_build.sh (exit %s)\n' "$lane_rc"
    cat "$lane_log"
    rm -f "$lane_log"
    [ "$rc" = 0 ] || { echo "dev.sh: the tox envs failed (exit $rc)" >&2; exit 1; }
    [ "$lane_rc" = 0 ] || { echo "dev.sh: the distribution builds failed (exit $lane_rc)" >&2; exit 1; }
    # Benchmarks never fail the tests; a quick run keeps the runner from rotting.
    exec "$venv/bin/tox" -q -e bench -- --quick ;;
  *) echo "usage: scripts/dev.sh demo|test" >&2; exit 2 ;;
esac
