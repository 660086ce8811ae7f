"""`fcn-sweep slurm workers|agents` and `--dry-run`: the scripts they write, what those scripts start,
and what a job array does on a real (one-node) SLURM cluster. Tests marked `slurm` need
scripts/slurm_local.sh's cluster and skip without it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fcn_sweep.sweep.launch import slurm

from . import processes
from .conftest import REPO, cli, fresh_database, needs_data

SHELLCHECK = Path(sys.executable).parent / "shellcheck"
API_KEY = "0123456789abcdef0123456789abcdef01234567"  # shape of a W&B key; must never reach a file

# Two runs of one small shape: a calibration epoch takes a fraction of a second.
TINY_SWEEP = """\
name: tiny
method: grid
metric: {name: val/acc, goal: maximize}
parameters:
  epochs: {value: 2}
  subset: {value: 1024}
  batch_size: {value: 64}
  hidden: {value: [32]}
  optimizer: {values: [adam, sgd]}
"""


def cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return done.returncode == 0 and any(s.startswith(("idle", "mix", "alloc")) for s in done.stdout.split())


needs_slurm = pytest.mark.skipif(not cluster_up(), reason="no SLURM cluster up (scripts/slurm_local.sh starts one)")


def wait_for_job(job: str) -> None:
    """Until no task of the job is pending or running."""
    queued = lambda: subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True).stdout  # noqa: E731
    try:
        processes.wait_until(lambda: not queued().strip(), f"job {job} to leave the queue", every=0.5)
    except BaseException:  # pytest.fail's exception too: leave no job behind
        subprocess.run(["scancel", job])
        raise


RECORDER = """\
import os, sys
key = "yes" if os.environ.get("WANDB_API_KEY") else ""
with open(os.environ["RECORD"], "a") as f:
    f.write(f"gpus={os.environ.get('CUDA_VISIBLE_DEVICES', '')} key={key} args={' '.join(sys.argv[1:])}\\n")
"""


def fake_wandb(directory: Path, record: Path) -> dict[str, str]:
    """The environment for a `wandb` package (first on PYTHONPATH) whose `python -m wandb` records, per
    call, the GPUs it sees, whether it got the API key, and its arguments: the end of the chain
    `fcn-sweep wandb-agent` -> `python -m wandb agent --forward-signals`, without W&B's server."""
    (directory / "wandb").mkdir(parents=True, exist_ok=True)
    (directory / "wandb" / "__init__.py").write_text("")
    (directory / "wandb" / "__main__.py").write_text(RECORDER)
    path = [str(directory), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(path), "RECORD": str(record)}


STUB_PYTHON = f"""\
#!{sys.executable}
# Stands in for the interpreter of a packed agent: records how it was started, then trains until
# TERM, which it takes half a second to act on (as a pack ends its batch and saves its models).
import os, signal, sys, time
def stop(*_):
    time.sleep(0.5)
    with open(os.environ["RECORD"], "a") as f:
        f.write("stopped\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
{RECORDER}
while True:
    time.sleep(0.1)
"""


def files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text in p.read_text(errors="replace")]


