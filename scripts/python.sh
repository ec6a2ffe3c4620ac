#!/usr/bin/env bash
# Prints the Python interpreter `make` uses: $PYTHON when set; else python3, unless that is a
# system interpreter that refuses pip installs (PEP 668: Debian 12, Ubuntu 24.04), in which
# case a project venv, .venv (made here once, with the system's packages visible), so that
# nothing is ever installed into the system's Python. Messages go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; exit 0; fi
if [ -x .venv/bin/python ]; then echo "$PWD/.venv/bin/python"; exit 0; fi
managed=$(python3 -c 'import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
if [ "$managed" = 0 ]; then echo python3; exit 0; fi
echo "setup: python3 is managed by the system (PEP 668); making a project venv in .venv" >&2
if ! python3 -c 'import ensurepip' 2>/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv python3-dev >/dev/null
fi
python3 -m venv --system-site-packages .venv >&2
echo "$PWD/.venv/bin/python"
