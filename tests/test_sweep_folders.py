"""Which folder and which sweep a command takes, as a user meets it: a sweep of the same name in
another store, `--name`, a changed sweep file, and a dry run that plans what the real run draws."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fcn_sweep.sweep import estimate
from fcn_sweep.sweep.controller import Controller
from fcn_sweep.sweep.runner import SweepOptions, run_sweep
from fcn_sweep.sweep.spec import load_sweep
from fcn_sweep.sweep.store import Store

from .conftest import cli, needs_data
from .test_local_sweep import sweep_file

QUIET = ("--quiet", "--wandb=disabled")


def local_sweep(tmp_path: Path) -> tuple[Path, Path]:
    """sweeps/tiny.yaml, and its local sweep created (nothing run) in sweeps-out/tiny, as a first
    `fcn-sweep sweep sweeps/tiny.yaml` leaves it."""
    (tmp_path / "sweeps").mkdir()
    path = sweep_file(tmp_path / "sweeps")
    folder = tmp_path / "sweeps-out" / "tiny"
    run_sweep(str(path), str(folder), None, SweepOptions(workers=0))[0].close()
    return path, folder


def one_line_refusal(proc, says: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr


def test_a_sweep_of_the_same_name_in_another_store_does_not_take_the_local_ones_folder(tmp_path):
    path, folder = local_sweep(tmp_path)
    before = (folder / "sweep.yaml").read_text()
    other = "sqlite:///other.db"  # relative to the working directory
    made = cli("sweep", str(path), "--store", other, "--workers", "0", cwd=tmp_path)
    one_line_refusal(made, "--out DIR")
    assert not (tmp_path / "other.db").exists() and (folder / "sweep.yaml").read_text() == before
    made = cli("sweep", str(path), "--store", other, "--workers", "0", "--out", "elsewhere", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    one_line_refusal(cli("report", "--store", other, "--sweep", "tiny", cwd=tmp_path), "--out REPORT_DIR")
    one_line_refusal(cli("worker", other, "--sweep", "tiny", *QUIET, cwd=tmp_path), "--out DIR")
    assert not (folder / "report").exists() and not (folder / "runs").exists()


def test_a_changed_sweep_file_is_refused_naming_what_changed_also_in_a_dry_run(tmp_path):
    path, _ = local_sweep(tmp_path)
    path.write_text(path.read_text().replace("value: 0.01", "value: 0.02"))
    for dry in ((), ("--dry-run",)):
        refused = cli("sweep", str(path), *QUIET, *dry, cwd=tmp_path)
        one_line_refusal(refused, "parameters.lr.value: stored 0.01, file 0.02")


def test_other_options_are_refused_in_a_dry_run_too_and_name_a_way_out(tmp_path):
    path, _ = local_sweep(tmp_path)
    one_line_refusal(cli("sweep", str(path), "--repeats", "2", "--dry-run", cwd=tmp_path), "--name NEW")


@needs_data
def test_name_chooses_a_new_folder_as_the_refusal_advises(tmp_path):
    path, folder = local_sweep(tmp_path)
    before = (folder / "sweep.yaml").read_text()
    one_line_refusal(cli("sweep", str(path), "--repeats", "2", *QUIET, cwd=tmp_path), "--name NEW")
    new = cli("sweep", str(path), "--repeats", "2", "--name", "tiny2", "--count", "1", *QUIET, cwd=tmp_path)
    assert new.returncode == 0, new.stderr
    assert Store.in_dir(tmp_path / "sweeps-out" / "tiny2").info.repeats == 2
    assert (folder / "sweep.yaml").read_text() == before and not (folder / "runs").exists()


@pytest.mark.parametrize("seed", [0, 7])
def test_a_dry_run_of_a_random_order_plans_the_runs_the_real_one_draws(tmp_path, seed):
    sweep = load_sweep(
        sweep_file(
            tmp_path,
            parameters={"hidden": {"values": [[32], [64], [96]]}, "lr": {"values": [0.001 * k for k in range(1, 21)]}},
        )
    )
    store = Store(tmp_path / "s.db")
    store.create_sweep("tiny", sweep, order="random", seed=seed)
    Controller(store).plan()
    drawn = [r.config for r in store.runs()][:12]  # claims take the pending slots in slot order
    planned = estimate.plan(sweep, 1, 12, None, order=("random", seed)).todo
    assert planned == drawn and len({c.hidden for c in planned}) > 1


@needs_data
def test_wandb_offline_as_asked_is_said_so_not_blamed_on_wandb_mode(tmp_path):
    path = sweep_file(tmp_path, parameters={"epochs": {"value": 1}, "subset": {"value": 512}, "lr": {"value": 0.01}})
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    proc = subprocess.run(
        [sys.executable, "-m", "fcn_sweep", "sweep", str(path), "--wandb", "offline", "--quiet", "--out", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "W&B: offline (--wandb offline)" in proc.stderr and "WANDB_MODE" not in proc.stderr
