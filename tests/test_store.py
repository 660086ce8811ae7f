"""The store on both backends: what several workers on several hosts rely on, and bad store input."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from fcn_sweep.config import RunConfig
from fcn_sweep.data import load
from fcn_sweep.sweep import worker
from fcn_sweep.sweep.claim import train_claim
from fcn_sweep.sweep.store import Store, Taken

from .conftest import REPO, cli, fresh_database, needs_data
from .processes import wait_until
from .proposer import top_up


def new_store(url: str, sweep: dict | None = None, name: str = "t") -> Store:
    store = Store(url)
    store.create_sweep(name, sweep or {"method": "grid"})
    return store


def test_several_workers_proposing_at_once_number_every_proposal_once(store_url):
    sweep = yaml.safe_load((REPO / "sweeps" / "bayes.yaml").read_text())
    sweep["run_cap"] = 12
    new_store(store_url, sweep).close()
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=top_up, args=(store_url, start, 8, 2)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    store = Store(store_url)
    runs = store.runs()
    proposals = Counter(r.proposal for r in runs)
    assert sorted(proposals) == list(range(len(proposals))), "a proposal number was skipped"
    assert set(proposals.values()) == {1}, "two workers gave out one proposal number"
    assert len(runs) == 12 and store.info.closed  # the cap is reached, and no proposal can follow
    assert len({r.slot for r in runs}) == 12


def claim_as(store: Store, name: str, host: str, pid: int) -> str:
    (run,) = store.claim_many(f"{name}:{pid}@{host}", 1, host)
    return run.id


def test_a_run_is_reaped_by_its_silence_on_the_database_clock_and_by_pid_only_on_its_host(store_url, monkeypatch):
    store = new_store(store_url)
    store.add((f"r{i}", i, i, 0, RunConfig(), {}) for i in range(4))
    dead = 2**22 + 12345  # no process has this pid here
    here = claim_as(store, "w0", socket.gethostname(), dead)
    elsewhere = claim_as(store, "w1", "node-b", dead)  # the same pid on another host says nothing here
    alive = claim_as(store, "w2", socket.gethostname(), os.getpid())
    # This host's clock ten minutes fast: a fresh heartbeat must not look stale, nor others' old.
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + 600)
    store.heartbeat([elsewhere, alive])
    assert worker.reap(store) == [here]
    monkeypatch.setattr(time, "time", lambda real=time.time: real() - 600)  # and ten minutes slow
    assert worker.reap(store) == []
    # Silent past the limit on the database's clock (waited for on that clock): reaped, whichever host
    # it was on; `alive`, which beats just before the reap, is not, unless the limit passed between two
    # statements (a hang).
    stale_s, last_beat = 3.0, store.get_run(elsewhere).heartbeat
    wait_until(lambda: store.now() > last_beat + stale_s, "the database's clock to pass the limit")
    store.heartbeat([alive])
    assert store.reap(stale_s, worker.gone, lambda: f"new{time.monotonic_ns()}") == [elsewhere]
    statuses = {r.id: (r.status, r.stop_reason) for r in store.runs()}
    assert statuses[here] == statuses[elsewhere] == ("crashed", "lost")
    assert statuses[alive] == ("running", None)
    assert store.counts()["pending"] == 1 + 2  # r3, and a fresh attempt for each lost slot


def test_many_sweeps_share_a_database_and_each_is_named(store_url):
    a = new_store(store_url, name="a")
    a.add([("a0", 0, 0, 0, RunConfig(), {})])
    b = new_store(store_url, name="b")
    b.add([("b0", 0, 0, 0, RunConfig(), {}), ("b1", 1, 1, 0, RunConfig(), {})])
    assert Store(store_url, "a").counts()["pending"] == 1 and Store(store_url, "b").counts()["pending"] == 2
    assert [r.id for r in Store(store_url, "b").claim_many("w", 8)] == ["b0", "b1"]  # one shape: one pack
    assert Store(store_url, "a").counts()["running"] == 0


@pytest.fixture
def pg_url(postgres_server) -> str:
    return fresh_database(postgres_server)


def test_a_resume_with_other_options_is_refused_naming_the_difference(tmp_path, pg_url):
    sweep = tmp_path / "s.yaml"
    sweep.write_text((REPO / "sweeps" / "smoke.yaml").read_text())
    made = cli("sweep", str(sweep), "--store", pg_url, "--workers", "0", "--repeats", "2", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    again = cli("sweep", str(sweep), "--store", pg_url, "--workers", "0", "--repeats", "3", "--seed", "1", cwd=tmp_path)
    assert again.returncode == 2
    assert "--repeats 3 (stored: 2)" in again.stderr and "--seed 1 (stored: 0)" in again.stderr
    same = cli("sweep", str(sweep), "--store", pg_url, "--workers", "0", cwd=tmp_path)  # as stored: resumes
    assert same.returncode == 0, same.stderr
    changed = tmp_path / "changed.yaml"
    changed.write_text(sweep.read_text().replace("value: 3", "value: 4"))
    other = cli("sweep", str(changed), "--store", pg_url, "--name", "fcn-smoke", "--workers", "0", cwd=tmp_path)
    assert other.returncode == 2 and "sweep 'fcn-smoke' created from another file" in other.stderr
    assert ": stored 3, file 4" in other.stderr  # what changed


def _bad_cases(pg: str) -> list[tuple[list[str], str]]:
    user_pw, host_db = pg.split("://", 1)[1].split("@", 1)
    user = user_pw.split(":")[0]
    refused = "postgresql://fcn:secret-pw@127.0.0.1:1/db"
    wrong = f"postgresql://{user}:secret-pw@{host_db}"
    return [
        (["status", "--store", refused], "cannot open the store postgresql://fcn:***@127.0.0.1:1/db"),
        (["worker", wrong], "password authentication failed"),
        (["report", "--store", "mysql://fcn:secret-pw@127.0.0.1/db"], "unknown store scheme 'mysql'"),
        (["status", "--store", f"postgresql://{user_pw}@{host_db}", "--sweep", "nope"], "holds no sweep named 'nope'"),
        (["sweep", str(REPO / "sweeps" / "smoke.yaml"), "--store", wrong, "--out", "out"], "password authentication"),
    ]


@pytest.mark.parametrize(
    "case", range(5), ids=["refused", "wrong-password", "unknown-scheme", "unknown-sweep", "sweep"]
)
def test_bad_stores_exit_2_on_one_redacted_line_and_write_nothing(tmp_path, pg_url, case):
    args, says = _bad_cases(pg_url)[case]
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert "secret-pw" not in proc.stderr + proc.stdout
    pw = pg_url.split("://", 1)[1].split("@")[0].split(":")[1]
    assert pw not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_password_of_a_store_url_is_shown_nowhere(tmp_path, pg_url):
    password = pg_url.split("://", 1)[1].split("@")[0].split(":")[1]
    sweep = tmp_path / "s.yaml"
    sweep.write_text((REPO / "sweeps" / "smoke.yaml").read_text())
    made = cli("sweep", str(sweep), "--store", pg_url, "--workers", "0", "--out", "out", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    line = next(x for x in made.stdout.splitlines() if x.startswith("fcn-sweep worker "))
    assert password not in made.stdout + made.stderr and "--sweep fcn-smoke" in line
    status = cli("status", "--store", pg_url, cwd=tmp_path)
    assert status.returncode == 0 and password not in status.stdout + status.stderr
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert files and not any(password in p.read_text(errors="ignore") for p in files)


@needs_data
def test_a_disk_that_fails_mid_run_puts_the_run_back_for_another_worker(tmp_path, disk_full_on_epoch_2):
    """ENOSPC while a worker writes a run's files: the attempt ends crashed (write failed), its slot
    gets a fresh pending attempt, and the error reaches the worker, which leaves."""
    from fcn_sweep.sweep.controller import Controller

    sweep = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
             "parameters": {"epochs": {"value": 3}, "subset": {"value": 512}, "hidden": {"value": [32]}}}  # fmt: skip
    store = new_store(str(tmp_path / "sweep.db"), sweep)
    Controller(store).plan()
    spec = worker.WorkerSpec("w0", str(tmp_path / "sweep.db"), "t", str(tmp_path), "cpu", 1, "disabled", "t")
    claimed = store.claim_many("w0:1@here", 1, "here")
    data = load("cpu", subset=512)
    with pytest.raises(OSError, match="No space left"):
        train_claim(spec, store, Controller(store), claimed, data, worker.Interrupt(), worker.WandbRuns(spec))
    (old,) = claimed
    assert store.get_run(old.id).status == "crashed"
    assert store.get_run(old.id).stop_reason == "write failed: No space left on device"
    (again,) = store.runs(["pending"])
    assert again.slot == old.slot and again.config == old.config
    store.close()


def test_a_report_reads_a_store_whose_url_carries_the_password(pg_url, monkeypatch):
    """The URL as `report --store` takes it, password in it, and no PGPASSWORD: the report's reader
    opens the same store that `worker` and `status` open."""
    from sqlalchemy.engine import make_url

    from fcn_sweep.report.load import load, store_source

    store = new_store(pg_url, name="with-pw")
    store.add((f"r{i}", i, i, 0, RunConfig(lr=lr), {"lr": lr}) for i, lr in enumerate((0.01, 0.1)))
    for i in range(2):
        store.finish(f"r{i}", "finished", {"best_val_acc": 0.8 + i / 10, "test_acc_at_best": 0.8, "best_epoch": 1})
    store.close()
    monkeypatch.delenv("PGPASSWORD", raising=False)
    study = load(store_source(make_url(pg_url), "with-pw"))
    assert sorted(r.objective for r in study.done) == [0.8, 0.9]


def test_no_message_shows_the_password_wherever_the_url_was_given(tmp_path, pg_url):
    password = pg_url.split("://", 1)[1].split("@")[0].split(":")[1]
    cases = [
        ("report", pg_url),  # where a directory goes
        ("status", pg_url),
        ("sweep", "--workers", pg_url),  # where a number goes: argparse's own error
        ("slurm", "workers", pg_url + "x", "--array", "1"),
    ]
    for args in cases:
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip(), (args, proc.stderr)
        assert password not in proc.stderr + proc.stdout, (args, proc.stderr)
        assert "***" in proc.stderr, (args, proc.stderr)


def test_commands_that_only_read_or_work_a_sweep_create_no_store_file(tmp_path):
    for args in (["worker", "::::"], ["status", "--store", "sqlite:///nope.db"], ["report", "--store", "nope.db"]):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert "no store at" in proc.stderr, proc.stderr
        assert list(tmp_path.iterdir()) == [], args


def test_a_reader_that_goes_away_ends_a_command_quietly(tmp_path):
    """`fcn-sweep status DIR | head`: the reader closed the pipe before the command wrote."""
    import subprocess
    import sys

    store = new_store(tmp_path / "sweep.db")
    store.add((f"r{i}", i, i, 0, RunConfig(lr=(i + 1) / 100), {"lr": (i + 1) / 100}) for i in range(50))
    store.close()
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcn_sweep", "status", str(tmp_path)], stdout=write, stderr=subprocess.PIPE
    )
    os.close(write)
    os.close(read)  # the reader is gone before the command has written anything
    _, err = proc.communicate(timeout=120)
    assert err.decode() == "" and proc.returncode == 141  # as a Unix tool ends on SIGPIPE


def test_a_slot_is_handed_back_once_and_only_by_its_owner(store_url):
    """A hand-back repeated (a retry after a lost answer) or made by a worker that no longer owns
    the attempt gives no slot a second pending attempt; every slot of a pack is handed back."""
    store = new_store(store_url)
    store.add((f"r{i}", i, i, 0, RunConfig(), {}) for i in range(3))
    pack = store.claim_many("w0:1@a", 3, "a")
    ids = [r.id for r in pack]
    assert store.requeue(ids, ["n0", "n1", "n2"], "crashed", "store unreachable", owner="w1:2@b") == []
    assert store.requeue(ids, ["n0", "n1", "n2"], "crashed", "store unreachable", owner="w0:1@a") == ids
    assert store.requeue(ids, ["m0", "m1", "m2"], "crashed", "store unreachable", owner="w0:1@a") == []
    assert sorted(r.id for r in store.runs(["pending"])) == ["n0", "n1", "n2"]
    with pytest.raises(Taken):
        store.log_epoch("r0", {"epoch": 1}, owner="w0:1@a")  # the attempt is no longer running
    assert store.histories(["r0"]) == {"r0": []}
    store.close()
