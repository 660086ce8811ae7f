"""Shared fixtures: one shrunken config for fast end-to-end runs, and the real FashionMNIST files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fcn_sweep import data as data_mod
from fcn_sweep.config import RunConfig

REPO = Path(__file__).resolve().parents[1]

# Small enough that one epoch takes well under a second on two CPU cores, big enough to learn.
TINY = RunConfig(epochs=2, hidden=(64, 32), subset=1024, batch_size=64)


def real_data_available() -> bool:
    try:
        data_mod.locate(download=False)
    except data_mod.DataError:
        return False
    return True


needs_data = pytest.mark.skipif(not real_data_available(), reason="FashionMNIST files not on this machine")


@pytest.fixture
def tiny() -> RunConfig:
    return TINY


@pytest.fixture(scope="session")
def fashion() -> data_mod.FashionMNIST:
    if not real_data_available():
        pytest.skip("FashionMNIST files not on this machine")
    return data_mod.load("cpu", subset=TINY.subset)


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run `fcn-sweep ARGS` as a user would: a fresh process, its own exit code and streams."""
    return subprocess.run(
        [sys.executable, "-m", "fcn_sweep", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
