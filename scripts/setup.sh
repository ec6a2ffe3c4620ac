#!/usr/bin/env bash
# Installs what `make demo` and `make test` need and is missing. Idempotent, quiet when
# nothing is missing. Debian packages via apt-get, Python packages via pip.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(scripts/python.sh)}
# redis-server and libhiredis-dev: the redis:// transport is built with hiredis, and its tests
# start real redis-server processes on loopback ports.
APT_PACKAGES=(gcc g++ make pkg-config cmake openssl libzstd-dev libturbojpeg0-dev libhiredis-dev redis-server redis-tools)
PY_MODULES="numpy pytest xdist hypothesis sklearn scipy pandas pyarrow ml_dtypes"
PY_REQUIREMENTS=python/requirements.txt
if [ "${1:-}" = "--demo" ]; then
    # Only what the shared-memory demo needs: a C compiler (the Python extension), numpy and
    # scikit-learn (its bundled digits). No Redis, no compression libraries, no test tools.
    APT_PACKAGES=(gcc make)
    PY_MODULES="numpy sklearn"
    PY_REQUIREMENTS=python/requirements-demo.txt
elif [ "${1:-}" = "--bench" ]; then
    APT_PACKAGES=(redis-server libhiredis-dev libzmq3-dev)
    PY_MODULES="zmq redis hiredis iceoryx2 matplotlib PIL pyarrow pandas"
    PY_REQUIREMENTS=bench/requirements.txt
fi

# The Python client's compiled call (python/ferry/_fastcall.c) needs Python.h: Debian's own
# python3 ships it in python3-dev (pyenv and python.org builds include it).
if [ "${1:-}" != "--bench" ] && ! "$PY" -c "import os, sysconfig, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')) else 1)" 2>/dev/null; then
    [ "$("$PY" -c 'import sys; print(sys.base_prefix)')" = /usr ] && APT_PACKAGES+=(python3-dev)
fi

need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "setup: the Swift toolchain (6.x) is required and not on PATH" >&2
    exit 1
fi

if ! "$PY" -c "import importlib.util, sys; sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)" $PY_MODULES 2>/dev/null
then
    echo "setup: installing Python packages from $PY_REQUIREMENTS"
    "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$PY_REQUIREMENTS"
fi
