"""W&B's agent calls (tracking/wandb_agent_calls.py, not public API) and the packed agent on the oldest
and the newest wandb pyproject.toml admits: the venv's wandb in this process, and the floor's, which
scripts/wandb_oldest.sh installs in .venv/wandb-oldest, in a process with that folder first on
PYTHONPATH. Without that folder the oldest's tests skip, except in CI (CI=true), where they fail.

W&B's client code is unmodified; the server is the loopback stand-in (tests/wandb_server.py), and
the runs log offline, read back with W&B's protobufs (tests/wandb_records.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import wandb
from packaging.requirements import Requirement

from fcn_sweep.sweep.worker import this_host
from fcn_sweep.tracking import wandb_agent_calls
from fcn_sweep.tracking.wandb_agent_calls import AgentCalls, AgentCallsChanged, SweepPath

from . import agent_calls_probe, processes
from .conftest import REPO, needs_data
from .wandb_records import OfflineRun
from .wandb_server import AgentServer

OLDEST_DIR = REPO / ".venv" / "wandb-oldest"
KEY = "0123456789abcdef0123456789abcdef01234567"  # any 40 characters: the stand-in checks none
# Two runs of one shape (one pack), two epochs each on 1,024 images: seconds on two cores.
SWEEP = {
    "name": "oldest",
    "method": "grid",
    "metric": {"name": "val/acc", "goal": "maximize"},
    "parameters": {
        "epochs": {"value": 2},
        "subset": {"value": 1024},
        "hidden": {"value": [64, 32]},
        "batch_size": {"value": 64},
        "optimizer": {"values": ["adam", "sgd"]},
        "lr": {"value": 0.01},
    },
}


def wandb_floor() -> str:
    """X of pyproject.toml's "wandb>=X"."""
    (dependency,) = re.findall(r'^\s*"(wandb\b[^"]*)"', (REPO / "pyproject.toml").read_text(), re.M)
    (spec,) = Requirement(dependency).specifier
    assert spec.operator == ">=", f"pyproject.toml's wandb dependency is {dependency!r}, not a floor"
    return spec.version


@pytest.fixture(scope="module")
def oldest() -> Path:
    floor = wandb_floor()
    if not (OLDEST_DIR / f"wandb-{floor}.dist-info").is_dir():
        why = f"wandb {floor}, pyproject.toml's floor, is not in {OLDEST_DIR}: run scripts/wandb_oldest.sh"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(why)
        pytest.skip(why)
    return OLDEST_DIR


