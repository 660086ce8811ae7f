"""`fcn-sweep wandb-agent --pack K`: one process holding K runs of a W&B sweep, against a loopback
stand-in of W&B's agent API (tests/wandb_server.py) that W&B's own client talks to unmodified; the
members log offline with W&B's client, and what they logged is read back with W&B's protobufs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from . import processes
from .conftest import REPO, needs_data
from .wandb_records import OfflineRun
from .wandb_server import AgentServer

pytestmark = needs_data
BIN = Path(sys.executable).parent
KEY = "0123456789abcdef0123456789abcdef01234567"
SWEEP = "me/proj/abc123"


def smoke() -> dict:
    return yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())


def agent_env(server: AgentServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {
        **env,
        "WANDB_BASE_URL": server.url,
        "WANDB_API_KEY": KEY,
        "WANDB_MODE": "offline",
        "HOME": str(tmp_path),  # W&B's settings and netrc: this test's own
        "FCN_SWEEP_AGENT_POLL_S": "0.2",
        **extra,
    }


def agent(server: AgentServer, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "fcn-sweep"), "wandb-agent", SWEEP, "--out", str(tmp_path / "runs"), "--device", "cpu", *args],
        env=agent_env(server, tmp_path, **env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=processes.HANG_S)
    finally:
        proc.kill()
    return proc.returncode, err


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def offline(run_dir: Path) -> OfflineRun:
    (path,) = (run_dir / "wandb").glob("offline-run-*")
    return OfflineRun(path)


SGD = {"epochs": 3, "subset": 2048, "hidden": [128], "optimizer": "sgd", "lr": 0.05, "batch_norm": False}


def test_members_are_the_runs_train_gives_alone_each_its_own_wandb_run_and_no_key_written(tmp_path):
    """Three runs of one shape in one pack; each equals the same config trained by `fcn-sweep
    train` alone (metrics, model, W&B config keys, artifact), logged as its own W&B run of the sweep
    even with a `wandb agent`'s run variables left in the environment, and the API key is nowhere."""
    runs = [(f"r{i}", {**SGD, "seed": i, "lr": 0.05 / (i + 1)}) for i in range(3)]
    with AgentServer(smoke(), runs, sweep_id="abc123", exit_when_done=True) as server:
        proc = agent(server, tmp_path, "--pack", "3", "--threads", "1",
                     WANDB_SWEEP_ID="stale", WANDB_RUN_ID="stale-run", OMP_NUM_THREADS="1")  # fmt: skip
        code, err = finish(proc)
    assert code == 0, err
    assert "training 3 run(s) of 128: r0, r1, r2" in err
    assert len(server.agents) == 3 and len(set(server.agents.values())) == 3  # one registered agent per slot
    for run_id, params in runs:
        member = tmp_path / "runs" / run_id
        alone = subprocess.run(
            [str(BIN / "fcn-sweep"), "train", "--from", str(member), "--out", str(tmp_path / "alone"),
             "--device", "cpu", "--wandb", "offline"],
            env={**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}, capture_output=True, text=True,
        )  # fmt: skip
        assert alone.returncode == 0, alone.stderr
        solo = Path(alone.stdout.splitlines()[0])  # the run directory, printed first
        assert json.loads((member / "config.json").read_text()) == json.loads((solo / "config.json").read_text())
        for a, b in zip(metrics(member), metrics(solo), strict=True):
            for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (run_id, key)
        ma, mb = load_file(member / "model.safetensors"), load_file(solo / "model.safetensors")
        assert ma.keys() == mb.keys() and all(torch.allclose(ma[k], mb[k], atol=1e-5) for k in ma)

        w, w_alone = offline(member), offline(solo)
        assert w.run.run_id == run_id and w.run.sweep_id == "abc123", "the member is its own run of the sweep"
        assert (w.run.entity, w.run.project) == ("me", "proj")
        assert {k for k in w.config if not k.startswith("_")} == {k for k in w_alone.config if not k.startswith("_")}
        assert all(w.config[k] == v for k, v in params.items())
        assert [h["epoch"] for h in w.history if "val/acc" in h] == [1, 2, 3]  # val/acc once per epoch
        assert w.summary["status"] == "finished" and w.summary["val/acc"] == summary(member)["best_val_acc"]
        (artifact,) = w.artifacts
        assert artifact.name == f"model-{run_id}" and artifact.type == "model"
        assert sorted(e.path for e in artifact.manifest.contents) == ["config.json", "model.safetensors"]
        assert sorted(artifact.aliases) == ["best", "latest"]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"the API key was written to {path}"
    assert KEY not in err


