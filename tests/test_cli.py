"""`fcn-sweep train` as a user meets it: a fresh process, exit codes, what lands on disk."""

import json

import pytest

from .conftest import cli, needs_data

TINY_ARGS = ["--epochs=2", "--hidden=64,32", "--subset=1024", "--quiet"]


@needs_data
def test_train_writes_a_complete_run_directory(tmp_path):
    proc = cli(
        "train",
        *TINY_ARGS,
        "--batch_norm=true",
        "--dropout=0.2",
        "--optimizer=sgd",
        "--lr=0.05",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = tmp_path.iterdir()
    assert str(run_dir) in proc.stdout and "test acc" in proc.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["hidden"], config["optimizer"], config["batch_norm"]) == ([64, 32], "sgd", True)
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in epochs] == [1, 2]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["final_test_acc"] == epochs[-1]["test/acc"]
    assert (run_dir / "model.safetensors").stat().st_size > 4 * (784 * 64)


@needs_data
def test_config_file_then_overrides_and_rerun_from_a_run_directory(tmp_path):
    (tmp_path / "exp.yaml").write_text("epochs: 1\nhidden: [32]\nsubset: 512\nlr: 0.01\noptimizer: rmsprop\n")
    first = cli("train", "--config", str(tmp_path / "exp.yaml"), "--lr=0.002", "--quiet", "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    (run_a,) = (tmp_path / "a").iterdir()
    assert json.loads((run_a / "config.json").read_text())["lr"] == 0.002
    again = cli("train", "--config", str(run_a), "--quiet", "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    (run_b,) = (tmp_path / "b").iterdir()
    metrics = [
        [
            {k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in (run_a, run_b)
    ]
    assert metrics[0] == metrics[1]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--epochs=-3"], "epochs: expected a positive integer"),
        (["--optimzer=adam"], "unknown key 'optimzer'"),
        (["--init=he"], "init: expected one of default, xavier_uniform"),
        (["--device=tpu"], "--device 'tpu'"),
        (["--data-dir=/nonexistent"], "/nonexistent lacks"),
        (["stray"], "unexpected argument 'stray'"),
        (["--config=/nonexistent.yaml"], "cannot read config file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, says):
    proc = cli("train", *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "fcn-sweep: error: the following arguments are required: command; see fcn-sweep --help"),
        (["sweep", "--workers", "x"], "fcn-sweep sweep: error: argument --workers: invalid int value: 'x'"),
        (["slurm", "workers", "d", "--array"], "fcn-sweep slurm workers: error: argument --array: expected one"),
        (["status", "--top", "x"], "fcn-sweep status: error: argument --top: invalid int value"),
    ],
)
def test_what_the_parser_refuses_is_one_line_and_exit_2(args, says):
    """As the README promises for all bad input: no usage block, one line naming the --help to read."""
    proc = cli(*args)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(says) and proc.stderr.strip().endswith("--help"), proc.stderr
