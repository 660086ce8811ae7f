"""`fcn-sweep bench`: where a training step's time goes, measured side by side in one process, and
how far it is from this device's own limit.

Five ways to train the same network (by default 784-1024-256-10 with batch norm, dropout 0.3,
Adam, batch 64) for the same number of steps (`variants`): naive, project, floor, floor+update
and packed at several K. For each: seconds per step and per epoch, the FLOPs of a step and the rate
reached, as a share of a large matrix multiply's rate measured in the same process, and for the
project's trainer the operations one step dispatches (`limits`). Then the ratios, configs per hour
at each K, and what the best K makes of a whole sweep (by default sweeps/grid.yaml), estimated as
its `--dry-run` would (`sweep.estimate`), so the two agree.

`fcn-sweep bench store` measures the sweep store instead (`bench.store`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from .. import kernels, packed
from ..formatting import plural
from .limits import PEAK_SIZE, ops_per_step, peak_flops, step_flops
from .report import Limits, measure, report
from .variants import bench_config, floor_variant, naive_variant, packed_variant

GRID = Path(__file__).resolve().parents[2] / "sweeps" / "grid.yaml"

# Per device kind: what a default run measures. On a CPU a pack of 16 costs what 16 runs alone
# cost, and so does calibrating the sweep at K=16: fewer steps keep a run to about a minute and a
# half at one thread, even on a loaded 2-core machine (docs/speed.md; `cal_steps`: the sweep
# estimate's timed steps per shape, the dry run's 24 on a GPU). A GPU is measured where packing pays.
DEFAULTS = {
    "cpu": {"steps": 30, "repeats": 3, "packs": (1, 4, 16), "cal_steps": 8},
    "cuda": {"steps": 200, "repeats": 5, "packs": (1, 16, 128, 512), "cal_steps": 24},
}


def bench(
    device: torch.device,
    steps: int | None = None,
    repeats: int | None = None,
    packs: tuple[int, ...] | None = None,
    hidden: tuple[int, ...] = (1024, 256),
    epochs: int = 20,
    data_dir: str | None = None,
    sweep_file: Path | None = GRID,
    precision: str = "highest",
    bn: str | None = None,
    update: str | None = None,
) -> list[str]:
    """The bench's lines; `bn`: the batch norm of kernels.BN_IMPLS every pack uses, `update`: the
    update of packed.UPDATE_IMPLS (None: the device's default for either), the sweep estimate's
    calibration included."""
    with packed.defaults(device.type, update, bn):
        bn, update = packed.bn_name(device.type), packed.update_name(device.type)
        return _bench(device, steps, repeats, packs, hidden, epochs, data_dir, sweep_file, precision, bn, update)


def _bench(device, steps, repeats, packs, hidden, epochs, data_dir, sweep_file, precision, bn, update) -> list[str]:
    defaults = DEFAULTS[device.type]
    steps, repeats = steps or defaults["steps"], repeats or defaults["repeats"]
    packs = packs or defaults["packs"]
    cfg = bench_config(hidden, precision)
    data = data_mod.load(device, data_dir=data_dir)
    variants = {
        "naive": naive_variant(cfg, device, steps, data_dir),
        "project": packed_variant(cfg, data, steps, 1),  # a run alone is a pack of one
        "floor": floor_variant(cfg, data, steps),
        "floor+update": floor_variant(cfg, data, steps, update=True),
        **{f"packed {k}": packed_variant(cfg, data, steps, k) for k in packs if k > 1},
    }
    with kernels.matmul_precision(precision):  # every variant's products alike; the peak stays fp32's
        times = measure(variants, repeats)
    limits = Limits(
        peak_flops(device),
        PEAK_SIZE[device.type],
        lambda k: step_flops(cfg.hidden, cfg.batch_size, k),
        {name: ops_per_step(v.pack, data.train, cfg.batch_size) for name, v in variants.items() if v.pack},
    )
    header = (
        f"fcn-sweep bench: {cfg.arch} batch norm ({bn}), dropout {cfg.dropout}, {cfg.optimizer} ({update}), "
        f"batch {cfg.batch_size}, "
        f"matmul precision {precision}; "
        f"{steps} steps x {repeats} repeats (median) on {device}, torch {torch.__version__}, "
        f"{plural(torch.get_num_threads(), 'CPU thread')}"
    )
    lines, best = report(times, {name: v.k for name, v in variants.items()}, steps, cfg, epochs, limits)
    return [header, *lines, sweep_estimate(sweep_file, device, best, defaults["cal_steps"])]


def sweep_estimate(sweep_file: Path | None, device: torch.device, pack: int, cal_steps: int) -> str:
    """One line: the wall time of `sweep_file` on this device, one worker, `--pack pack`, from the
    same plan, calibration and schedule as `fcn-sweep sweep FILE --dry-run --pack K --workers 1`
    (calibrated on `cal_steps` timed steps per shape)."""
    if sweep_file is None:
        return "no sweep estimated (--sweep none)"
    if not sweep_file.is_file():
        return f"no sweep estimated: {sweep_file} not found (give --sweep FILE)"
    from ..formatting import duration
    from ..sweep import estimate
    from ..sweep.spec import load_sweep

    plan = estimate.plan(load_sweep(str(sweep_file)))
    threads = torch.get_num_threads()
    cal = estimate.calibrate(plan.todo, str(device), threads, pack, cal_steps)
    e = estimate.schedule(plan.todo, cal, 1, 1, pack)
    epochs = sum(c.epochs for c in plan.todo)
    try:
        shown = sweep_file.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = sweep_file.name
    return (
        f"{shown}: {len(plan.todo):,} runs, {epochs:,} epochs at --pack {pack} on this {device.type} "
        f"(one worker, {threads} thread(s)): wall {duration(e.wall_s)}, {epochs / e.busy_s * 3600:,.0f} epochs/hour "
        f"(its --dry-run's estimate, {cal_steps} timed steps per shape)"
    )