LONG = {"epochs": 1000, "subset": 1024, "hidden": [64], "optimizer": "adam", "lr": 0.001}


def test_a_stop_ends_one_member_and_exit_ends_the_rest(tmp_path):
    """W&B's `stop` for one run ends that member alone (at the end of its epoch, `stopped`) while the
    others train on; the sweep cancelled (`exit` to every agent) ends them all, and the agent leaves."""
    runs = [(f"m{i}", {**LONG, "seed": i}) for i in range(3)]
    with AgentServer(smoke(), runs, sweep_id="abc123") as server:
        proc = agent(server, tmp_path, "--pack", "3")
        dirs = [tmp_path / "runs" / r for r, _ in runs]
        processes.wait_until(lambda: all(processes.epochs_logged(d) >= 1 for d in dirs), "every member's first epoch")
        server.stop("m1")
        processes.wait_until(lambda: (dirs[1] / "summary.json").exists(), "the stopped member to end")
        assert not (dirs[0] / "summary.json").exists() and not (dirs[2] / "summary.json").exists()
        stopped_at = summary(dirs[1])["epochs_run"]
        processes.wait_until(lambda: processes.epochs_logged(dirs[0]) > stopped_at + 1, "the others to train on")
        server.cancel()
        code, err = finish(proc)
    assert code == 0, err
    assert "leaving (the sweep has no more runs for it)" in err
    for d in dirs:
        s = summary(d)
        assert s["status"] == "stopped" and s["epochs_run"] < LONG["epochs"]
        assert (d / "model.safetensors").exists()
        assert offline(d).summary["status"] == "stopped"
    assert summary(dirs[0])["epochs_run"] > stopped_at


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_ends_every_member_within_a_batch_and_the_agent_exits_0(tmp_path, sig):
    runs = [(f"s{i}", {**LONG, "seed": i}) for i in range(2)]
    with AgentServer(smoke(), runs, sweep_id="abc123") as server:
        proc = agent(server, tmp_path, "--pack", "2")
        dirs = [tmp_path / "runs" / r for r, _ in runs]
        processes.wait_until(lambda: all(processes.epochs_logged(d) >= 1 for d in dirs), "every member's first epoch")
        with processes.frozen([proc.pid]):
            logged = [processes.epochs_logged(d) for d in dirs]
            proc.send_signal(sig)
        code, err = finish(proc)
    assert code == 0, err
    assert f"{sig.name}: the runs in flight ended as stopped" in err
    for d, before in zip(dirs, logged, strict=True):
        s = summary(d)
        # Within a batch: an epoch still training when the signal came is dropped (one whose batches
        # were all done by then is evaluated and kept), and no other starts.
        assert s["status"] == "stopped" and before <= s["epochs_run"] <= before + 1
        assert (d / "model.safetensors").exists() and offline(d).summary["status"] == "stopped"


