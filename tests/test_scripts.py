"""The scripts and the worker as the guides run them: as root, without an active venv, `--count`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from fcn_sweep.sweep.runner import SweepOptions, run_sweep
from fcn_sweep.sweep.store import Store

from .conftest import REPO, cli, needs_data
from .pg_server import PG_BINS, as_server_user
from .test_local_sweep import sweep_file


@pytest.mark.skipif(os.geteuid() != 0, reason="what root meets")
def test_postgres_local_as_root_refuses_in_one_line_before_creating_anything(tmp_path):
    target = tmp_path / "pg"
    proc = subprocess.run(
        [REPO / "scripts" / "postgres_local.sh", target, "--port", "5544", "--listen", "*"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "runuser -u postgres" in lines[0], proc.stderr
    assert not target.exists()


@pytest.mark.skipif(not PG_BINS, reason="PostgreSQL is not installed (Debian: postgresql)")
def test_postgres_local_stop_stops_the_server_it_started():
    """The documented stop (`--stop`), as the user who started it."""
    root = Path(tempfile.mkdtemp(prefix="fcn-sweep-pg-stop-"))
    root.chmod(0o777)
    script = str(REPO / "scripts" / "postgres_local.sh")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    try:
        start = subprocess.run(as_server_user([script, str(root / "pg"), "--port", port]), capture_output=True,
                               text=True, timeout=120)  # fmt: skip
        assert start.returncode == 0, start.stderr
        pid_file = root / "pg" / "data" / "postmaster.pid"
        assert pid_file.exists()
        stop = subprocess.run(as_server_user([script, str(root / "pg"), "--stop"]), capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stderr
        assert not pid_file.exists()
    finally:
        subprocess.run(as_server_user([script, str(root / "pg"), "--stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="no .venv (scripts/setup.sh makes it)")
def test_fault_run_starts_bare_without_an_active_venv():
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    proc = subprocess.run([REPO / "scripts" / "fault_run.py", "--help"], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "usage: fault_run.py" in proc.stdout, proc.stderr


@needs_data
def test_worker_count_runs_that_many_runs_per_worker_and_leaves(tmp_path):
    path = sweep_file(tmp_path, parameters={"epochs": {"value": 1}, "subset": {"value": 512},
                                            "lr": {"values": [0.01, 0.02, 0.03, 0.04, 0.05]}})  # fmt: skip
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    run_sweep(str(path), str(tmp_path / "made"), None, SweepOptions(workers=0, store=url))[0].close()
    # A worker's heartbeat that stalls past the stale limit on a loaded machine has its run re-queued
    # and trained again by a restarted worker: a real recovery, but not what this test counts.
    proc = cli("worker", url, "--count", "1", "--workers", "2", "--out", str(tmp_path / "w"), "--quiet",
               "--wandb", "disabled", timeout=240, env={"FCN_SWEEP_STALE_S": "600"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    counts = Store(url).counts()
    assert (counts["finished"], counts["pending"]) == (2, 3), (counts, proc.stderr)
    bad = cli("worker", url, "--count", "0")
    assert bad.returncode == 2 and "--count must be a positive integer" in bad.stderr


def test_gpu_check_runs_only_the_steps_asked_for_and_refuses_a_step_it_does_not_have(tmp_path):
    """`--only` splits the check over device calls of under 10 minutes each (docs/gpu.md); on the
    CPU (`--cpu`) the step runs small."""
    script = str(REPO / "scripts" / "gpu_check.sh")
    proc = subprocess.run([script, "--only", "profile,smoke"], capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--only smoke: no such step" in lines[0] and "sweep-smoke" in lines[0]
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    proc = subprocess.run([script, "--cpu", "--only", "sweep-smoke"], capture_output=True, text=True, timeout=600,
                          env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line[:1].isalpha() and "  " in line]
    table = {row[0]: row[1] for row in rows}
    assert table["sweep-smoke"] == "PASS", proc.stdout
    assert {table[s] for s in ("cuda-tests", "bench", "profile", "grid-dry-run", "docker-repro")} == {"SKIP"}
    runs = list((tmp_path / "out" / "sweep-smoke" / "runs").iterdir())
    assert runs and all((run / "summary.json").is_file() for run in runs)
