#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine: the FashionMNIST package, a virtualenv in .venv, this package.
# Idempotent: a second run only checks. Usage: scripts/setup.sh   (then use .venv/bin/fcn-sweep)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
    scripts/apt_install.sh dataset-fashion-mnist
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
# setuptools' build backend warns about every editable install; the warning is for setuptools' own users.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | { grep -v "^WARNING: Location" || true; }
.venv/bin/python -c "import fcn_sweep, torch; print(f'fcn-sweep ready: torch {torch.__version__}')"