def test_runs_of_two_shapes_train_as_two_packs_largest_first(tmp_path):
    small = {**SGD, "epochs": 1, "subset": 1024}
    runs = [
        ("a0", {**small, "hidden": [64]}),
        ("b0", small),
        ("b1", {**small, "seed": 1}),
        ("b2", {**small, "seed": 2}),
    ]
    with AgentServer(smoke(), runs, sweep_id="abc123", exit_when_done=True) as server:
        code, err = finish(agent(server, tmp_path, "--pack", "4"))
    assert code == 0, err
    lines = [line for line in err.splitlines() if "training" in line]
    assert lines == [
        "fcn-sweep wandb-agent: training 3 run(s) of 128: b0, b1, b2",
        "fcn-sweep wandb-agent: training 1 run(s) of 64: a0",
    ]
    assert all(summary(tmp_path / "runs" / r)["status"] == "finished" for r, _ in runs)
    assert "4 run(s) in 2 pack(s)" in err


def test_count_limits_the_runs_taken_and_a_bad_run_config_is_not_started(tmp_path):
    small = {**SGD, "epochs": 1, "subset": 1024}
    runs = [("bad", {**small, "optimizer": "lbfgs"}), ("ok0", small), ("ok1", {**small, "seed": 1}), ("ok2", small)]
    with AgentServer(smoke(), runs, sweep_id="abc123") as server:
        code, err = finish(agent(server, tmp_path, "--pack", "2", "--count", "3"))
    assert code == 0, err
    assert "run bad: not started: " in err and "optimizer" in err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ok0", "ok1"]
    assert [r for r, _ in server.fixed] == ["ok2"], "no run beyond --count was taken"


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["me/proj", "--pack", "2"], {}, "ENTITY/PROJECT/SWEEP_ID"),
        ([SWEEP, "--pack", "0"], {}, "--pack must be a positive integer or auto"),
        ([SWEEP, "--pack", "2", "--count", "0"], {}, "--count must be a positive integer"),
        (["me/proj/nosuch", "--pack", "2"], {}, "no sweep me/proj/nosuch"),
        ([SWEEP, "--pack", "2"], {"WANDB_API_KEY": ""}, "no W&B credentials"),
        ([SWEEP, "--pack", "2", "--device", "cuda:7"], {}, "cuda"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_any_training(tmp_path, args, env, says):
    with AgentServer(smoke(), [("never", SGD)], sweep_id="abc123") as server:
        full = agent_env(server, tmp_path, **env)
        command = [str(BIN / "fcn-sweep"), "wandb-agent", *args, "--out", str(tmp_path / "runs")]
        env = {k: v for k, v in full.items() if v}
        out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists() and not server.handed


def test_training_goes_on_while_wandbs_server_is_away_and_the_agent_catches_up(tmp_path):
    """W&B unreachable mid-pack (connections refused): the members train on, every epoch in their
    run directories and their W&B logs; once the server is back the agent hears `exit` and leaves."""
    epochs = 60
    runs = [(f"w{i}", {**SGD, "epochs": epochs, "subset": 1024, "hidden": [64], "seed": i}) for i in range(2)]
    with AgentServer(smoke(), runs, sweep_id="abc123", exit_when_done=True) as server:
        proc = agent(server, tmp_path, "--pack", "2")
        dirs = [tmp_path / "runs" / r for r, _ in runs]
        processes.wait_until(lambda: all(processes.epochs_logged(d) >= 1 for d in dirs), "every member's first epoch")
        with processes.frozen([proc.pid]):
            assert processes.still_training(dirs[0], epochs)
            server.__exit__()  # away: connections refused
        at = processes.epochs_logged(dirs[0])
        processes.wait_until(lambda: processes.epochs_logged(dirs[0]) >= at + 3, "training to go on while W&B is away")
        with processes.frozen([proc.pid]):
            assert processes.still_training(dirs[0], epochs), "the outage must end mid-pack"
            server.back()
        beats = server.heartbeats
        code, err = finish(proc)
    assert code == 0, err
    assert server.heartbeats > beats, "the agent talked to the server again once it was back"
    for d in dirs:
        assert summary(d)["status"] == "finished" and processes.epochs_logged(d) == epochs
        w = offline(d)
        assert [h["epoch"] for h in w.history if "val/acc" in h] == list(range(1, epochs + 1))


def test_a_member_that_diverges_ends_diverged_alone(tmp_path):
    runs = [("calm", {**SGD, "epochs": 2, "subset": 1024}), ("wild", {**SGD, "epochs": 2, "subset": 1024, "lr": 1e6})]
    with AgentServer(smoke(), runs, sweep_id="abc123", exit_when_done=True) as server:
        code, err = finish(agent(server, tmp_path, "--pack", "2"))
    assert code == 0, err
    wild, calm = summary(tmp_path / "runs" / "wild"), summary(tmp_path / "runs" / "calm")
    assert wild["status"] == "diverged" and wild["epochs_run"] == 1
    assert calm["status"] == "finished" and calm["epochs_run"] == 2
    assert offline(tmp_path / "runs" / "wild").summary["status"] == "diverged"


def run_history(out: Path):
    """What W&B's server would hold of each run's history, had the runs logged online."""
    return lambda run_id: metrics(out / run_id) if (out / run_id / "metrics.jsonl").exists() else []


def test_hyperband_stops_from_wandbs_engine_end_those_members_and_the_rest_train_on(tmp_path):
    """W&B's own engine proposes (random) and its Hyperband judges the members' epochs; the runs
    it stops end `stopped` at the end of their epoch while the others train on, in the same pack."""
    sweep = {
        "method": "random",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "run_cap": 4,
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
        "parameters": {
            "hidden": {"value": [64]},
            "epochs": {"value": LONG["epochs"]},
            "subset": {"value": 1024},
            "optimizer": {"value": "sgd"},
            "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
        },
    }
    out = tmp_path / "runs"
    with AgentServer(sweep, sweep_id="abc123", history=run_history(out), exit_when_done=True) as server:
        proc = agent(server, tmp_path, "--pack", "4")
        processes.wait_until(lambda: len(server.handed) == 4 and server.stops_sent, "Hyperband to stop a run")
        stopped = set(server.stops_sent)
        processes.wait_until(lambda: all((out / r / "summary.json").exists() for r in stopped), "the stopped to end")
        training = [r for r in server.handed if r not in server.stops_sent and not (out / r / "summary.json").exists()]
        last = max(summary(out / r)["epochs_run"] for r in stopped)
        processes.wait_until(
            lambda: any(processes.epochs_logged(out / r) > last for r in training), "the rest to go on"
        )
        server.cancel()
        code, err = finish(proc)
    assert code == 0, err
    assert "training 4 run(s) of 64" in err
    assert training, "the members Hyperband did not stop were still training"
    for r in stopped:
        s = summary(out / r)
        assert s["status"] == "stopped" and s["epochs_run"] < LONG["epochs"]
    assert max(summary(out / r)["epochs_run"] for r in training) > last


def test_pack_auto_sizes_the_pack_from_the_sweep_it_reads_from_wandb(tmp_path):
    sweep = {
        "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"epochs": {"value": 1}, "subset": {"value": 1024}, "hidden": {"value": [64]},
                       "seed": {"values": [0, 1, 2]}},
    }  # fmt: skip
    with AgentServer(sweep, sweep_id="abc123", exit_when_done=True) as server:
        code, err = finish(agent(server, tmp_path, "--pack", "auto"))
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if line.startswith("--pack auto: K=")]
    k = int(line.split("K=")[1].split()[0])
    assert 1 <= k <= 3, line  # never more than the sweep's largest group of one shape
    assert len(server.agents) == k
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(server.handed) and len(server.handed) == 3


