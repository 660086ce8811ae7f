"""`fcn-sweep sweep` as a user meets it: real worker processes, a real store, the real engine."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fcn_sweep.config import RunConfig
from fcn_sweep.sweep.controller import Controller
from fcn_sweep.sweep.store import Store

from . import processes
from .claimer import claim_all
from .conftest import cli, fresh_database, needs_data

COMMAND = ["${env}", "fcn-sweep", "train", "${args}"]


def sweep_file(tmp_path: Path, name: str = "tiny", **overrides) -> Path:
    sweep = {
        "name": name,
        "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "command": COMMAND,
        "parameters": {
            "epochs": {"value": 2},
            "subset": {"value": 512},
            "hidden": {"values": [[32], [64]]},
            "optimizer": {"values": ["adam", "sgd"]},
            "lr": {"value": 0.01},
        },
    }
    sweep.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def sweep(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return cli("sweep", *args, "--quiet", "--wandb=disabled", cwd=cwd, timeout=timeout)


@dataclass(frozen=True)
class Where:
    """Where a sweep's store is: the sweep directory's own sweep.db (url None), or a PostgreSQL database."""

    url: str | None

    def args(self) -> list[str]:
        return ["--store", self.url] if self.url else []

    def open(self, out: Path) -> Store:
        return Store(self.url) if self.url else Store.in_dir(out)

    def ready(self, out: Path) -> bool:
        return self.url is not None or (out / "sweep.db").exists()


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request) -> Where:
    if request.param == "sqlite":
        return Where(None)
    return Where(fresh_database(request.getfixturevalue("postgres_server")))


def new_store(url: str | Path, name: str = "t", sweep: dict | None = None, **options) -> Store:
    store = Store(url)
    store.create_sweep(name, sweep or {"method": "grid"}, **options)
    return store


def finished_once(store: Store) -> dict[int, str]:
    """slot -> the id of its one finished attempt; fails if any slot finished twice."""
    done = [r for r in store.runs(["finished"])]
    per_slot = Counter(r.slot for r in done)
    assert max(per_slot.values(), default=1) == 1, f"slots finished twice: {per_slot}"
    return {r.slot: r.id for r in done}


def assert_store_matches_run_dirs(store: Store) -> None:
    for r in store.runs(["finished"]):
        run_dir = Path(r.run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["best_val_acc"] == r.summary["best_val_acc"]
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert lines == store.histories([r.id])[r.id]
        assert RunConfig.from_file(run_dir) == r.config


@needs_data
def test_two_workers_finish_every_proposal_exactly_once(tmp_path):
    proc = sweep(str(sweep_file(tmp_path)), "--workers", "2", "--repeats", "2", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    store = Store.in_dir(tmp_path / "out")
    assert store.counts() == {**dict.fromkeys(store.counts(), 0), "finished": 8}
    assert len(finished_once(store)) == 8 == store.slots()[1]
    # Two workers ran; which took how many runs is the machine's business (on a busy one the second may
    # still be importing torch when the first has trained all eight): the claim race is
    # test_workers_starting_at_the_same_moment_never_claim_the_same_run's.
    assert store.invocations()[-1]["workers"] == 2 and {r.worker.split(":")[0] for r in store.runs()} <= {"w0", "w1"}
    runs = store.runs()
    seeds = {(r.proposal, r.config.seed) for r in runs}
    assert len(seeds) == 8 and {s for _, s in seeds} == {0, 1}
    assert_store_matches_run_dirs(store)
    status = cli("status", str(tmp_path / "out"))
    assert status.returncode == 0 and "8/8 configs done" in status.stdout and "±" in status.stdout
    # Running the same command again finds nothing left to do and repeats nothing.
    again = sweep(str(sweep_file(tmp_path)), "--workers", "2", "--repeats", "2", "--out", "out", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(Store.in_dir(tmp_path / "out").runs()) == 8


@needs_data
def test_a_packed_sweep_gives_each_run_its_own_record_and_the_results_it_gets_alone(tmp_path):
    from .test_packed import TIGHT, history_mismatch
    from .wandb_records import OfflineRun

    path = sweep_file(tmp_path, parameters={
        "epochs": {"value": 2}, "subset": {"value": 512}, "hidden": {"values": [[32], [48, 16]]},
        "optimizer": {"values": ["adam", "sgd", "rmsprop"]}, "lr": {"value": 0.001},
    })  # fmt: skip
    # A learning rate at which every optimizer trains smoothly: at 0.005 RMSprop without batch norm blows up
    # (val loss 6), and a ReLU kink's one-ulp difference then grows past any tolerance (tests/test_packed.py).
    packed = cli("sweep", str(path), "--pack", "4", "--out", "packed", "--quiet", "--wandb=offline", cwd=tmp_path)
    assert packed.returncode == 0, packed.stderr
    alone = sweep(str(path), "--out", "alone", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr

    store, reference = Store.in_dir(tmp_path / "packed"), Store.in_dir(tmp_path / "alone")
    runs = store.runs(["finished"])
    assert len(finished_once(store)) == 6 == len(runs)
    # One claim per shape: its three runs started together, under one worker.
    claims = Counter((r.started, r.worker, r.config.hidden) for r in runs)
    assert sorted(claims.values()) == [3, 3]
    by_slot = {r.slot: r for r in reference.runs(["finished"])}
    for r in runs:
        mine, alone_ = store.histories([r.id])[r.id], reference.histories([by_slot[r.slot].id])[by_slot[r.slot].id]
        assert history_mismatch(alone_, mine, TIGHT) == [], r.config
    assert_store_matches_run_dirs(store)
    logged = [OfflineRun(next((Path(r.run_dir) / "wandb").glob("offline-run-*"))) for r in runs]
    assert len({w.run.run_id for w in logged}) == 6
    for r, w in zip(runs, logged, strict=True):
        assert w.run.run_id == r.id and w.config["optimizer"] == r.config.optimizer
        assert [h["val/acc"] for h in w.history] == [m["val/acc"] for m in store.histories([r.id])[r.id]]
        assert w.summary["best_val_acc"] == r.summary["best_val_acc"]


def wait_for_store(where: Where, out: Path, predicate, what: str, process: subprocess.Popen) -> None:
    def holds() -> bool:
        if not where.ready(out):
            return False
        store = where.open(out)
        try:
            return store.sweep_id is not None and predicate(store)
        finally:
            store.close()

    try:
        processes.wait_until(holds, what)
    except BaseException:  # pytest.fail's exception too: leave no sweep running
        process.kill()
        raise


def signal_mid_run(out: Path, pids: list[int], runs, send) -> bool:
    """With `pids` frozen: if every one of `runs` still has a whole epoch to train, `send()` the
    signal, which each process handles before its next batch once continued; whether it was sent."""
    with processes.frozen(pids):
        if runs and all(processes.still_training(out / "runs" / r.id, r.config.epochs) for r in runs):
            send()
            return True
    return False


@needs_data
@pytest.mark.parametrize("pack", ["1", "3"])
def test_ctrl_c_stops_the_runs_in_flight_and_a_resume_finishes_each_once(tmp_path, pack, where):
    if where.url and pack == "1":
        pytest.skip("the packed case covers PostgreSQL")
    path = sweep_file(
        tmp_path,
        parameters={"epochs": {"value": 6}, "subset": {"value": 2048}, "hidden": {"value": [64]},
                    "lr": {"values": [0.01, 0.003, 0.001]}},
    )  # fmt: skip
    parent = subprocess.Popen(
        [sys.executable, "-m", "fcn_sweep", "sweep", str(path), "--pack", pack, "--out", "out", "--quiet",
         "--wandb=disabled", *where.args()],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    out = tmp_path / "out"

    def ctrl_c_mid_run(store: Store) -> bool:
        # What Ctrl-C in a terminal does: SIGINT to the whole process group, here while a run is mid-way.
        running = store.runs(["running"])
        if not any(r.epoch >= 1 for r in running):
            return False
        return signal_mid_run(out, processes.group(parent.pid), running, lambda: os.killpg(parent.pid, signal.SIGINT))

    wait_for_store(where, out, ctrl_c_mid_run, "a run to be mid-way", parent)
    assert parent.wait(timeout=60) == 0, parent.stderr.read().decode()
    store = where.open(out)
    interrupted = store.runs(["stopped"])
    assert interrupted and all(r.stop_reason == "interrupted" for r in interrupted)
    assert len(interrupted) == (3 if pack == "3" else 1)  # the whole pack was in flight
    assert store.counts()["running"] == 0 and store.counts()["pending"] == 3 - store.counts()["finished"]

    resume = ["--store", where.url, "--sweep", "tiny"] if where.url else ["--resume", "out"]
    proc = sweep(*resume, "--pack", pack, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(finished_once(store)) == 3 == store.slots()[0]
    assert store.counts()["pending"] == store.counts()["running"] == 0
    assert_store_matches_run_dirs(store)


@needs_data
def test_sigkilled_worker_and_killed_sweep_resume_without_losing_or_repeating(tmp_path, where):
    path = sweep_file(
        tmp_path,
        parameters={"epochs": {"value": 5}, "subset": {"value": 2048}, "hidden": {"values": [[32], [64], [96]]},
                    "optimizer": {"values": ["adam", "sgd"]}, "lr": {"value": 0.01}},
    )  # fmt: skip
    parent = subprocess.Popen(
        [sys.executable, "-m", "fcn_sweep", "sweep", str(path), "--workers", "2", "--out", "out", "--quiet",
         "--wandb=disabled", *where.args()],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    out = tmp_path / "out"
    wait_for = lambda predicate, what: wait_for_store(where, out, predicate, what, parent)  # noqa: E731

    # 1. SIGKILL one worker in the middle of a run: the sweep re-queues the run and carries on.
    victims = []

    def kill_mid_run(store: Store) -> bool:
        for r in store.runs(["running"]):
            pid = int(r.worker.split(":")[1].split("@")[0])
            if r.epoch >= 1 and signal_mid_run(out, [pid], [r], lambda pid=pid: os.kill(pid, signal.SIGKILL)):
                victims.append(r)
                return True
        return False

    wait_for(kill_mid_run, "a run to be mid-way")
    (victim,) = victims
    store = where.open(out)
    wait_for(lambda s: s.get_run(victim.id).status == "crashed", "the killed run to be marked crashed")
    # 2. Kill the whole sweep (parent and workers) once something has finished; resume it.
    wait_for(lambda s: s.counts()["finished"] >= 2, "two finished runs")
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait(timeout=30)
    before = {r.id: r.summary for r in store.runs(["finished"])}
    proc = sweep(*(["--store", where.url, "--sweep", "tiny"] if where.url else ["--resume", "out"]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    store = where.open(out)
    finished = finished_once(store)
    assert len(finished) == 6 == store.slots()[0] == store.slots()[1]
    assert store.counts()["crashed"] >= 1 and store.counts()["running"] == 0 and store.counts()["pending"] == 0
    after = {r.id: r.summary for r in store.runs(["finished"])}
    assert all(after[i] == s for i, s in before.items()), "a finished run was changed or rerun"
    assert_store_matches_run_dirs(store)


@needs_data
@pytest.mark.parametrize("packed", [False, True], ids=["alone", "packed"])
def test_hyperband_decisions_reach_the_workers_and_those_runs_end_stopped(tmp_path, packed, where):
    if where.url and packed:
        pytest.skip("the solo case covers PostgreSQL")
    # Alone: one worker, so the two good runs finish first and set the bar the bad run is judged
    # against at every bracket (epochs 1, 2, 4, 8, ...: the top half of the runs that reached it).
    # Packed: all three train in one pack and Hyperband must stop one member, not the pack. Either
    # way a learning rate of 1e-6 cannot reach the bar.
    path = sweep_file(
        tmp_path,
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2},
        parameters={"epochs": {"value": 8}, "subset": {"value": 256}, "hidden": {"value": [64]},
                    "optimizer": {"value": "adam"}, "lr": {"values": [0.01, 0.003, 0.000001]}},
    )  # fmt: skip
    args = ["--pack", "3"] if packed else ["--workers", "1"]
    proc = sweep(str(path), *args, "--out", "out", *where.args(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    store = where.open(tmp_path / "out")
    by_lr = {r.config.lr: r for r in store.runs()}
    assert (by_lr[0.01].status, by_lr[0.01].summary["epochs_run"]) == ("finished", 8)
    if packed:
        assert len({r.started for r in store.runs()}) == 1  # claimed and trained as one pack
    else:
        assert by_lr[0.003].status == "finished"
    stopped = by_lr[0.000001]
    assert (stopped.status, stopped.stop_reason) == ("stopped", "hyperband")
    assert stopped.summary["epochs_run"] == 1  # it fails the first bracket, and stops right there
    assert json.loads((Path(stopped.run_dir) / "summary.json").read_text())["status"] == "stopped"
    assert all(r.stop_reason == "hyperband" for r in store.runs(["stopped"]))
    assert store.slots() == (3, 3)  # a Hyperband stop is final: nothing to resume


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("method: grid\nparameters: {lr: {values: [0.1]}\n", "not valid YAML"),
        ("method: hyperopt\nmetric: {name: val/acc, goal: maximize}\nparameters: {lr: {value: 0.1}}\n",
         "method must be one of grid, random, bayes"),
        ("method: grid\nmetric: {name: val/acc, goal: maximize}\nparameters: {learning_rate: {value: 0.1}}\n",
         "unknown parameter 'learning_rate'"),
        ("method: grid\nmetric: {name: val/acc, goal: maximize}\nparameters: {lr: {values: []}}\n", "empty values"),
        ("method: grid\nmetric: {name: accuracy, goal: maximize}\nparameters: {lr: {value: 0.1}}\n",
         "metric.name must be one of val/acc"),
        ("method: grid\nmetric: {name: test/acc, goal: maximize}\nparameters: {lr: {value: 0.1}}\n",
         "metric.name must be one of val/acc"),
        ("method: grid\nmetric: {name: val/acc, goal: maximize}\nparameters: {optimizer: {values: [adam, lion]}}\n",
         "optimizer: expected one of"),
        ("method: grid\nmetric: {name: val/acc, goal: maximize}\nparameters: {lr: {parameters: {a: {value: 1}}}}\n",
         "nested"),
    ],
)  # fmt: skip
def test_bad_sweep_files_exit_2_before_anything_is_written(tmp_path, text, says):
    (tmp_path / "bad.yaml").write_text(text)
    proc = sweep(str(tmp_path / "bad.yaml"), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--workers", "-1"], "--workers must be a non-negative integer"),
     (["--resume", "nowhere"], "not a sweep directory"),
     (["--pack", "0"], "--pack must be a positive integer"),
     ([], "give a sweep file")],
)  # fmt: skip
def test_bad_sweep_options_exit_2(tmp_path, args, says):
    proc = sweep(*args, cwd=tmp_path)
    assert proc.returncode == 2 and says in proc.stderr


def test_workers_starting_at_the_same_moment_never_claim_the_same_run(store_url):
    store = new_store(store_url)
    cfg = RunConfig()
    store.add((f"r{i}", i, i, 0, cfg, {}) for i in range(300))
    ctx = mp.get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(4)
    procs = [ctx.Process(target=claim_all, args=(store_url, f"w{i}", out, start)) for i in range(4)]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=300)
    flat = [i for got in claimed for i in got]
    assert sorted(flat) == sorted(f"r{i}" for i in range(300))  # each exactly once
    assert sum(1 for got in claimed if got) >= 2  # and the work really was shared


def test_random_order_is_a_seeded_permutation_of_the_engines_grid(tmp_path):
    grid = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "grid.yaml").read_text())

    def order(seed: int, how: str) -> list[dict]:
        store = new_store(tmp_path / f"{how}-{seed}-{time.monotonic_ns()}.db", sweep=grid, order=how, seed=seed)
        Controller(store).plan()
        return [r.params for r in store.runs()]

    in_file, shuffled = order(0, "file"), order(0, "random")
    assert len(in_file) == 5832 and shuffled != in_file
    assert sorted(map(json.dumps, shuffled)) == sorted(map(json.dumps, in_file))
    assert order(0, "random") == shuffled and order(1, "random") != shuffled


def test_the_claim_budget_is_spent_only_by_claims_and_absent_means_unlimited(tmp_path):
    # An unbounded sweep (bayes without run_cap, no --count) stores no budget: a worker that finds
    # nothing pending must wait for the controller, not decide the budget is spent (or crash on None).
    store = new_store(tmp_path / "sweep.db")
    store.add((f"r{i}", i, i, 0, RunConfig(), {}) for i in range(3))
    store.set_budget(None)
    assert not store.budget_spent()
    store.set_budget(2)
    assert store.claim_many("w", 1) and store.claim_many("w", 1)
    assert store.budget_spent() and store.claim_many("w", 1) == []
    assert store.counts()["pending"] == 1


def test_time_accounting_counts_a_packs_shared_epochs_once(tmp_path):
    from sqlalchemy import update

    from fcn_sweep.sweep.status import time_accounting, time_line
    from fcn_sweep.sweep.store.schema import runs

    store = new_store(tmp_path / "sweep.db")
    assert time_accounting(store) is None  # no invocation on record yet
    store.add((f"r{i}", i, i, 0, RunConfig(epochs=2), {}) for i in range(3))
    store.add_invocation(100.0, 110.0, workers=2, pack=2)

    def claimed(run_id: str, worker: str, started: float, ended: float) -> None:  # at a chosen time
        with store.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(worker=worker, started=started, ended=ended))

    claim = {"w0": ["r0", "r1"], "w1": ["r2"]}  # a pack of two, and one run alone
    for worker, ids in claim.items():
        for i in ids:
            claimed(i, worker, 101.0, 106.0)
            for epoch, seconds in ((1, 2.0), (2, 2.0 if i != "r1" else 1.5)):
                store.log_epoch(i, {"epoch": epoch, "time/epoch_s": seconds})
    store.add([("killed", 3, 3, 0, RunConfig(epochs=2), {})])  # claimed by an invocation killed outright
    claimed("killed", "w9", 50.0, 60.0)
    store.log_epoch("killed", {"epoch": 1, "time/epoch_s": 9.0})
    t = time_accounting(store)
    assert t == {"worker": 20.0, "training": 8.0, "per_run": 2.0, "start_idle": 10.0, "runs": 3}
    assert time_line(store).startswith("worker time 20.0 s: 40% training, 10% per-run")


def test_workers_learn_which_data_the_pending_runs_need(tmp_path):
    store = new_store(tmp_path / "sweep.db")
    store.add((f"r{i}", i, i, 0, RunConfig(subset=s), {}) for i, s in enumerate([512, 256, 0, 512]))
    store.claim_many("w0", 1)  # r0 (512) runs; the other 512 is still pending
    store.claim_many("w0", 1)
    store.finish("r1", "finished", {})  # 256: no longer wanted
    assert store.pending_subsets() == [0, 512]


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it: what SLURM signals on scancel (proctrack/linuxproc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        below = {p for p, parent in parents.items() if parent in tree} - tree
        tree, grew = tree | below, bool(below)
    return sorted(tree)


@needs_data
def test_scancel_reaching_the_wandb_service_too_ends_the_worker_without_a_traceback(tmp_path):
    """scancel signals every process of a task, W&B's service process too: the runs in flight end
    preempted, and the worker's log says so in at most one line, with no traceback."""
    path = sweep_file(
        tmp_path,
        parameters={"epochs": {"value": 8}, "subset": {"value": 2048}, "hidden": {"value": [64]},
                    "lr": {"values": [0.01, 0.003]}},
    )  # fmt: skip
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    made = cli("sweep", str(path), "--store", url, "--workers", "0", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "fcn_sweep", "worker", url, "--out", "out", "--quiet", "--wandb", "offline"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    where = Where(url)
    wait_for_store(where, tmp_path, lambda s: any(r.epoch >= 1 for r in s.runs(["running"])), "a run", worker)
    tree = process_tree(worker.pid)
    assert len(tree) > 1, "the W&B service process was not started"
    for pid in tree:
        os.kill(pid, signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert len([line for line in err.splitlines() if "W&B" in line]) <= 1, err
    store = where.open(tmp_path)
    assert {r.stop_reason for r in store.runs(["preempted"])} == {"SIGTERM"}
