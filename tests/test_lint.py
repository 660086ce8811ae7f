"""Real linters on the files that build and check the image: hadolint (Dockerfile), actionlint (the
workflows, with shellcheck on their `run:` scripts), shellcheck (scripts/*.sh, .ci/run). Their
binaries come inside PyPI wheels (the dev extras); a test skips only when its tool is not installed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

# The interpreter's own bin/ first: a venv's tools are found without activating the venv.
PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def tool(name: str) -> str:
    found = shutil.which(name, path=PATH)
    if found is None:
        pytest.skip(f"{name} is not installed; pip install -e '.[dev]'")
    return found


def lint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": PATH})


def test_hadolint_passes_the_dockerfile():
    proc = lint(tool("hadolint"), "--no-color", "Dockerfile")
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_actionlint_passes_the_workflows():
    tool("shellcheck")  # without it on PATH, actionlint silently skips the run: scripts
    proc = lint(tool("actionlint"), "-no-color")
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_shellcheck_passes_the_scripts():
    scripts = sorted(str(p.relative_to(REPO)) for p in (REPO / "scripts").glob("*.sh"))
    assert "scripts/docker_smoke.sh" in scripts
    proc = lint(tool("shellcheck"), *scripts, ".ci/run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
