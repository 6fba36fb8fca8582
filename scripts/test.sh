#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs it.
#   bash scripts/test.sh [pytest args...]
# Installs: redis-server (Debian, when missing), the package with its dev extras (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  echo "installing ${need_apt[*]} (Debian packages the tests talk to)"
  "${apt_get[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
exec python3 -m pytest "$@"
