"""Output this process cannot write: exit 2, one line naming the path and the fix, nothing written.
A disk that fills during a run: the run ends `crashed`, its best model kept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import pytest

from fcn_sweep import cli as cli_mod

from .conftest import REPO, needs_data

TINY_ARGS = ["--epochs=2", "--hidden=16", "--subset=512", "--device", "cpu", "--wandb", "disabled", "--quiet"]


def _as_root_without_override(tmp_path):
    """Root, as the tests run, writes anywhere; without CAP_DAC_OVERRIDE it obeys permission bits,
    as a container's uid 1000 does on a directory Docker created as root for a bind mount."""
    owned = tmp_path / "root-owned-mount"
    owned.mkdir()
    shutil.chown(owned, "nobody")
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    probe = subprocess.run([*prefix, "touch", str(owned / "probe")], capture_output=True)
    if not shutil.which("setpriv") or probe.returncode == 0:
        pytest.skip("cannot drop root's permission override here (setpriv)")
    return owned, prefix


@needs_data
@pytest.mark.parametrize("case", ["under a file", "root-owned mount"])
@pytest.mark.parametrize(
    "command",
    [
        lambda out: ["train", "--out", str(out), *TINY_ARGS],
        lambda out: ["sweep", str(REPO / "sweeps" / "smoke.yaml"), "--out", str(out / "s"), "--wandb", "disabled"],
        lambda out: ["report", str(REPO / "tests"), "--out", str(out / "report")],
    ],
    ids=["train", "sweep", "report"],
)
def test_unwritable_output_exits_2_naming_the_path_and_the_fix(tmp_path, case, command):
    if case == "under a file":
        out, prefix = tmp_path / "a-file" / "runs", []
        (tmp_path / "a-file").write_text("not a directory\n")
        says = "is a file, not a directory"
    else:
        out, prefix = _as_root_without_override(tmp_path)
        says = '--user "$(id -u):$(id -g)"'
    before = sorted(tmp_path.rglob("*"))
    proc = subprocess.run([*prefix, sys.executable, "-m", "fcn_sweep", *command(out)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(out) in proc.stderr and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(tmp_path.rglob("*")) == before


@needs_data
def test_a_disk_that_fills_mid_run_ends_it_crashed_with_its_best_model(
    tmp_path, monkeypatch, capsys, disk_full_on_epoch_2
):
    monkeypatch.setattr(cli_mod.train, "stop_on_signals", threading.Event)
    code = cli_mod.main(["train", "--out", str(tmp_path), *TINY_ARGS, "--epochs=4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "crashed" and summary["best_epoch"] in (1, 2)  # not 3 or 4: it stopped
    assert "No space left on device" in err[-1] and "ended crashed" in err[-1], err
    assert f"epoch {summary['best_epoch']}" in err[-1], err
    assert (run / "model.safetensors").exists() and not list(run.glob("*.tmp"))


def test_a_writable_new_directory_passes_and_is_not_created(tmp_path):
    cli_mod.check_writable(tmp_path / "new" / "deeper", "--out")
    assert not (tmp_path / "new").exists()
    with pytest.raises(cli_mod.UsageError, match="is a file"):
        (tmp_path / "f").write_text("")
        cli_mod.check_writable(tmp_path / "f" / "x", "--out")