@pytest.mark.parametrize("gpus", [0, 2])
def test_workers_script_passes_shellcheck(tmp_path, gpus):
    sb = slurm.Sbatch(array=3, gpus_per_task=gpus, time="1:00:00", partition="gpu", extra=("--mem=4G",))
    job = slurm.WorkersJob("postgresql://me@db.example:5432/sweeps", "smoke", tmp_path / "out it's", pack=4)
    script = tmp_path / "w.sbatch"
    script.write_text(slurm.render_workers(job, sb, tmp_path / "logs"))
    done = subprocess.run([SHELLCHECK, "--severity=info", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_agents_script_starts_the_agents_on_the_tasks_gpus(tmp_path):
    """One task with GPUs 2,3 and --per-gpu 2: four plain agents, two on each GPU, each W&B's own
    agent with --forward-signals (by `fcn-sweep wandb-agent`) and the key from the environment, and
    the key in no file."""
    record = tmp_path / "agents.txt"
    sb = slurm.Sbatch(array=2, gpus_per_task=2)
    out = tmp_path / "out"
    text = slurm.render_agents(slurm.AgentsJob("ent/proj/abc123", out, per_gpu=2, stagger_s=0), sb, out / "logs")
    script = tmp_path / "agents.sbatch"
    script.write_text(text)
    (out / "logs").mkdir(parents=True)
    assert subprocess.run([SHELLCHECK, "--severity=info", script], capture_output=True).returncode == 0
    env = {
        **os.environ,
        **fake_wandb(tmp_path / "fake", record),
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_ARRAY_JOB_ID": "77",
        "CUDA_VISIBLE_DEVICES": "2,3",
        "WANDB_API_KEY": API_KEY,
    }
    subprocess.run(["bash", script], env=env, check=True, capture_output=True, timeout=60)
    calls = sorted(record.read_text().splitlines())
    agent = "key=yes args=agent --forward-signals ent/proj/abc123"
    assert calls == [f"gpus=2 {agent}"] * 2 + [f"gpus=3 {agent}"] * 2
    assert files_holding(tmp_path, API_KEY) == []


def test_packed_agents_script_runs_one_per_gpu_and_waits_for_each_after_term(tmp_path):
    """--pack 4: one `fcn-sweep wandb-agent --pack 4` on each of the task's GPUs, with its share of
    the task's CPUs. TERM to the script (a time limit's warning) reaches every agent, and the script
    ends only once each has exited (`wait` returns early on a trapped signal: it must wait again)."""
    record = tmp_path / "agents.txt"
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    sb = slurm.Sbatch(array=2, gpus_per_task=2, cpus_per_task=4)
    out = tmp_path / "out"
    job = slurm.AgentsJob("ent/proj/abc123", out, count=3, stagger_s=0, pack=4, python=str(stub))
    script = tmp_path / "agents.sbatch"
    script.write_text(slurm.render_agents(job, sb, out / "logs"))
    (out / "logs").mkdir(parents=True)
    done = subprocess.run([SHELLCHECK, "--severity=info", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    env = {
        **os.environ,
        "RECORD": str(record),
        "SLURM_ARRAY_TASK_ID": "0",
        "SLURM_CPUS_PER_TASK": "4",
        "CUDA_VISIBLE_DEVICES": "2,3",
        "WANDB_API_KEY": API_KEY,
    }
    task = subprocess.Popen(["bash", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = lambda: record.exists() and len(record.read_text().splitlines()) >= 2  # noqa: E731
    try:
        processes.wait_until(started, "both agents to start")
        agents = processes.descendants(task.pid)
        task.send_signal(signal.SIGTERM)
        task.communicate(timeout=60)
    finally:
        task.kill()
    calls = record.read_text().splitlines()
    agent = "key=yes args=-m fcn_sweep wandb-agent --pack 4 --threads 2 --count 3 ent/proj/abc123"
    assert sorted(calls[:2]) == [f"gpus=2 {agent}", f"gpus=3 {agent}"]
    assert calls[2:] == ["stopped", "stopped"]  # both written before the script ended
    assert not [pid for pid in agents if processes.alive(pid)], "the script ended before an agent it started"
    assert files_holding(tmp_path, API_KEY) == []


def test_agents_bad_input_exits_2_and_submits_nothing(tmp_path, capsys):
    from fcn_sweep.cli import main

    out = tmp_path / "runs"
    cases = [
        (["--pack", "0"], "--pack must be a positive integer or auto, got '0'"),
        (["--pack", "many"], "--pack must be a positive integer or auto, got 'many'"),
        (["--pack", "4", "--per-gpu", "2"], "--per-gpu 2 needs --pack 1"),
        (["--per-gpu", "0"], "--per-gpu must be a positive integer"),
    ]
    for args, message in cases:
        assert main(["slurm", "agents", "ent/proj/abc123", "--array", "2", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_bad_input_exits_2_and_submits_nothing(tmp_path, monkeypatch, capsys):
    from fcn_sweep.cli import main

    sweep_dir = make_sweep_dir(tmp_path / "sweep")
    cases = [
        (["--array", "0"], "--array must be a positive integer"),
        (["--array", "2", "--sbatch-arg=mem=4G"], "is not one sbatch option"),
        (["--array", "2", "--cpus-per-task", "0"], "--cpus-per-task must be a positive integer"),
        (["--array", "2", "--no-such-flag"], "unexpected arguments --no-such-flag"),
        (["--array", "2", "--time", "banana"], "--time 'banana' is not a SLURM time limit; give minutes (90)"),
    ]
    for args, message in cases:
        assert main(["slurm", "workers", str(sweep_dir), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # A PostgreSQL that does not answer: refused before anything is written or submitted.
    assert main(["slurm", "workers", "postgresql://me@127.0.0.1:1/sweeps", "--array", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the store" in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["slurm", "workers", str(sweep_dir), "--array", "2"]) == 2
    err = capsys.readouterr().err
    assert "sbatch is not on PATH" in err and len(err.strip().splitlines()) == 1, err
    assert not (sweep_dir / "slurm").exists()


@pytest.mark.parametrize("time", ["90", "0", "1:30", "4:00:00", "2-12", "1-2:30", "1-02:30:00", "UNLIMITED"])
def test_every_documented_slurm_time_format_is_taken(time):
    slurm.check_args(slurm.Sbatch(array=1, time=time))


@pytest.mark.parametrize("time", ["banana", "4h", "1:2:3:4", "1-", "-1", "1 -2", "", "1:30 "])
def test_a_time_outside_slurms_documented_formats_is_refused(time):
    with pytest.raises(slurm.LaunchError, match="is not a SLURM time limit"):
        slurm.check_args(slurm.Sbatch(array=1, time=time))


REFUSING_SBATCH = """#!/usr/bin/env bash
# Passes --test-only, then refuses the job, as a cluster whose limits changed in between would.
if [ "$1" = --test-only ]; then cat >/dev/null; echo "sbatch: Job 1 to start now" >&2; exit 0; fi
echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy" >&2
exit 1
"""


def test_a_submit_sbatch_refuses_leaves_nothing_in_out(tmp_path, monkeypatch, capsys):
    """The script written for the submit and every folder made for it go when sbatch refuses it."""
    from fcn_sweep.cli import main

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sbatch").write_text(REFUSING_SBATCH)
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "kept", tmp_path / "new" / "runs"):
        args = ["slurm", "agents", "ent/proj/abc123", "--array", "2", "--gpus-per-task", "0", "--out", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "violates accounting/QOS policy; nothing was kept" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "bin", tmp_path / "bin" / "sbatch", tmp_path / "kept"]


@pytest.mark.slurm
@needs_slurm
def test_options_the_cluster_refuses_exit_2_before_anything_is_written(tmp_path, capsys):
    """sbatch judges every option (--test-only) before the script is written: an option sbatch does
    not know, a partition the cluster lacks, GPUs it has none of."""
    from fcn_sweep.cli import main

    sweep_dir = make_sweep_dir(tmp_path / "sweep")
    (tmp_path / "out").mkdir()
    cases = [
        ("workers", str(sweep_dir), ["--sbatch-arg=--no-such-option"], "unrecognized option '--no-such-option'"),
        ("agents", "ent/proj/abc123", ["--gpus-per-task", "0", "--partition", "nope"], "invalid partition"),
        ("agents", "ent/proj/abc123", ["--gpus-per-task", "0", "--sbatch-arg=--mem=1000000G"], "sbatch refuses"),
    ]
    for kind, target, args, message in cases:
        assert main(["slurm", kind, target, "--array", "2", "--out", str(tmp_path / "out"), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "nothing was written" in err and len(err.strip().splitlines()) == 1, err
    assert list((tmp_path / "out").iterdir()) == [] and not (sweep_dir / "slurm").exists()


def test_a_store_the_nodes_cannot_reach_is_refused(monkeypatch):
    """Loopback, a Unix socket or a SQLite directory, with nodes other than this machine."""
    monkeypatch.setattr(slurm, "node_hosts", lambda partition: ["gpu001", "gpu002"])
    for store in ("postgresql://me@localhost/sweeps", "postgresql://me@127.0.0.1:5433/s", "postgresql:///s", "/x"):
        with pytest.raises(slurm.LaunchError, match="gpu001"):
            slurm.check_reachable(store, None)


def make_sweep(store: str, directory: Path, text: str = TINY_SWEEP) -> str:
    """A sweep created in `store` (a URL, or a SQLite file in `directory`), its grid planned and no
    run started, as `fcn-sweep sweep FILE --store STORE --workers 0` leaves it; returns its name."""
    from fcn_sweep.sweep.runner import SweepOptions, run_sweep

    directory.mkdir(parents=True, exist_ok=True)
    sweep_file = directory / "sweep-file.yaml"
    sweep_file.write_text(text)
    store_obj, _ = run_sweep(str(sweep_file), str(directory), None, SweepOptions(workers=0, store=store))
    name = store_obj.info.name
    store_obj.close()
    return name


def make_sweep_dir(directory: Path, text: str = TINY_SWEEP) -> Path:
    make_sweep(str(directory / "sweep.db"), directory, text)
    return directory


@needs_data
def test_dry_run_sizes_the_sweep_and_submits_nothing(tmp_path, capsys):
    """In this process (the imports are paid already): the array's plan and the local sweep's."""
    from fcn_sweep.cli import main

    sweep_dir = make_sweep_dir(tmp_path / "sweep")
    jobs = lambda: set(subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True).stdout.split())  # noqa: E731
    before = jobs() if cluster_up() else set()
    assert main(["slurm", "workers", str(sweep_dir), "--array", "3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) to do" in out and "--pack 1: wall" in out and "--pack 4: wall" in out, out
    assert not (sweep_dir / "slurm").exists()
    if cluster_up():
        assert jobs() <= before  # no job submitted
    # The local sweep's dry run: the same plan, nothing created.
    assert main(["sweep", str(sweep_dir / "sweep-file.yaml"), "--out", str(tmp_path / "local"), "--dry-run"]) == 0
    assert "2 run(s) to do" in capsys.readouterr().out and not (tmp_path / "local").exists()


@pytest.mark.parametrize("pack", ["1", "auto"])
def test_a_dry_run_for_gpu_tasks_on_a_node_without_one_prints_the_plan(tmp_path, capsys, pack):
    """A cluster's login node has no GPU: the plan (runs, epochs, shapes, packs) and a line saying the
    wall time needs the GPU, exit 0; not a CUDA traceback."""
    import torch

    from fcn_sweep.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the dry run calibrates on it")
    sweep_dir = make_sweep_dir(tmp_path / "sweep")
    argv = ["slurm", "workers", str(sweep_dir), "--array", "16", "--gpus-per-task", "1", "--pack", pack]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) to do" in out and "wall time: needs a GPU" in out and "pack" in out, out
    assert "dry run: nothing written or submitted" in out and not (sweep_dir / "slurm").exists()


@pytest.mark.slurm
@needs_slurm
def test_agents_array_on_slurm(tmp_path):
    """`fcn-sweep slurm agents --array 2 --per-gpu 2` on the cluster (no GPUs): 4 agents in all, each
    W&B's own agent with --forward-signals."""
    record = tmp_path / "agents.txt"
    env = {**fake_wandb(tmp_path / "fake", record), "WANDB_API_KEY": API_KEY}
    done = cli(
        "slurm", "agents", "ent/proj/abc123", "--array", "2", "--gpus-per-task", "0", "--per-gpu", "2",
        "--stagger", "0", "--out", str(tmp_path / "runs"), env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.split()[2].rstrip(":")
    wait_for_job(job)
    assert record.read_text().splitlines() == ["gpus= key=yes args=agent --forward-signals ent/proj/abc123"] * 4
    assert files_holding(tmp_path, API_KEY) == []


@pytest.mark.slurm
@needs_slurm
@needs_data
def test_a_packed_agent_task_signalled_before_its_time_limit_ends_its_runs_stopped(tmp_path):
    """`fcn-sweep slurm agents --pack 2` on the cluster, against the loopback stand-in of W&B's agent
    API: one task runs one packed agent, which trains the stand-in's two runs as a pack. Mid-pack the
    task's script gets the TERM that SLURM sends before a time limit (`--signal=B:TERM@...`; here
    `scancel --batch --signal=TERM`), passes it to the agent and waits for it (were it to end first,
    SLURM would kill what the task left), so both runs end `stopped` with their models and W&B
    summaries, the task then ends by itself, and nothing it started is left running."""
    import yaml

    from .wandb_records import ended_stopped_with_its_model
    from .wandb_server import AgentServer

    sweep = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    params = {"epochs": 200, "hidden": [256], "subset": 4096}
    run_ids = ["slurma", "slurmb"]
    out = tmp_path / "runs"
    run_dirs = [out / r for r in run_ids]
    with AgentServer(sweep, [(r, params) for r in run_ids], sweep_id="abc123") as server:
        env = {
            "WANDB_BASE_URL": server.url,
            "WANDB_API_KEY": API_KEY,
            "WANDB_MODE": "offline",
            "FCN_SWEEP_AGENT_POLL_S": "0.5",
        }
        done = cli(
            "slurm", "agents", "me/proj/abc123", "--array", "1", "--gpus-per-task", "0", "--pack", "2",
            "--stagger", "0", "--out", str(out), env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        job = done.stdout.split()[2].rstrip(":")
        of_job = lambda: [int(p.name) for p in Path("/proc").glob("[0-9]*") if task_of(int(p.name), job)]  # noqa: E731
        started: list[int] = []
        try:
            both = lambda: all(processes.epochs_logged(d) >= 1 for d in run_dirs)  # noqa: E731
            processes.wait_until(both, "both members of the pack to train an epoch")
            started = of_job()
            (agent,) = [p for p in started if b"wandb-agent" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
            with processes.frozen([agent]):  # both runs still mid-run when the signal lands
                assert all(processes.still_training(d, params["epochs"]) for d in run_dirs)
                subprocess.run(["scancel", "--batch", "--signal=TERM", job], check=True)
                processes.wait_until(lambda: processes.pending(agent, signal.SIGTERM), "TERM to reach the agent")
            wait_for_job(job)  # the task ends by itself once its agent has
        finally:
            subprocess.run(["scancel", job])
    assert not [pid for pid in started if processes.alive(pid)], "processes the task started outlived it"
    log = (out / "slurm" / "logs" / f"{job}_0-agent-cpu-1.log").read_text()
    assert "training 2 run(s) of 256: slurma, slurmb" in log and "Traceback" not in log, log
    for run_dir in run_dirs:
        ended_stopped_with_its_model(run_dir, params["epochs"])
    assert files_holding(out / "slurm", API_KEY) == []


def running_tasks(job: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-j", job, "-t", "R", "-o", "%i"], capture_output=True, text=True).stdout
    return sorted(out.split())


def task_of(pid: int, job: str) -> str | None:
    """The array task (JOB_TASK) a worker process runs in, from the environment SLURM gave it."""
    try:
        env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
    except OSError:  # gone, or not ours to read (pid 1 in a container)
        return None
    if env.get("SLURM_ARRAY_JOB_ID") != job:
        return None
    return f"{job}_{env['SLURM_ARRAY_TASK_ID']}"


def freeze_a_run_in_flight(store, job: str, out: Path, avoid: str | None = None):
    """A running attempt of the job, its worker frozen (SIGSTOP) while the run still has a whole
    epoch to train, so a signal sent now is handled mid-run; (run, worker pid, task). A worker
    caught between runs, or at its run's last epoch, is continued and the search goes on."""

    def catch():
        for run in store.runs(["running"]):
            pid = int(run.worker.split(":")[1].split("@")[0])
            task = task_of(pid, job)
            if task is None or task == avoid:
                continue
            processes.freeze([pid])
            if store.get_run(run.id).status == "running" and processes.still_training(
                out / "runs" / run.id, run.config.epochs
            ):
                return run, pid, task
            processes.thaw([pid])
        return None

    return processes.wait_until(catch, f"a run of job {job} in flight{f' outside task {avoid}' if avoid else ''}")


@pytest.mark.slurm
@needs_slurm
@needs_data
def test_array_of_workers_survives_scancel_and_preemption(tmp_path, postgres_server):
    """sweeps/smoke.yaml on a 3-task array of workers and a PostgreSQL store. Mid-run, one task is
    cancelled (scancel: TERM) and another gets the preemption warning (USR1): their runs end
    `preempted` and are finished by other tasks, the warned task is requeued, and every slot of the
    sweep ends finished exactly once, with nothing counted as crashed."""
    from sqlalchemy.engine import make_url

    from fcn_sweep.sweep.store import Store

    postgres_url = fresh_database(postgres_server)
    name = make_sweep(postgres_url, tmp_path / "sweep", (REPO / "sweeps" / "smoke.yaml").read_text())
    # As on a cluster: the password reaches the tasks through the environment sbatch passes on, not the script.
    env = {"WANDB_MODE": "disabled", "PGPASSWORD": make_url(postgres_url).password}
    done = cli("slurm", "workers", postgres_url, "--sweep", name, "--array", "3", "--out", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    job = done.stdout.split()[2].rstrip(":")
    store = Store(postgres_url, name)
    show = lambda task: subprocess.run(["scontrol", "show", "job", task], capture_output=True, text=True).stdout  # noqa: E731
    try:
        # scancel: SLURM itself continues the frozen worker and sends it TERM, and the task's script
        # passes TERM on; either way the worker handles it before its next batch.
        cancelled, pid, task = freeze_a_run_in_flight(store, job, tmp_path)
        subprocess.run(["scancel", task], check=True)
        processes.wait_until(lambda: processes.pending(pid, signal.SIGTERM) or not processes.stopped(pid), "TERM")
        processes.thaw([pid])
        # The warning reaches the task's script only; it passes USR1 on to the frozen worker.
        warned, pid, warned_task = freeze_a_run_in_flight(store, job, tmp_path, avoid=task)
        subprocess.run(["scancel", "--batch", "--signal=USR1", warned_task], check=True)
        processes.wait_until(lambda: processes.pending(pid, signal.SIGUSR1), "USR1 to reach the worker")
        processes.thaw([pid])
        processes.wait_until(lambda: "Restarts=1" in show(warned_task), f"task {warned_task} to be requeued")
        processes.wait_until(lambda: not store.counts()["pending"] + store.counts()["running"], "the sweep's end")
        runs = store.runs()
        # The last workers see the sweep done and leave.
        processes.wait_until(lambda: not running_tasks(job), "the workers to leave once the sweep is done")
    finally:
        store.close()
        subprocess.run(["scancel", job])  # the requeued task waits out SLURM's requeue delay; not needed now
    by_id = {r.id: r for r in runs}
    assert (by_id[cancelled.id].status, by_id[cancelled.id].stop_reason) == ("preempted", "SIGTERM")
    assert (by_id[warned.id].status, by_id[warned.id].stop_reason) == ("preempted", "SIGUSR1")
    finished = sorted(r.slot for r in runs if r.status == "finished")
    assert finished == list(range(8)), [(r.slot, r.status, r.stop_reason) for r in runs]
    assert {r.status for r in runs} == {"finished", "preempted"}
    assert files_holding(tmp_path / "slurm", env["PGPASSWORD"]) == []  # the script and the task logs


def test_a_password_cut_off_from_the_tasks_is_refused_before_submitting():
    """--export narrows the job's environment, the only way the URL's password reaches the tasks."""
    assert slurm.job_environment(None, ("--export=NONE",)) is None  # no password: this environment, as it is
    assert slurm.job_environment("pw", ("--mem=4G",))["PGPASSWORD"] == "pw"
    with pytest.raises(slurm.LaunchError, match=r"~/\.pgpass"):
        slurm.job_environment("pw", ("--export=NONE",))


@pytest.mark.slurm
@needs_slurm
@needs_data
def test_a_url_password_reaches_the_tasks_by_their_environment_and_no_file(tmp_path, postgres_server):
    """`slurm workers postgresql://USER:PASSWORD@...` with no PGPASSWORD anywhere: the tasks work the
    sweep to its end, and the password is in no file (script, logs, run directories)."""
    from sqlalchemy.engine import make_url

    from fcn_sweep.sweep.store import Store

    url = fresh_database(postgres_server)
    name = make_sweep(url, tmp_path / "sweep")
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"} | {"WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", "fcn_sweep", "slurm", "workers", url, "--sweep", name, "--array", "1",
         "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for_job(done.stdout.split()[2].rstrip(":"))
    store = Store(url, name)
    assert sorted(r.status for r in store.runs()) == ["finished", "finished"], tmp_path / "slurm" / "logs"
    store.close()
    assert files_holding(tmp_path, make_url(url).password) == []


@pytest.mark.slurm
@needs_slurm
def test_status_shows_tasks_that_could_not_open_the_store(tmp_path, postgres_server):
    """The password changed between submitting and the tasks' start: each task says so in its log,
    and `fcn-sweep status` repeats it (the store cannot hold what a task could not write to it)."""
    import secrets

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(fresh_database(postgres_server))
    role, old = "r_" + secrets.token_hex(4), secrets.token_hex(8)
    admin = create_engine(url.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{old}' SUPERUSER"))
    as_role = url.set(username=role, password=old).render_as_string(hide_password=False)
    name = make_sweep(as_role, tmp_path / "sweep")
    # Held until the password has changed: the task cannot start before, however slow this machine.
    done = cli("slurm", "workers", as_role, "--sweep", name, "--array", "1", "--out", str(tmp_path),
               "--sbatch-arg=--hold", env={"WANDB_MODE": "disabled"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.split()[2].rstrip(":")
    with admin.connect() as conn:
        conn.execute(text(f"ALTER ROLE {role} PASSWORD '{secrets.token_hex(8)}'"))
    admin.dispose()
    subprocess.run(["scontrol", "release", job], check=True)
    wait_for_job(job)
    status = cli("status", "--store", url.render_as_string(hide_password=False), "--sweep", name)
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.startswith("slurm job"))
    assert "1 task(s) could not work the sweep" in line and "password authentication failed" in line, line
    assert old not in status.stdout
