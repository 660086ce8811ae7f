"""Shared fixtures: one shrunken config for fast end-to-end runs, and the real FashionMNIST files."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fcn_sweep import data as data_mod
from fcn_sweep.config import RunConfig

from .pg_server import PG_BINS, Server

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
def one_thread():
    """torch on one CPU thread for the test. With two, MKL may split a batched product of K=1 and of
    K=3 members differently and sum in another order; under batch norm the weights of a pixel that
    is constant over a batch get a gradient of pure rounding noise, which Adam and RMSprop scale up
    to steps of about lr, so a pack and its runs alone then part beyond float tolerance, more or
    less often with the machine's load. One thread sums every member's products in one order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def wandb_in_this_process():
    """For a test that uses W&B's client in the pytest process: the W&B service it starts is stopped
    afterwards, and the address wandb put in os.environ for it (WANDB_SERVICE) goes too, so that a
    later test's `fcn-sweep train` starts a service of its own instead of logging to one that is gone."""
    yield
    from fcn_sweep import tracking

    tracking.teardown_wandb()
    os.environ.pop("WANDB_SERVICE", None)


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


# --- a throwaway PostgreSQL server for the session, and a store of either backend for a test -------
@pytest.fixture(scope="session")
def postgres_server():
    """The URL (password included) of a throwaway PostgreSQL server for the session (pg_server.Server)."""
    if not PG_BINS:
        pytest.skip("PostgreSQL is not installed (Debian: postgresql)")
    server = Server()
    try:
        yield server.full
    finally:
        server.close()


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server: each test's store starts empty."""
    import secrets

    from sqlalchemy import create_engine, text

    name = "t_" + secrets.token_hex(6)
    admin = create_engine(server_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A store URL of each backend, empty: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return fresh_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def disk_full_on_epoch_2(monkeypatch):
    """A run directory's metrics.jsonl that cannot take epoch 2: the disk filled mid-run (ENOSPC)."""
    from fcn_sweep.tracking import RunDirTracker

    write = RunDirTracker.log_epoch

    def full_on_epoch_2(self, metrics):
        if metrics["epoch"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "metrics.jsonl"))
        write(self, metrics)

    monkeypatch.setattr(RunDirTracker, "log_epoch", full_on_epoch_2)
