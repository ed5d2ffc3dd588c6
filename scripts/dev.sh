#!/usr/bin/env bash
# One entry point for a fresh machine: installs what luaplug needs, then
#   scripts/dev.sh demo   -> the demo host on every available backend
#   scripts/dev.sh test   -> every test (lint, types, unit, integration per backend)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"; shift || true

# System packages: LuaJIT headers/library and a compiler for the cffi backend.
need=()
for pkg in libluajit-5.1-dev pkg-config gcc python3-venv; do
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

case "$what" in
  demo) exec "$venv/bin/tox" -q -e demo -- "$@" ;;
  test)
    "$venv/bin/tox" -q -e lint,type,unit,integration-lupa,integration-cffi,integration-all,reference,packaging,docs -- "$@"
    # Built and tested with nothing but Debian's packages (one line and a skip elsewhere).
    bash scripts/debian_build.sh "$@"
    # Benchmarks never fail the tests; a quick run keeps the runner from rotting.
    exec "$venv/bin/tox" -q -e bench -- --quick ;;
  *) echo "usage: scripts/dev.sh demo|test" >&2; exit 2 ;;
esac