def test_a_deleted_sweep_lets_the_runs_in_flight_finish_and_the_agent_leave(tmp_path):
    runs = [(f"d{i}", {**SGD, "epochs": 4, "subset": 1024, "seed": i}) for i in range(2)]
    with AgentServer(smoke(), [*runs, ("never", SGD)], sweep_id="abc123") as server:
        proc = agent(server, tmp_path, "--pack", "2")
        dirs = [tmp_path / "runs" / r for r, _ in runs]
        processes.wait_until(lambda: all(processes.epochs_logged(d) >= 1 for d in dirs), "every member's first epoch")
        server.deleted = True
        code, err = finish(proc)
    assert code == 0, err
    assert "sweep me/proj/abc123 was deleted on W&B's server" in err
    assert all(summary(d)["status"] == "finished" for d in dirs)
    assert "never" not in server.handed


def in_process_pack(server: AgentServer, tmp_path: Path, monkeypatch, k: int):
    """Slots of a packed agent in this process, filled from `server`, and what they say."""
    from fcn_sweep.sweep import wandb_agent
    from fcn_sweep.tracking.wandb_agent_calls import AgentCalls, SweepPath

    monkeypatch.setenv("WANDB_BASE_URL", server.url)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    said: list[str] = []
    slots = wandb_agent.Slots(AgentCalls(SweepPath.parse(SWEEP)), k, None, said.append)
    slots.fill(lambda: False)
    spec = wandb_agent.AgentSpec(SweepPath.parse(SWEEP), k, str(tmp_path / "runs"), "cpu", 1, "disabled")
    return slots, spec, said


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory on cpu"),
        (RuntimeError("a bug in one shape"), "RuntimeError: a bug in one shape"),
    ],
)
def test_a_pack_that_fails_ends_its_members_crashed_and_the_agent_goes_on(
    tmp_path, monkeypatch, error, says, wandb_in_this_process
):
    from fcn_sweep import data as data_mod
    from fcn_sweep.packed import Pack
    from fcn_sweep.sweep import wandb_agent
    from fcn_sweep.sweep.worker import Interrupt, WandbRuns

    runs = [(f"f{i}", {**SGD, "epochs": 2, "subset": 1024, "seed": i}) for i in range(2)]
    with AgentServer(smoke(), runs, sweep_id="abc123") as server:
        slots, spec, said = in_process_pack(server, tmp_path, monkeypatch, 2)
        pack = slots.next_pack()

        def fail(self, split, should_stop):
            raise error

        monkeypatch.setattr(Pack, "train_epoch", fail)
        data = data_mod.load("cpu", 1024)
        results = wandb_agent.train_pack(spec, pack, slots, data, Interrupt(), WandbRuns(spec), said.append)
    assert results == []
    assert any(says in line and "f0, f1 crashed" in line for line in said), said
    for run_id, _ in runs:
        s = summary(tmp_path / "runs" / run_id)
        assert s["status"] == "crashed" and s["epochs_run"] == 0 and s["params"] > 0
    oom = isinstance(error, torch.cuda.OutOfMemoryError)
    assert slots.max_pack == (1 if oom else 2), "out of memory halves the next packs; a bug does not"


def test_a_run_waiting_for_a_later_pack_keeps_its_agent_beating_and_can_be_stopped(tmp_path):
    """The run of another shape waits in its slot while the pack trains; its agent still beats, so
    W&B's `stop` for it arrives then, and it is never started."""
    runs = [("a0", LONG), ("a1", {**LONG, "seed": 1}), ("b", {**LONG, "hidden": [32]})]
    with AgentServer(smoke(), runs, sweep_id="abc123") as server:
        proc = agent(server, tmp_path, "--pack", "3")
        dirs = [tmp_path / "runs" / r for r in ("a0", "a1")]
        processes.wait_until(lambda: all(processes.epochs_logged(d) >= 1 for d in dirs), "the pack's first epoch")
        server.stop("b")
        processes.wait_until(lambda: not any(server.queued.values()), "the stop to reach the waiting run's agent")
        assert not any((d / "summary.json").exists() for d in dirs), "the stop arrived while the pack trained"
        server.cancel()
        code, err = finish(proc)
    assert code == 0, err
    assert "run b: stopped by W&B before it started" in err
    assert not (tmp_path / "runs" / "b").exists()