def env_for(url: str, wandb_dir: Path | None) -> dict[str, str]:
    """A process that talks to the stand-in at `url`, with the wandb in `wandb_dir` (None: the venv's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    path = [str(wandb_dir)] if wandb_dir else []
    env.update(
        WANDB_BASE_URL=url,
        WANDB_API_KEY=KEY,
        WANDB_MODE="offline",
        FCN_SWEEP_AGENT_POLL_S="0.5",
        PYTHONPATH=os.pathsep.join([*path, str(REPO)]),
    )
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=processes.HANG_S
    )


def test_the_tested_oldest_wandb_is_pyprojects_floor():
    assert wandb_agent_calls.TESTED[0] == wandb_floor()


def check_probe(answers: dict) -> None:
    assert answers["config"]["parameters"] == SWEEP["parameters"]
    assert answers["agents"] == ["agent-1", "agent-2"]
    (command,) = answers["handed"]
    assert command["type"] == "run" and command["run_id"] == "run000"
    assert {k: v["value"] for k, v in command["args"].items()}["optimizer"] == "adam"
    assert answers["held"] == []  # a held run, and nothing to say about it
    assert answers["not_found"] == "no sweep me/proj/nosuch on W&B's server"


def test_agent_calls_on_this_wandb(monkeypatch, wandb_in_this_process):
    with AgentServer(SWEEP, sweep_id="abc123") as server:
        for name in ("WANDB_BASE_URL", "WANDB_API_KEY", "WANDB_MODE"):
            monkeypatch.setenv(name, env_for(server.url, None)[name])
        answers = agent_calls_probe.probe()
    assert answers["wandb"] == wandb.__version__
    check_probe(answers)
    assert server.agents == {"agent-1": "probe-0", "agent-2": "probe-1"}
    assert server.running == {"agent-1": {"run000"}}


def test_agent_calls_on_the_oldest_wandb(tmp_path, oldest):
    with AgentServer(SWEEP, sweep_id="abc123") as server:
        proc = run(["-m", "tests.agent_calls_probe"], env_for(server.url, oldest), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json.loads(proc.stdout.splitlines()[-1])
    assert answers["wandb"] == wandb_floor() and Path(answers["wandb_file"]).is_relative_to(oldest)
    check_probe(answers)
    assert server.agents == {"agent-1": "probe-0", "agent-2": "probe-1"}
    assert server.running == {"agent-1": {"run000"}}


@pytest.mark.parametrize("fake", ["neither", "internal-api-without-calls"])
def test_a_wandb_without_the_agent_calls_says_so_in_one_line_naming_its_version(
    monkeypatch, fake, wandb_in_this_process
):
    agent_calls_probe.hide_agent_calls(monkeypatch.delattr)
    if fake == "internal-api-without-calls":  # an old-style wandb whose InternalApi lost them
        monkeypatch.setattr(sys.modules["wandb.apis"], "InternalApi", type("InternalApi", (), {}), raising=False)
    with pytest.raises(AgentCallsChanged) as raised:
        AgentCalls(SweepPath("me", "proj", "abc123"))
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"wandb {wandb.__version__} changed W&B's agent calls")
    if fake == "internal-api-without-calls":
        assert "InternalApi has no sweep, register_agent, agent_heartbeat" in message


@pytest.mark.parametrize("which", ["this", "oldest"])
def test_the_packed_agent_on_a_wandb_without_the_agent_calls_exits_2_with_one_line(tmp_path, request, which):
    wandb_dir = request.getfixturevalue("oldest") if which == "oldest" else None
    version = wandb_floor() if which == "oldest" else wandb.__version__
    hide_then_run = (
        "import sys; from tests.agent_calls_probe import hide_agent_calls; hide_agent_calls(); "
        "from fcn_sweep.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    with AgentServer(SWEEP, sweep_id="abc123") as server:
        args = ["-c", hide_then_run, "wandb-agent", "me/proj/abc123", "--pack", "2", "--device", "cpu"]
        proc = run(args, env_for(server.url, wandb_dir), tmp_path)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr[-3000:]
    assert f"wandb {version} changed W&B's agent calls" in proc.stderr
    assert server.agents == {} and not list((tmp_path / "runs").glob("*"))


@needs_data
def test_the_packed_agent_trains_a_sweep_on_the_oldest_wandb(tmp_path, oldest):
    with AgentServer(SWEEP, sweep_id="abc123", exit_when_done=True) as server:
        args = ["-m", "fcn_sweep", "wandb-agent", "me/proj/abc123", "--pack", "2", "--device", "cpu", "--threads", "1"]
        proc = run(args, env_for(server.url, oldest), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(server.agents.values()) == [f"{this_host()}-0", f"{this_host()}-1"]
    assert {r: p["optimizer"] for r, (_, p) in server.handed.items()} == {"run000": "adam", "run001": "sgd"}
    assert "training 2 run(s) of 64-32: run000, run001" in proc.stderr, proc.stderr[-3000:]
    assert "2 run(s) in 1 pack(s)" in proc.stderr, proc.stderr[-3000:]
    for run_id, (_, params) in server.handed.items():
        run_dir = tmp_path / "runs" / run_id
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
        (offline,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}")
        logged = OfflineRun(offline)
        assert logged.run.telemetry.cli_version == wandb_floor()  # written by the oldest wandb
        assert logged.run.run_id == run_dir.name == run_id and logged.run.sweep_id == "abc123"
        assert (logged.run.entity, logged.run.project) == ("me", "proj")
        assert {k: logged.config[k] for k in params} == params
        assert [row["epoch"] for row in logged.history if "val/acc" in row] == [1, 2]
        assert logged.summary["status"] == "finished"
        (artifact,) = logged.artifacts
        assert artifact.type == "model" and artifact.name == f"model-{run_id}"
        assert set(artifact.aliases) >= {"best", "latest"}
        assert {f.path for f in artifact.manifest.contents} == {"model.safetensors", "config.json"}
