"""A shared sweep survives its database: a PostgreSQL of its own (restarted, stopped, its connections
ended) under real `fcn-sweep worker` processes (SIGSTOP'd, SIGKILL'd), tiny runs. What must hold
afterwards: every slot done exactly once, the store's epochs equal each run directory's, no
store error recorded as a config's crash, a late worker's writes refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fcn_sweep.sweep import worker
from fcn_sweep.sweep.store import Store

from . import processes
from .conftest import needs_data
from .pg_server import PG_BINS, Server
from .processes import wait_until

SWEEP = """\
name: faults
method: grid
metric: {{name: val/acc, goal: maximize}}
parameters:
  epochs: {{value: {epochs}}}
  subset: {{value: 1024}}
  batch_size: {{value: 64}}
  hidden: {{value: [64, 32]}}
  lr: {{values: {lrs}}}
"""


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL of this module's own, so restarting or stopping it disturbs no other test."""
    if not PG_BINS:
        pytest.skip("PostgreSQL is not installed (Debian: postgresql)")
    srv = Server("fcn-sweep-faults-")
    try:
        yield srv
    finally:
        srv.close()


def new_sweep(srv: Server, tmp_path: Path, slots: int, epochs: int) -> str:
    """A fresh database on the server holding a planned grid of `slots` tiny runs; its URL."""
    from fcn_sweep.sweep.runner import SweepOptions, run_sweep

    name = f"f{time.monotonic_ns()}"
    admin = create_engine(srv.full.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = srv.full.rsplit("/", 1)[0] + "/" + name
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(SWEEP.format(epochs=epochs, lrs=[round(0.001 * (k + 1), 4) for k in range(slots)]))
    store, _ = run_sweep(str(sweep_file), str(tmp_path / "made"), None, SweepOptions(workers=0, store=url))
    store.close()
    return url


def start_worker(url: str, out: Path, name: str, **env: str) -> subprocess.Popen:
    """`fcn-sweep worker URL` as a user starts it: the password from PGPASSWORD, output to files."""
    parsed = make_url(url)
    bare = parsed.set(password=None).render_as_string(hide_password=False)
    environment = {
        **os.environ, "PGPASSWORD": parsed.password, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
        "FCN_SWEEP_STALE_S": "4", **env,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "fcn_sweep", "worker", bare, "--out", str(out), "--quiet", "--wandb", "disabled"],
        stdout=open(out / f"{name}.out", "w"),
        stderr=open(out / f"{name}.err", "w"),
        env=environment,
        start_new_session=True,  # its own process group: a signal to it reaches the worker processes it runs
    )


def finish(procs: list[subprocess.Popen], timeout: float = 240.0) -> list[int]:
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail("a worker did not finish")
    return codes


def assert_every_slot_done_once(url: str) -> Store:
    """Every slot has exactly one attempt done for good, finished; no store error became a config's
    crash; and each finished attempt's epochs in the store are its run directory's metrics.jsonl."""
    store = Store(url)
    runs = store.runs()
    done = store.done_runs()
    slots = {r.slot for r in runs}
    assert Counter(r.slot for r in done) == Counter(slots), [(r.slot, r.status, r.stop_reason) for r in runs]
    assert {r.status for r in done} == {"finished"}
    assert not [r for r in runs if r.status == "crashed" and r.stop_reason == "error"], "a blip became a crash"
    assert store.counts()["pending"] == store.counts()["running"] == 0
    histories = store.histories(r.id for r in done)
    for r in done:
        on_disk = [json.loads(line) for line in (Path(r.run_dir) / "metrics.jsonl").read_text().splitlines()]
        assert histories[r.id] == on_disk, r.id
        assert len(on_disk) == r.config.epochs
    return store


def mid_run(url: str, at_least: int = 1):
    store = Store(url)
    try:
        return [r for r in store.runs(["running"]) if r.epoch >= at_least]
    finally:
        store.close()


def freeze_mid_run(url: str, proc: subprocess.Popen):
    """The worker started as `proc` (its whole process tree) frozen while a run of it is in the store
    as running at epoch >= 1: (those runs, the pids); None, and the worker continued, otherwise."""
    if not mid_run(url):
        return None
    pids = processes.freeze(processes.group(proc.pid))
    if running := mid_run(url):  # read again once frozen: what the test relies on from here
        return running, pids
    processes.thaw(pids)
    return None


