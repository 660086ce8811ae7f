#!/usr/bin/env bash
# The oldest wandb pyproject.toml admits (its "wandb>=X" floor) in .venv/wandb-oldest, beside the venv's
# own wandb: tests/test_wandb_oldest.py puts that folder first on PYTHONPATH to run the packed W&B agent
# on it. Idempotent: once it is there, nothing is downloaded. .venv/ is git-ignored.
# Usage: scripts/wandb_oldest.sh   (env: PYTHON, the tested interpreter; default .venv/bin/python)
#
# With wandb's own dependencies, as pip resolves them, not --no-deps: wandb 0.19.10 refuses protobuf 7
# (its wandb.proto imports only 3 to 6), which the newer wandb in the venv brings, and it imports
# packages a newer wandb dropped (docker-pycreds on `import wandb`; gitpython, sentry-sdk, psutil,
# setproctitle). Those resolved by pip are what a user pinning that wandb gets; packages the venv has
# too are the same releases (pydantic, requests, ...), and everything else (torch, sweeps) is the venv's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 0 ] || { echo "usage: $0   (env: PYTHON)" >&2; exit 2; }
PYTHON=${PYTHON:-.venv/bin/python}
floor=$(sed -n 's/^ *"wandb>=\([0-9][0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$floor" ] || { echo "wandb_oldest: error: no \"wandb>=X\" dependency in pyproject.toml" >&2; exit 2; }
target=.venv/wandb-oldest
[ -d "$target/wandb-$floor.dist-info" ] && exit 0
# Into a fresh folder first, so an interrupted install never looks complete.
rm -rf "$target" "$target.partial"
"$PYTHON" -m pip install -q --disable-pip-version-check --target "$target.partial" "wandb==$floor" 2>&1 |
    { grep -v "^WARNING: Location" || true; }
mv "$target.partial" "$target"
echo "wandb $floor (pyproject.toml's floor) in $target" >&2
