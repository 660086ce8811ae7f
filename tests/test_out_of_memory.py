"""A pack that does not fit its device: device memory running out is the pack's size, not its
configs' fault. The pack's runs start again in packs of half the size, with one line saying so;
only a run alone that does not fit is its config's error, with what it needs. The error is
simulated (torch's own CUDA out-of-memory exception, raised by the step of any pack larger than
the "device" holds); footprint.py's formula is checked against a pack's own tensors."""

from __future__ import annotations

import torch

from fcn_sweep import packed
from fcn_sweep.cli import main
from fcn_sweep.config import RunConfig
from fcn_sweep.data import load
from fcn_sweep.footprint import parts
from fcn_sweep.optim import PackUpdate
from fcn_sweep.sweep import worker
from fcn_sweep.sweep.claim import train_claim
from fcn_sweep.sweep.controller import Controller

from .conftest import needs_data
from .test_store import new_store

SWEEP = {
    "method": "grid",
    "metric": {"name": "val/acc", "goal": "maximize"},
    "parameters": {"epochs": {"value": 2}, "subset": {"value": 512}, "hidden": {"value": [32]},
                   "seed": {"values": [0, 1, 2, 3]}},
}  # fmt: skip


def device_holding(monkeypatch, members: int) -> None:
    """Make every pack of more than `members` runs fail its first step as CUDA fails an allocation."""
    step = packed.Pack.train_step

    def train_step(self, *args):
        if len(self.cfgs) > members:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(self, *args)

    monkeypatch.setattr(packed.Pack, "train_step", train_step)


def spec_for(tmp_path, pack: int) -> worker.WorkerSpec:
    return worker.WorkerSpec("w0", str(tmp_path / "sweep.db"), "t", str(tmp_path), "cpu", 1, "disabled", "t", pack)


@needs_data
def test_a_pack_out_of_memory_starts_its_runs_again_in_packs_of_half(tmp_path, monkeypatch):
    device_holding(monkeypatch, 2)
    store = new_store(str(tmp_path / "sweep.db"), SWEEP)
    Controller(store).plan()
    said: list[str] = []
    worker.work(spec_for(tmp_path, 4), said.append)
    runs = store.runs()
    oom = [r for r in runs if r.status == "preempted"]
    assert len(oom) == 4 and {r.stop_reason for r in oom} == {"out of memory in a pack of 4"}
    done = store.runs(["finished"])
    assert sorted(r.slot for r in done) == sorted(r.slot for r in oom) and not store.runs(["crashed"])
    assert [line for line in said if "out of memory" in line] == [
        "out of memory on cpu with a pack of 4: its runs start again, in packs of 2"
    ]
    store.close()


@needs_data
def test_a_run_alone_that_does_not_fit_is_its_configs_error_saying_what_it_needs(tmp_path, monkeypatch):
    device_holding(monkeypatch, 0)
    store = new_store(str(tmp_path / "sweep.db"), SWEEP)
    Controller(store).plan()
    spec = spec_for(tmp_path, 1)
    claimed = store.claim_many("w0:1@here", 1, "here")
    data = load("cpu", subset=512)
    train_claim(spec, store, Controller(store), claimed, data, worker.Interrupt(), worker.WandbRuns(spec))
    run = store.get_run(claimed[0].id)
    assert (run.status, run.stop_reason) == ("crashed", "error")
    error = run.summary["error"]
    assert "out of memory on cpu: one run of 32 at batch 64 needs about" in error and "state" in error
    store.close()


def test_train_says_what_a_run_that_does_not_fit_needs(tmp_path, monkeypatch, capsys):
    import fcn_sweep.train

    def fit(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fcn_sweep.train, "fit", fit)
    code = main(["train", "--epochs=1", "--hidden=32", "--subset=512", "--wandb", "disabled", "--quiet",
                 "--out", str(tmp_path)])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert lines[-1].startswith("fcn-sweep train: error: out of memory on cpu: one run of 32 at batch 64 needs")


def test_the_footprint_bounds_a_packs_own_tensors():
    """Parameters, gradients and both moments of a pack, per member, against the formula's `state`:
    within it, and not a loose bound (over 90% of it)."""
    for cfg in (RunConfig(hidden=(1024, 256), batch_norm=True), RunConfig(hidden=(256, 64), batch_size=128)):
        pack = packed.Pack([cfg] * 3, "cpu", update=PackUpdate)
        tensors = [*pack.params, *pack.grads, *pack.moments[0], *pack.moments[1]]
        held = sum(t.numel() * t.element_size() for t in tensors) / 3
        assert 0.9 * parts(cfg)["state"] <= held <= parts(cfg)["state"], (cfg.arch, held, parts(cfg))
