import json
import math
from dataclasses import replace

import pytest
import torch

from fcn_sweep.config import INITS, OPTIMIZERS, RunConfig
from fcn_sweep.model import build_fcn, load_model
from fcn_sweep.packed import Pack
from fcn_sweep.tracking import RunDirTracker, Tracker, Trackers
from fcn_sweep.train import METRIC_KEYS, evaluate, fit, seed_everything

# A learning rate each optimizer trains well with on the tiny subset.
LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}


def timeless(history):
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in history]


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_smoke_matrix_every_optimizer_init_and_batch_norm(fashion, tiny, tmp_path, optimizer, init, batch_norm):
    cfg = replace(
        tiny,
        epochs=1,
        optimizer=optimizer,
        lr=LR[optimizer],
        init=init,
        batch_norm=batch_norm,
        init_std=0.05,
        dropout=0.1,
    )
    seed_everything(cfg.seed)
    before = evaluate(build_fcn(cfg), fashion.val)[0]
    rundir = RunDirTracker(tmp_path)
    result = fit(cfg, rundir, data=fashion)

    after = result.history[-1]
    assert result.status == "finished"
    assert all(math.isfinite(after[k]) for k in METRIC_KEYS)
    assert after["val/loss"] < before, f"val loss {before:.3f} -> {after['val/loss']:.3f}"
    assert after["val/acc"] > 0.25  # chance is 0.1
    files = {p.name for p in rundir.path.iterdir()}
    assert files == {"config.json", "metrics.jsonl", "summary.json", "model.safetensors"}
    lines = (rundir.path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and set(METRIC_KEYS) <= set(json.loads(lines[0]))


def test_same_config_and_seed_give_identical_metrics(fashion, tiny):
    cfg = replace(tiny, dropout=0.3, batch_norm=True)
    assert timeless(fit(cfg, data=fashion).history) == timeless(fit(cfg, data=fashion).history)
    assert timeless(fit(replace(cfg, seed=1), data=fashion).history) != timeless(fit(cfg, data=fashion).history)


def test_the_kept_model_is_the_best_validation_epoch(fashion, tiny, tmp_path):
    cfg = replace(tiny, epochs=4, optimizer="sgd", lr=0.2, momentum=0.99)  # noisy on purpose
    rundir = RunDirTracker(tmp_path)
    result = fit(cfg, rundir, data=fashion)
    best = max(result.history, key=lambda m: m["val/acc"])
    summary = json.loads((rundir.path / "summary.json").read_text())
    assert summary["best_epoch"] == best["epoch"] == result.best_epoch
    assert summary["best_val_acc"] == best["val/acc"] and summary["test_acc_at_best"] == best["test/acc"]
    assert summary["final_test_acc"] == result.history[-1]["test/acc"]
    model, loaded_cfg = load_model(rundir.path / "model.safetensors")
    assert loaded_cfg == cfg
    assert evaluate(model, fashion.val)[1] == best["val/acc"]
    assert evaluate(model, fashion.test)[1] == best["test/acc"]


def test_a_diverging_run_ends_as_diverged_with_its_metrics(fashion, tiny, tmp_path):
    cfg = replace(tiny, epochs=3, optimizer="sgd", lr=1.0e4, momentum=0.99, init="normal", init_std=10.0)
    rundir = RunDirTracker(tmp_path)
    result = fit(cfg, rundir, data=fashion)
    assert result.status == "diverged"
    assert not math.isfinite(result.history[-1]["train/loss"])
    summary = json.loads((rundir.path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs_run"] == len(result.history)
    assert json.loads((rundir.path / "metrics.jsonl").read_text().splitlines()[-1])["train/loss"] is None


def test_stopping_mid_run_keeps_the_best_model(fashion, tiny, tmp_path):
    events = []

    class Count(Tracker):
        def log_epoch(self, metrics):
            events.append(metrics["epoch"])

    cfg = replace(tiny, epochs=5)
    rundir = RunDirTracker(tmp_path)
    result = fit(cfg, Trackers([rundir, Count()]), data=fashion, should_stop=lambda: len(events) >= 2)
    assert result.status == "stopped" and events == [1, 2]
    assert json.loads((rundir.path / "summary.json").read_text())["status"] == "stopped"
    assert (rundir.path / "model.safetensors").exists()


def test_stop_before_the_first_epoch_ends_writes_no_model(fashion, tiny, tmp_path):
    rundir = RunDirTracker(tmp_path)
    result = fit(tiny, rundir, data=fashion, should_stop=lambda: True)
    assert result.status == "stopped" and result.history == [] and result.best_epoch == 0
    assert not (rundir.path / "model.safetensors").exists()
    assert json.loads((rundir.path / "summary.json").read_text())["best_val_acc"] is None


def test_learning_rate_schedule_is_logged_per_epoch(fashion, tiny):
    result = fit(replace(tiny, epochs=4, schedule="cosine", lr=0.01), data=fashion)
    lrs = [m["lr"] for m in result.history]
    assert lrs[0] == pytest.approx(0.01) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.01 * 0.2


def test_training_improves_over_epochs(fashion, tiny):
    history = fit(replace(tiny, epochs=3), data=fashion).history
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert torch.tensor([m["val/acc"] for m in history]).max() > 0.7


def test_matmul_precision_is_the_runs_own_while_it_trains_and_is_recorded(fashion, tiny, tmp_path):
    """Opt-in TF32: set while the run's pack trains, put back after (it is one flag for the whole
    process), and part of the run's config. A pack holds runs of one precision."""
    high = replace(tiny, epochs=1, matmul_precision="high")
    before, seen = torch.get_float32_matmul_precision(), set()

    def look() -> bool:  # the pack asks before every training step
        seen.add(torch.get_float32_matmul_precision())
        return False

    Pack([high], "cpu").train_epoch(fashion.train, look)
    assert seen == {"high"} and torch.get_float32_matmul_precision() == before == "highest"
    rundir = RunDirTracker(tmp_path)
    assert fit(high, rundir, data=fashion).status == "finished"
    assert torch.get_float32_matmul_precision() == "highest"
    assert json.loads((rundir.path / "config.json").read_text())["matmul_precision"] == "high"
    with pytest.raises(ValueError, match="matmul_precision"):
        Pack([tiny, replace(tiny, matmul_precision="high")], "cpu")


@pytest.mark.slow
def test_the_study_config_reaches_a_normal_fcn_accuracy():
    """The issue's acceptance run: about 3.5 minutes on two CPU cores."""
    cfg = RunConfig.from_args(
        [
            "--epochs=30",
            "--hidden=1024,256",
            "--init=xavier_uniform",
            "--batch_norm=true",
            "--dropout=0.3",
            "--optimizer=adam",
            "--lr=0.001",
        ]
    )
    result = fit(cfg)
    assert result.status == "finished"
    assert result.best["test/acc"] >= 0.885


@pytest.mark.slow
def test_normal_init_without_batch_norm_collapses_as_in_the_study():
    """The study's failure case, reproduced: N(0, 1) weights and no batch norm peak at the first
    epoch near 0.78 and fall to about 0.45-0.5 by epoch 30 (0.78 -> 0.46 with the trainer before the
    one-trainer change, 0.78 -> 0.49 and 0.77 -> 0.49 with it, seeds 0 and 1). About 3 minutes."""
    cfg = RunConfig.from_args(
        ["--epochs=30", "--hidden=1024,256", "--init=normal", "--init_std=1.0", "--batch_norm=false",
         "--dropout=0.2", "--optimizer=adam", "--lr=0.001"]
    )  # fmt: skip
    result = fit(cfg)
    val = [m["val/acc"] for m in result.history]
    assert result.status == "finished" and result.best_epoch <= 3 and 0.72 <= max(val) <= 0.84, val
    assert val[-1] <= max(val) - 0.2, val
