#!/usr/bin/env bash
# The test command: set up (scripts/setup.sh), lint, run the suite. Extra arguments go to pytest.
# Slow tests (minutes each) are skipped; run them with: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
