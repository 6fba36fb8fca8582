#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs it.
#   bash scripts/test.sh [pytest args...]
# Installs: redis-server (and python3-venv when a venv must be made and cannot be) from Debian;
# the package with its dev extras from PyPI, into a virtual environment (Debian's Python refuses
# system-wide pip installs, PEP 668): the active venv when run inside one, else .venv here
# (created when missing).
#   MPSFLOW_VENV=DIR           use (or create) the venv DIR instead
#   MPSFLOW_CONSTRAINTS=FILE   pip constraints instead of constraints/dev.txt (CI: minimums.txt)
set -euo pipefail
cd "$(dirname "$0")/.."

in_venv() { python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; }

venv="${MPSFLOW_VENV:-}"
if [ -z "$venv" ] && ! in_venv; then venv=.venv; fi

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v zip >/dev/null 2>&1 || need_apt+=(zip)  # the SCF example's deployment build
if [ -n "$venv" ] && [ ! -x "$venv/bin/python" ] \
  && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  echo "installing ${need_apt[*]} (Debian packages the tests need)"
  "${apt_get[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq "${need_apt[@]}" >/dev/null
fi

python=python3
if [ -n "$venv" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating the virtual environment $venv"
    python3 -m venv "$venv"
  fi
  python="$venv/bin/python"
fi

"$python" -m pip install -q --disable-pip-version-check \
  -c "${MPSFLOW_CONSTRAINTS:-constraints/dev.txt}" -e '.[dev]'
exec "$python" -m pytest "$@"
