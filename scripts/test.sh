#!/usr/bin/env bash
# The test command: set up (scripts/setup.sh), lint, run the suite. Extra arguments go to pytest.
# Slow tests (minutes each) are skipped; run them with: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The oldest wandb pyproject.toml admits, for tests/test_wandb_oldest.py (a folder of its own under .venv).
scripts/wandb_oldest.sh
# For tests only: SLURM (below), headless Chromium (the report's browser test loads report.html in it) and
# PostgreSQL's server binaries (the store tests start a throwaway server of their own and stop it; nothing
# runs as a service).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v slurmctld >/dev/null || missing+=(slurm-wlm munge)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    scripts/apt_install.sh "${missing[@]}"
    # Debian's package starts a cluster as a service; the tests need only the binaries.
    if command -v pg_ctlcluster >/dev/null; then
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        for conf in /etc/postgresql/*/main; do
            [ -d "$conf" ] || continue
            version=$(basename "$(dirname "$conf")")
            $sudo pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
        done
    fi
fi

# A one-node SLURM cluster (Debian's slurm-wlm + munge), for the tests marked `slurm`; stopped again on exit.
# Where it cannot start (not root, a real cluster's slurm.conf), those tests skip.
if command -v slurmctld >/dev/null && [ "$(id -u)" -eq 0 ] && scripts/slurm_local.sh; then
    trap 'scripts/slurm_local.sh --stop' EXIT
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
