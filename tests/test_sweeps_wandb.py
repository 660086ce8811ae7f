"""The W&B path: sweep files the engine accepts, and the process `wandb agent` starts, end to end.

No fake server: proposals come from W&B's own sweep engine (`sweeps`), the command is expanded with
W&B's own agent helpers, the run logs offline with W&B's own client, and its transaction log is read
back with W&B's protobufs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sweeps
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args
from wandb.sdk.lib.config_util import save_config_file_from_dict

from fcn_sweep.config import RunConfig

from . import processes
from .conftest import REPO, needs_data
from .wandb_records import OfflineRun, ended_stopped_with_its_model
from .wandb_server import AgentServer

SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))
BIN = Path(sys.executable).parent


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_is_valid_for_the_engine_and_for_runconfig(path):
    cfg = load(path)
    assert sweeps.schema_violations_from_proposed_config(cfg) == []
    assert cfg["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert cfg["command"][1:3] == ["fcn-sweep", "train"] and "${args}" in cfg["command"]
    fields = {name for name, *_ in RunConfig.describe()}
    assert set(cfg["parameters"]) <= fields
    # Every value the engine may propose must pass RunConfig: the listed values, and samples of ranges.
    for name, spec in cfg["parameters"].items():
        for value in spec.get("values", [spec["value"]] if "value" in spec else []):
            RunConfig.from_dict({name: value})
    sampler = {**copy.deepcopy(cfg), "method": "random"}
    sampler.pop("early_terminate", None)
    for proposal in sweeps.next_runs(sampler, [], n=50):
        RunConfig.from_dict({k: v["value"] for k, v in proposal.config.items()})


def test_the_grid_enumerates_the_studys_5832_distinct_configs():
    grid = load(REPO / "sweeps" / "grid.yaml")
    proposals = [r for r in sweeps.next_runs(grid, [], n=6000) if r is not None]
    configs = {RunConfig.from_dict({k: v["value"] for k, v in r.config.items()}) for r in proposals}
    assert len(proposals) == len(configs) == 5832


def plain(proposal: sweeps.SweepRun) -> sweeps.SweepRun:
    """The proposal as the W&B server would send it: JSON values, not numpy scalars."""
    config = json.loads(json.dumps(proposal.config, default=lambda v: v.item()))
    return proposal.model_copy(update={"config": config})


def agent_command(sweep: dict, proposal: sweeps.SweepRun) -> list[str]:
    """The argv `wandb agent` would start for this proposal (as in wandb_agent.Agent._command_run)."""
    sweep_vars = create_sweep_command_args({"args": proposal.config})
    sweep_vars.update(interpreter=["python"], program=[sweep.get("program", "")], env=["/usr/bin/env"])
    argv: list[str] = []
    for chunk in create_sweep_command(copy.deepcopy(sweep["command"])):
        chunk = str(chunk)
        argv += sweep_vars.get(chunk[2:-1]) or [] if chunk.startswith("${") else [chunk]
    return argv


def agent_env(tmp_path: Path, proposal: sweeps.SweepRun, run_id: str) -> dict[str, str]:
    """What `wandb agent` puts in the environment of the process it starts."""
    param_path = tmp_path / "wandb" / "sweep-test" / f"config-{run_id}.yaml"
    param_path.parent.mkdir(parents=True)
    save_config_file_from_dict(str(param_path), proposal.config)
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "WANDB_MODE": "offline",
        "WANDB_SWEEP_ID": "test",
        "WANDB_RUN_ID": run_id,
        "WANDB_SWEEP_PARAM_PATH": str(param_path),
        "WANDB_PROJECT": "fcn-sweep-tests",
    }


def shrink(sweep: dict) -> dict:
    """The same sweep on a tiny budget: one epoch on 256 images, so every file runs in seconds."""
    small = copy.deepcopy(sweep)
    small["parameters"]["epochs"] = {"value": 1}
    small["parameters"]["subset"] = {"value": 256}
    return small


@needs_data
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_the_process_wandb_agent_starts_trains_and_logs_the_proposed_config(tmp_path, path):
    sweep = shrink(load(path))
    (proposal,) = map(plain, sweeps.next_runs(sweep, [], n=1))
    run_id = f"agent{path.stem}"
    argv = agent_command(sweep, proposal)
    assert argv[:3] == ["/usr/bin/env", "fcn-sweep", "train"]
    proc = subprocess.run(
        argv, cwd=tmp_path, env=agent_env(tmp_path, proposal, run_id), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]

    run_dir = tmp_path / "runs" / run_id
    proposed = {k: v["value"] for k, v in proposal.config.items()}
    assert {k: v for k, v in yaml.safe_load((run_dir / "config.json").read_text()).items() if k in proposed} == (
        proposed
    )
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    logged = OfflineRun(offline)
    assert logged.run.run_id == run_id
    for key, value in proposed.items():
        assert logged.config[key] == value, key
    cfg = RunConfig.from_dict(proposed)
    assert logged.config["depth"] == cfg.depth and logged.config["arch"] == cfg.arch
    assert logged.config["width_1"] == cfg.hidden[0]
    (epoch,) = [row for row in logged.history if "val/acc" in row]
    assert epoch["epoch"] == 1 and {"train/loss", "train/acc", "val/loss", "test/loss", "test/acc", "lr"} <= set(epoch)
    assert logged.summary["status"] == "finished"
    # The objective W&B's sweep controller reads is a number in the summary, the best epoch's.
    assert logged.summary["best_val_acc"] == epoch["val/acc"] == logged.summary["val/acc"]
    # What the agent's log gets from a run: no progress bar redrawn into it, no requirements.txt built.
    assert "\r" not in proc.stderr and "epoch/s" not in proc.stderr, proc.stderr[-2000:]
    assert not (offline / "files" / "requirements.txt").exists()
    assert logged.summary["test_acc_at_best"] == epoch["test/acc"] and logged.summary["params"] > 0
    (artifact,) = logged.artifacts
    assert artifact.type == "model" and set(artifact.aliases) >= {"best", "latest"}
    assert {f.path for f in artifact.manifest.contents} == {"model.safetensors", "config.json"}


@needs_data
def test_sigterm_stops_the_run_promptly_and_keeps_the_best_model(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fcn_sweep",
            "train",
            "--epochs=200",
            "--hidden=256",
            "--subset=4096",
            "--quiet",
            "--wandb=offline",
            "--out",
            str(tmp_path),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def term_after_two_epochs() -> int | None:
        """SIGTERM sent while the process is frozen, once two epochs are logged: the epochs logged then."""
        run_dirs = list(tmp_path.glob("2*"))
        if not run_dirs or processes.epochs_logged(run_dirs[0]) < 2:
            return None
        with processes.frozen([proc.pid]):
            proc.send_signal(signal.SIGTERM)
            return processes.epochs_logged(run_dirs[0])

    try:
        logged = processes.wait_until(term_after_two_epochs, "the run to finish two epochs")
        _, err = proc.communicate(timeout=processes.HANG_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    (run_dir,) = tmp_path.glob("2*")
    summary = yaml.safe_load((run_dir / "summary.json").read_text())
    # Promptly: in the epoch it was in (or, caught between an epoch's last batch and its log line, the next).
    assert summary["status"] == "stopped" and logged <= summary["epochs_run"] <= logged + 1, (logged, summary)
    assert (run_dir / "model.safetensors").exists()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    logged = OfflineRun(offline)
    assert logged.summary["status"] == "stopped"
    # The summary's objective is the best epoch's number, not the last epoch's nor {"max": ...}.
    assert logged.summary["val/acc"] == max(row["val/acc"] for row in logged.history if "val/acc" in row)


def test_a_run_under_wandb_agent_leaves_its_project_to_the_sweep_and_skips_requirements(tmp_path, monkeypatch):
    """W&B ignores a project given to `wandb.init` inside a sweep, with a warning in every run's log
    (silenced offline, so the call itself is watched); and sweep runs share one environment, so
    none builds requirements.txt or saves code."""
    import wandb

    from fcn_sweep import tracking

    calls = []
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: calls.append(kw) or real_init(**kw))
    for name, value in {"WANDB_SWEEP_ID": "test", "WANDB_RUN_ID": "insweep", "WANDB_PROJECT": "swept"}.items():
        monkeypatch.setenv(name, value)
    tracking.teardown_wandb()  # W&B reads the environment when it sets up: as a fresh agent-started process
    rundir = tracking.RunDirTracker(tmp_path, "insweep")
    rundir.start(RunConfig(), {})
    tracker = tracking.WandbTracker(rundir, "offline", project="mine")
    tracker.start(RunConfig(), {"params": 1, "device": "cpu"})
    try:
        (kw,) = calls
        assert kw["project"] is None and tracker.run.project == "swept" and tracker.run.id == "insweep"
        assert kw["settings"].x_save_requirements is False and kw["settings"].save_code is False
    finally:
        tracker.run.finish()
        tracking.teardown_wandb()
    assert not list(tmp_path.rglob("requirements.txt"))


@needs_data
def test_offline_by_default_with_one_sync_line_and_the_api_key_written_nowhere(tmp_path):
    secret = "0123456789abcdef0123456789abcdef01234567"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fcn_sweep",
            "train",
            "--epochs=1",
            "--hidden=32",
            "--subset=256",
            "--quiet",
            "--wandb=offline",
            "--out",
            str(tmp_path / "runs"),
        ],
        cwd=tmp_path,
        env={**env, "WANDB_API_KEY": secret, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    sync_lines = [line for line in proc.stderr.splitlines() if "wandb sync" in line]
    assert len(sync_lines) == 1
    target = sync_lines[0].split("wandb sync ", 1)[1]
    assert Path(target).is_dir() and list(Path(target).glob("run-*.wandb"))
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_auto_mode_is_offline_without_credentials_and_respects_wandb_mode(tmp_path, monkeypatch):
    from fcn_sweep.tracking import resolve_wandb_mode

    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_mode("auto")[0] == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert resolve_wandb_mode("auto") == ("online", None)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == ("disabled", None)
    assert resolve_wandb_mode("offline") == ("offline", None)


STUB_AGENT = """#!/usr/bin/env bash
# Stands in for fcn-sweep: records how it was started, then trains until told to stop.
echo "$CUDA_VISIBLE_DEVICES $*" >> "$RECORD"
trap 'echo stopped >> "$RECORD"; exit 0' TERM
while true; do sleep 0.1; done
"""


@pytest.mark.parametrize(
    ("args", "agent"),
    [
        (["--per-gpu", "2"], "wandb-agent --count 5 me/proj/abc123"),  # M plain agents per GPU
        # one packed agent per GPU, with its share of the CPUs
        (
            ["--pack", "auto"],
            f"wandb-agent --pack auto --threads {max(1, len(os.sched_getaffinity(0)) // 2)} --count 5 me/proj/abc123",
        ),
    ],
    ids=["per-gpu", "pack"],
)
def test_launch_agents_starts_the_agents_on_each_gpu_and_ctrl_c_stops_them_all(tmp_path, args, agent):
    stub = tmp_path / "fcn-sweep-stub"
    stub.write_text(STUB_AGENT)
    stub.chmod(0o755)
    record = tmp_path / "record.txt"
    per_gpu = 2 if "--per-gpu" in args else 1
    launcher = subprocess.Popen(
        [
            str(REPO / "scripts" / "launch_agents.sh"),
            "me/proj/abc123",
            "--gpus",
            "0,1",
            *args,
            "--count",
            "5",
            "--logs",
            str(tmp_path / "logs"),
        ],
        env={**os.environ, "FCN_SWEEP": str(stub), "RECORD": str(record)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    n = 2 * per_gpu
    all_started = lambda: record.exists() and len(record.read_text().splitlines()) >= n  # noqa: E731
    try:
        processes.wait_until(all_started, f"{n} agents to start")
    except BaseException:
        launcher.kill()
        raise
    started = sorted(record.read_text().splitlines())
    assert started == [f"0 {agent}"] * per_gpu + [f"1 {agent}"] * per_gpu
    assert len(list((tmp_path / "logs").glob("agent-*.log"))) == n
    launcher.send_signal(signal.SIGINT)
    launcher.communicate(timeout=processes.HANG_S)
    assert launcher.returncode == 130
    assert record.read_text().splitlines().count("stopped") == n


@needs_data
def kill_what_is_left(launcher: subprocess.Popen, started: set[int]) -> None:
    """After a failed test: the launcher and whatever it started, so that nothing outlives the test."""
    for pid in {launcher.pid, *started, *processes.descendants(launcher.pid)}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def launch(server: AgentServer, tmp_path: Path, *args: str) -> subprocess.Popen:
    """launch_agents.sh for the stand-in's sweep on "GPU" 0 (the CPU here), its runs logged offline."""
    env = {
        **os.environ,
        "WANDB_BASE_URL": server.url,
        "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
        "WANDB_MODE": "offline",
        "FCN_SWEEP": str(BIN / "fcn-sweep"),
        "FCN_SWEEP_OUT": str(tmp_path / "runs"),
        "FCN_SWEEP_AGENT_POLL_S": "0.5",
    }
    command = [str(REPO / "scripts" / "launch_agents.sh"), "me/proj/abc123", "--gpus", "0", *args]
    return subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_launch_agents_sigterm_with_a_run_in_flight_stops_the_run_and_leaves_nothing_running(tmp_path):
    """The launcher's real chain: launch_agents.sh -> fcn-sweep wandb-agent (W&B's own `wandb agent`,
    against the local stand-in of W&B's agent API) -> the `fcn-sweep train` it starts in a process
    group of its own. SIGTERM to the launcher must reach that run, which ends `stopped` with its
    best model, and nothing the launcher started may outlive it."""
    sweep = load(REPO / "sweeps" / "smoke.yaml")
    params = {"epochs": 200, "hidden": [256], "subset": 4096}
    run_dir = tmp_path / "runs" / "inflight"
    with AgentServer(sweep, [("inflight", params)]) as server:
        launcher = launch(server, tmp_path, "--logs", "logs")
        started: set[int] = set()
        try:
            processes.wait_until(lambda: processes.epochs_logged(run_dir) >= 1, "the run to train an epoch")
            started = processes.descendants(launcher.pid)
            (run,) = [p for p in started if b"train" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
            # Frozen until the launcher's signal has come through to it, so it is still mid-run then.
            # (Had the agent died without passing the signal on, the kernel's SIGHUP to a stopped,
            # orphaned process group would end the frozen run with no summary; unfrozen, as in the
            # issue's report, it trains on to its last epoch. Either way this test fails.)
            with processes.frozen([run]):
                assert processes.still_training(run_dir, params["epochs"])
                launcher.send_signal(signal.SIGTERM)
                processes.wait_until(lambda: processes.pending(run, signal.SIGTERM), "SIGTERM to reach the run")
            _, err = launcher.communicate(timeout=processes.HANG_S)
        finally:
            kill_what_is_left(launcher, started)
    assert "stopping 1 agent(s)" in err
    assert not [pid for pid in started if processes.alive(pid)], "processes the launcher started outlived it"
    ended_stopped_with_its_model(run_dir, params["epochs"])


@needs_data
def test_launch_agents_pack_sigterm_stops_every_run_of_the_pack_and_leaves_nothing_running(tmp_path):
    """`launch_agents.sh --pack 2`: one `fcn-sweep wandb-agent --pack 2` on the GPU, holding the two
    runs the stand-in hands out and training them as one pack. SIGTERM to the launcher mid-pack ends
    both runs `stopped` with their best models, and nothing the launcher started outlives it."""
    sweep = load(REPO / "sweeps" / "smoke.yaml")
    params = {"epochs": 200, "hidden": [256], "subset": 4096}
    run_ids = ["packa", "packb"]
    run_dirs = [tmp_path / "runs" / r for r in run_ids]
    with AgentServer(sweep, [(r, params) for r in run_ids], sweep_id="abc123") as server:
        launcher = launch(server, tmp_path, "--pack", "2")
        started: set[int] = set()
        try:
            both = lambda: all(processes.epochs_logged(d) >= 1 for d in run_dirs)  # noqa: E731
            processes.wait_until(both, "both members of the pack to train an epoch")
            started = processes.descendants(launcher.pid)
            (agent,) = [p for p in started if b"wandb-agent" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]
            # Frozen until the launcher's signal has come through, so that both runs are mid-run then.
            with processes.frozen([agent]):
                assert all(processes.still_training(d, params["epochs"]) for d in run_dirs)
                launcher.send_signal(signal.SIGTERM)
                processes.wait_until(lambda: processes.pending(agent, signal.SIGTERM), "SIGTERM to reach the agent")
            _, err = launcher.communicate(timeout=processes.HANG_S)
        finally:
            kill_what_is_left(launcher, started)
    log = (tmp_path / "logs" / "agents" / "agent-0-1.log").read_text()
    assert launcher.returncode == 130 and "stopping 1 agent(s)" in err, err
    assert "training 2 run(s) of 256: packa, packb" in log, log
    assert not [pid for pid in started if processes.alive(pid)], "processes the launcher started outlived it"
    for run_dir in run_dirs:
        ended_stopped_with_its_model(run_dir, params["epochs"])


STUB_DOCKER = """#!/usr/bin/env bash
# Stands in for the docker client: records its arguments and the W&B values it would hand to the
# container (docker reads each `-e NAME` from its own environment), then runs until told to stop.
{ printf '%s\\n' "$@"; echo "--- env"; env | grep '^WANDB_' | sort; } > "$RECORD.part"
mv "$RECORD.part" "$RECORD"  # whole, or not there yet
trap 'exit 0' TERM
while true; do sleep 0.1; done
"""


@pytest.mark.parametrize("pack", [[], ["--pack", "4"]], ids=["plain", "pack"])
def test_launch_agents_docker_passes_the_wandb_server_and_key_by_name_only(tmp_path, pack):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(STUB_DOCKER)
    (bindir / "docker").chmod(0o755)
    record = tmp_path / "record.txt"
    secret = "0123456789abcdef0123456789abcdef01234567"
    wandb_env = {
        "WANDB_API_KEY": secret,
        "WANDB_BASE_URL": "https://wandb.example.org",
        "WANDB_ENTITY": "me",
        "WANDB_PROJECT": "proj",
    }
    launcher = subprocess.Popen(
        [
            str(REPO / "scripts" / "launch_agents.sh"),
            "me/proj/abc123",
            "--gpus",
            "0",
            *pack,
            "--docker",
            "fcn-sweep:test",
        ],
        env={**os.environ, **wandb_env, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        processes.wait_until(record.exists, "docker run to start")
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.communicate(timeout=processes.HANG_S)
    argv, env = record.read_text().split("--- env\n")
    argv = argv.splitlines()
    threads = ["--threads", str(len(os.sched_getaffinity(0)))] if pack else []
    assert argv[argv.index("fcn-sweep:test") + 1 :] == ["wandb-agent", *pack, *threads, "me/proj/abc123"]
    passed = {argv[i + 1] for i, a in enumerate(argv) if a == "-e"}
    assert set(wandb_env) <= passed  # each by name: the container gets the value docker was given
    assert {f"{k}={v}" for k, v in wandb_env.items()} <= set(env.splitlines())
    assert secret not in "\n".join(argv)  # never on a command line (ps), nor in the agent's log
    assert all(secret not in f.read_text() for f in (tmp_path / "logs").rglob("*.log"))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "usage"),
        (["s", "--per-gpu", "0"], "--per-gpu"),
        (["s", "--pack", "0"], "--pack must be a positive integer or auto, got '0'"),
        (["s", "--pack", "many"], "--pack must be a positive integer or auto, got 'many'"),
        (["s", "--pack", "2", "--per-gpu", "2"], "--per-gpu 2 needs --pack 1"),
        (["s", "--pack"], "usage"),
        (["s", "--gpus", "a"], "--gpus"),
        (["s", "--x", "1"], "usage"),
    ],
)
def test_launch_agents_rejects_bad_arguments(args, says):
    proc = subprocess.run([str(REPO / "scripts" / "launch_agents.sh"), *args], capture_output=True, text=True)
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