@needs_data
def test_a_server_restart_mid_sweep_loses_no_slot_and_trains_none_twice(server, tmp_path):
    url = new_sweep(server, tmp_path, slots=4, epochs=6)
    procs = [start_worker(url, tmp_path / "out", f"w{i}", FCN_SWEEP_HOST=f"host{i}") for i in range(2)]
    wait_until(lambda: mid_run(url), "a run mid-way")
    server.pg_ctl("-m", "fast", "restart")
    assert finish(procs) == [0, 0], [(tmp_path / "out" / f"w{i}.err").read_text() for i in range(2)]
    assert_every_slot_done_once(url).close()
    errors = "".join((tmp_path / "out" / f"w{i}.err").read_text() for i in range(2))
    assert "Traceback" not in errors, errors


@needs_data
def test_every_connection_terminated_mid_run_loses_no_slot_and_trains_none_twice(server, tmp_path):
    url = new_sweep(server, tmp_path, slots=4, epochs=10)
    procs = [start_worker(url, tmp_path / "out", f"w{i}", FCN_SWEEP_HOST=f"host{i}") for i in range(2)]
    workers = [pid for p in procs for pid in processes.group(p.pid)]
    seen: set[tuple[str, int]] = set()

    def cut() -> list | None:
        """With the workers frozen (nothing changes between the look and the cut): a run in flight at
        an epoch not seen before, and connections of theirs to cut. None, and they go on, if either
        is missing (a worker that has not written since the last cut may not have reconnected)."""
        with processes.frozen(workers):
            fresh = [r for r in mid_run(url) if (r.id, r.epoch) not in seen]
            if not fresh or server.terminate_connections() == 0:
                return None
        seen.update((r.id, r.epoch) for r in fresh)
        return fresh

    for _ in range(3):
        wait_until(cut, "a run in flight and its worker connected")
    assert finish(procs) == [0, 0], [(tmp_path / "out" / f"w{i}.err").read_text() for i in range(2)]
    assert_every_slot_done_once(url).close()
    errors = "".join((tmp_path / "out" / f"w{i}.err").read_text() for i in range(2))
    assert "Traceback" not in errors, errors


@needs_data
def test_a_worker_frozen_past_the_stale_limit_finds_its_run_taken_and_writes_nothing(server, tmp_path):
    """SIGSTOP a worker mid-run; another worker re-queues the run and takes it; SIGCONT: the late
    worker's writes are refused, it says so in one line, and the slot has one final attempt."""
    url = new_sweep(server, tmp_path, slots=1, epochs=10)
    late = start_worker(url, tmp_path / "out", "late")
    # The whole process tree stopped, as a node that froze.
    (frozen,), _ = wait_until(lambda: freeze_mid_run(url, late), "the run mid-way")
    store = Store(url)
    other = start_worker(url, tmp_path / "out", "other")
    wait_until(lambda: [r for r in store.runs(["running"]) if r.id != frozen.id and r.epoch >= 1], "the re-run")
    reaped = store.get_run(frozen.id)
    assert (reaped.status, reaped.stop_reason) == ("crashed", "lost")
    os.killpg(late.pid, signal.SIGCONT)
    assert finish([late, other]) == [0, 0]
    err = (tmp_path / "out" / "late.err").read_text()
    said = [line for line in err.splitlines() if frozen.id in line]
    assert len(said) == 1 and "writing nothing more" in said[0], err
    after = store.get_run(frozen.id)
    assert (after.status, after.epoch, after.summary) == (reaped.status, reaped.epoch, reaped.summary)
    assert len(store.histories([frozen.id])[frozen.id]) == reaped.epoch  # no epoch of the late worker landed
    store.close()
    assert_every_slot_done_once(url).close()


@needs_data
def test_a_store_down_past_the_window_sends_the_worker_away_and_a_new_one_finishes(server, tmp_path):
    url = new_sweep(server, tmp_path, slots=2, epochs=30)
    first = start_worker(url, tmp_path / "out", "first", FCN_SWEEP_STORE_RETRY_S="3")
    _, pids = wait_until(lambda: freeze_mid_run(url, first), "a run mid-way")
    server.pg_ctl("-m", "fast", "stop")  # while the run is in flight: frozen, it cannot finish first
    processes.thaw(pids)
    try:
        code = first.wait(timeout=processes.HANG_S)
    finally:
        server.start()
    err = (tmp_path / "out" / "first.err").read_text()
    lines = [line for line in err.splitlines() if "exiting" in line]
    assert code == worker.EXIT_STORE and len(lines) == 1 and "unreachable" in lines[0], err
    assert "Traceback" not in err and server.password not in err
    store = Store(url)
    worker.reap(store)  # the worker is gone: its runs are pending again
    assert store.counts()["running"] == 0 and store.counts()["pending"] == 2
    assert not store.runs(["finished"]) and not [r for r in store.runs(["crashed"]) if r.stop_reason == "error"]
    store.close()
    again = start_worker(url, tmp_path / "out", "again")
    assert finish([again]) == [0]
    assert_every_slot_done_once(url).close()
