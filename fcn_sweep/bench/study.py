"""A study at the grid's own scale without training it: one real run directory copied once per
config of a sweep file (by default sweeps/grid.yaml, 5,832 configs), its config, metrics and summary
rewritten from a known score model. `fcn-sweep bench report` times the report on it, and the tests
check that the report finds what was built in.

The score model is a few tenths of a point per parameter, plus two interactions that a reader must
be told about: a plain normal init costs 0.02 with batch norm and 0.12 without (init x batch_norm),
and each optimizer wants its own learning rate (optimizer x lr). Everything else adds up, and each
run carries its own noise (one seed per config, as the grid runs them).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig

GRID = Path(__file__).resolve().parents[2] / "sweeps" / "grid.yaml"
BASE = 0.88
NOISE = 0.003  # standard deviation of a config's final val acc around the model's score
JITTER = 0.002  # epoch-to-epoch wobble of val acc late in training
# Additive effects: parameter -> value (as the sweep file writes it) -> change in val acc.
MAIN = {
    "epochs": {20: 0.0, 30: 0.003, 40: 0.005},
    "hidden": {(1024, 256): 0.0, (1024, 512): 0.002, (1024, 128): -0.003},
    "init": {"xavier_uniform": 0.0, "kaiming_uniform": 0.001, "normal": -0.02},
    "batch_norm": {True: 0.01, False: 0.0},
    "dropout": {0.5: -0.01, 0.3: 0.0, 0.2: 0.001, 0.1: -0.002},
    "momentum": {0.9: 0.0, 0.95: 0.001, 0.99: -0.004},
}
NORMAL_WITHOUT_BN = -0.10  # init x batch_norm: what a normal init costs on top without batch norm
OPTIMIZER_LR = {  # optimizer x lr: SGD wants a large rate, Adam and RMSprop a small one
    "sgd": {0.01: 0.0, 0.001: -0.05, 0.0001: -0.15},
    "adam": {0.01: -0.04, 0.001: 0.0, 0.0001: -0.01},
    "rmsprop": {0.01: -0.06, 0.001: -0.005, 0.0001: -0.01},
}
INTERACTIONS = (("init", "batch_norm"), ("optimizer", "lr"))  # what the report must name, and nothing else


def score(values: dict[str, Any]) -> float:
    """The model's best val acc for one config (values as the sweep file writes them)."""
    s = BASE + sum(MAIN[p].get(_key(v), 0.0) for p, v in values.items() if p in MAIN)
    if values.get("init") == "normal" and values.get("batch_norm") is False:
        s += NORMAL_WITHOUT_BN
    return s + OPTIMIZER_LR.get(values.get("optimizer"), {}).get(values.get("lr"), 0.0)


def _key(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def grid(sweep: Path = GRID, levels: int | None = None, whole: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every config of a grid sweep file, its swept values by name; `levels` keeps the first that
    many values of each parameter but those named in `whole` (a smaller study of the same shape)."""
    params = yaml.safe_load(sweep.read_text())["parameters"]
    axes = {p: (spec["values"][: None if p in whole else levels] if "values" in spec else [spec["value"]])
            for p, spec in params.items()}  # fmt: skip
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _params(cfg: RunConfig) -> int:
    widths = [784, *cfg.hidden, 10]
    dense = sum(a * b + b for a, b in itertools.pairwise(widths))
    return dense + (2 * sum(cfg.hidden) if cfg.batch_norm else 0)


def _curve(final: float, epochs: int, rng: random.Random) -> list[float]:
    """Val acc per epoch: a rise that levels off at `final`, with a late-epoch wobble."""
    return [final - 0.12 * math.exp(-e / 3) + rng.gauss(0, JITTER) for e in range(1, epochs + 1)]


def write(template: Path, out: Path, configs: list[dict[str, Any]], seed: int = 0) -> list[Path]:
    """One run directory per config under `out`, made from the real run directory `template`: its
    config with the config's values, a metrics row per epoch with the template's keys, a summary with
    the template's fields. The model file is left out (the report never reads it)."""
    base = json.loads((template / "config.json").read_text())
    row_keys = json.loads((template / "metrics.jsonl").read_text().splitlines()[0]).keys()
    summary0 = json.loads((template / "summary.json").read_text())
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    dirs = []
    for k, values in enumerate(configs):
        cfg = RunConfig.from_dict({**base, **values, "seed": 0})
        vals = _curve(score(values) + rng.gauss(0, NOISE), cfg.epochs, rng)
        rows = []
        for e, v in enumerate(vals, 1):
            loss = 1.5 * (1 - v) + 0.3 / e
            filled = {"epoch": e, "train/loss": loss * 0.9, "train/acc": v + 0.01, "val/loss": loss, "val/acc": v,
                      "test/loss": loss * 1.02, "test/acc": v - 0.005, "lr": cfg.lr}  # fmt: skip
            rows.append({key: filled.get(key, 0.0) for key in row_keys})
        best = max(range(len(vals)), key=vals.__getitem__)
        summary = {**summary0, "run_id": f"synthetic-{k:05d}", "status": "finished", "epochs_run": cfg.epochs,
                   "best_epoch": best + 1, "best_val_acc": vals[best], "test_acc_at_best": vals[best] - 0.005,
                   "final_test_acc": vals[-1] - 0.005, "final_val_acc": vals[-1], "params": _params(cfg),
                   "depth": len(cfg.hidden), "arch": "-".join(map(str, cfg.hidden))}  # fmt: skip
        d = out / summary["run_id"]
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "summary.json").write_text(json.dumps(summary, indent=2))
        dirs.append(d)
    return dirs


# --- fcn-sweep bench report -----------------------------------------------------------------------
def template_run(out: Path) -> Path:
    """One real run directory to copy: a 2-epoch run on a 1,024-image subset, trained as a user would
    (`fcn-sweep train`, a few seconds on a CPU)."""
    import subprocess
    import sys

    args = ["train", "--epochs=2", "--hidden=64", "--subset=1024", "--wandb", "disabled", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "fcn_sweep", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "training failed")
    return next(p for p in out.iterdir() if (p / "summary.json").is_file())


def bench_report(study: Path | None, template: Path | None, levels: int | None, repeats: int) -> list[str]:
    """Seconds for `fcn-sweep report` on a study (by default the grid's 5,832 runs, synthetic), per stage
    and in all, wall clock and CPU, with the page's size: lines for a person."""
    import os
    import tempfile
    import time

    from ..formatting import plural
    from ..report import build

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        tmp = Path(tmp)
        if study is None:
            template = template or template_run(tmp / "template")
            study = tmp / "runs"
            write(template, study, grid(GRID, levels))
        lines = [f"study: {study} ({plural(sum(1 for _ in study.iterdir()), 'entry', 'entries')})"]
        for k in range(repeats):
            stages: dict[str, float] = {}
            load0, wall0, cpu0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
            rep = build(study, tmp / "report", stages=stages)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            parts = ", ".join(f"{name} {s:.1f}" for name, s in stages.items())
            lines.append(
                f"report {k + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU ({parts}); load average {load0:.1f} on "
                f"{os.cpu_count()} cores"
            )
        size = rep.html.stat().st_size
        csv = sum(p.stat().st_size for p in (rep.out / "tables").glob("*.csv"))
        lines.append(f"report.html {size / 1e6:.2f} MB; tables/*.csv {csv / 1e6:.2f} MB; {len(rep.figures)} PNGs")
    return lines
