#!/usr/bin/env bash
# The test command: set up (scripts/setup.sh), lint, run the suite. Extra arguments go to pytest.
# Slow tests (minutes each) are skipped; run them with: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Headless Chromium, for tests only: the report's browser test loads report.html in it (skipped only where it is absent).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

# A one-node SLURM cluster (Debian's slurm-wlm + munge), for the tests marked `slurm`; stopped again on exit.
if ! command -v slurmctld >/dev/null && command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq slurm-wlm munge >/dev/null
fi
# Where it cannot start (not root, a real cluster's slurm.conf), those tests skip.
if command -v slurmctld >/dev/null && [ "$(id -u)" -eq 0 ] && scripts/slurm_local.sh; then
    trap 'scripts/slurm_local.sh --stop' EXIT
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
