"""What a sweep will cost before it costs anything: `--dry-run` of `fcn-sweep sweep` and of
`fcn-sweep slurm workers`.

Three steps, each a function that returns values (the caller prints `render`):
  plan       the runs still to do: the grid (or `run_cap` proposals) x repeats, less what the store
             already holds as done. Random and bayes proposals are not known in advance, so their
             shapes come from a seeded sample of the same parameter space.
  calibrate  per distinct shape (the fields that set an epoch's cost), on this machine's device,
             alone and packed `--pack K` at a time: a few dozen timed training steps and one
             evaluation of a slice of the validation set, scaled to the epoch's steps and to the
             validation and test sets. A step costs the same all through an epoch (the same
             shapes, the same kernels), so timing CAL_STEPS of them says what the epoch's
             hundreds cost, in a fraction of the time (the whole-epoch calibration of the grid's
             six shapes took 8 min 40 s at one thread).
  schedule   longest runs first onto the workers that will run them (a task's GPUs, or one worker
             per task on its CPUs), each paying a worker's start-up once: the wall time of the last
             worker, and the allocation (task-hours) the array holds. Only the tasks that fit on
             the partition at once share the work: a task that starts later finds the sweep done.
A worker's start-up (imports, warm-up, data) is this process's own, measured up to the end of
calibration's warm-up: the dry run imports what a worker imports.

An estimate, not a promise: Hyperband (`early_terminate`) only shortens runs, so with it the
figures are an upper bound; a cluster node slower or faster than this machine scales them.
"""

from __future__ import annotations

import heapq
import os
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import RunConfig
from ..formatting import duration
from ..packed import PACK_FIELDS, pack_key
from .spec import engine, params_of

# The fields that set what one epoch costs (a pack's, too); epochs only multiplies it. The optimizer
# changes an epoch's cost by little next to the network's shape.
SHAPE_FIELDS = tuple(f for f in PACK_FIELDS if f != "epochs")
WORKER_START_S = 5.0  # a worker's start-up where this process's own age cannot be read (not Linux)
SAMPLE_SEED = 0


@dataclass(frozen=True)
class Plan:
    name: str
    method: str
    proposals: int | None  # the grid's size or run_cap; None: unbounded
    repeats: int
    done: int  # slots done for good
    todo: list[RunConfig]  # one config per run still to do (a sample for random/bayes)

    @property
    def slots(self) -> int | None:
        return None if self.proposals is None else self.proposals * self.repeats


def plan(
    sweep: dict,
    repeats: int = 1,
    count: int | None = None,
    store=None,
    base: RunConfig | None = None,
    order: tuple[str, int] = ("file", 0),
) -> Plan:
    """The runs to do. `store`: the sweep's store when it exists already (its repeats, its done and
    pending runs count); `count`: at most this many runs (the `--count` of a local sweep); `order`:
    a new grid's `--order` and `--seed`, shuffled as the controller will (`Controller.plan`)."""
    base = base or RunConfig()
    method = sweep["method"]
    info = store.info if store is not None else None
    if info is not None:
        repeats = info.repeats
    if method == "grid":
        proposals = [params_of(r) for r in engine().next_runs(sweep, [], n=10**9) if r is not None]
        cap: int | None = len(proposals)
        if order[0] == "random":
            random.Random(order[1]).shuffle(proposals)  # the controller's shuffle: the slots it will store
    else:
        cap = sweep.get("run_cap")
        n = min(x for x in (cap, count, 256) if x is not None)
        # A seeded random sample of the space stands for the proposals to come (bayes included).
        sampler = {**sweep, "method": "random"}
        import numpy as np

        random.seed(SAMPLE_SEED)
        np.random.seed(SAMPLE_SEED)
        proposals = [params_of(r) for r in engine().next_runs(sampler, [], n=n) if r is not None]
    runs = [
        replace(cfg, seed=cfg.seed + r)
        for cfg in (RunConfig.from_dict(p, base) for p in proposals)
        for r in range(repeats)
    ]
    done = 0
    if store is not None:
        done, _ = store.slots()
        if method == "grid" and info.grid_size is not None:
            runs = [r.config for r in store.runs(["pending", "running"])]
        else:
            runs = runs[done:]
    left = None if cap is None else max(0, cap * repeats - done)
    if count is not None:
        left = count if left is None else min(left, count)
    if left is not None:
        runs = [runs[i % len(runs)] for i in range(left)] if runs else []
    name = info.name if info is not None else str(sweep.get("name") or "sweep")
    return Plan(name, method, cap, repeats, done, runs)


def shape_of(cfg: RunConfig) -> tuple:
    return tuple(getattr(cfg, f) for f in SHAPE_FIELDS)


def pack_groups(configs: Sequence[RunConfig]) -> dict[tuple, list[RunConfig]]:
    """Configs by `pack_key`: what one worker's claim may take together."""
    groups: dict[tuple, list[RunConfig]] = defaultdict(list)
    for cfg in configs:
        groups[pack_key(cfg)].append(cfg)
    return groups


@dataclass
class Calibration:
    device: str
    threads: int
    pack: int
    startup_s: float = WORKER_START_S  # a worker's imports, warm-up and data load
    seconds: dict[tuple, float] = field(default_factory=dict)  # shape -> s/epoch alone
    packed: dict[tuple, tuple[int, float]] = field(default_factory=dict)  # shape -> (members, s/epoch of the pack)
    steps: dict[tuple, tuple[int, int]] = field(default_factory=dict)  # shape -> (steps timed, steps in an epoch)


CAL_STEPS = 24  # timed training steps per shape and packing
WARM_STEPS = 4  # untimed first steps: allocations, first kernel choices (and on CUDA a graph capture)
EVAL_SAMPLES = 1024  # validation images evaluated, scaled to the validation and test sets


def _first(split, n: int):
    return type(split)(split.x[:n], split.y[:n])


def epoch_seconds(cfgs: Sequence[RunConfig], data, steps: int = CAL_STEPS) -> tuple[float, int, int]:
    """(seconds one epoch of `cfgs` takes as one pack, steps timed, steps in the epoch): `steps`
    training steps and one evaluation of EVAL_SAMPLES images, each timed after a warm-up and
    scaled to the epoch and to the validation and test sets. The time covers what `fit` does in
    an epoch (train, then evaluate on both); Pack's results are Python numbers, so each timing
    ends when the device has finished."""
    from .. import data as data_mod
    from ..packed import Pack

    pack = Pack(cfgs, data.device)
    b, never = cfgs[0].batch_size, lambda: False
    epoch_steps = len(data_mod.batch_starts(len(data.train), b))
    timed = max(1, min(steps, len(data.train) // b))
    pack.train_epoch(_first(data.train, min(WARM_STEPS, timed) * b), never)
    t0 = time.perf_counter()
    pack.train_epoch(_first(data.train, timed * b), never)
    step_s = (time.perf_counter() - t0) / timed
    sample = _first(data.val, EVAL_SAMPLES)
    pack.evaluate(sample)
    t0 = time.perf_counter()
    pack.evaluate(sample)
    eval_s = (time.perf_counter() - t0) / len(sample) * (len(data.val) + len(data.test))
    return step_s * epoch_steps + eval_s, timed, epoch_steps


def calibrate(
    configs: Sequence[RunConfig], device: str, threads: int, pack: int, steps: int = CAL_STEPS
) -> Calibration:
    """Per distinct shape, one epoch's seconds alone and (pack > 1) as a pack of as many configs of
    that shape as one claim will take: `pack`, or fewer when the sweep has fewer runs of one
    `pack_key`. Each from `steps` timed steps (`epoch_seconds`)."""
    import torch

    from .. import data as data_mod
    from .worker import warm_up

    torch.set_num_threads(threads)
    cal = Calibration(device, threads, pack)
    shapes: dict[tuple, list[RunConfig]] = defaultdict(list)
    largest: dict[tuple, int] = defaultdict(int)
    for cfgs in pack_groups(configs).values():
        shapes[shape_of(cfgs[0])] += cfgs
        largest[shape_of(cfgs[0])] = max(largest[shape_of(cfgs[0])], len(cfgs))
    warm_up(device, "disabled")  # the first use of torch and the BLAS, which a worker pays in its start-up
    data = {}
    for shape, cfgs in shapes.items():
        cfg = cfgs[0]
        if cfg.subset not in data:
            data[cfg.subset] = data_mod.load(device, cfg.subset)
            if len(data) == 1:
                cal.startup_s = process_age() or WORKER_START_S
        seconds, timed, epoch_steps = epoch_seconds([cfg], data[cfg.subset], steps)
        cal.seconds[shape], cal.steps[shape] = seconds, (timed, epoch_steps)
        members = min(pack, largest[shape])
        if members > 1:
            cfgs = [replace(cfg, seed=cfg.seed + i) for i in range(members)]
            cal.packed[shape] = (members, epoch_seconds(cfgs, data[cfg.subset], steps)[0])
    return cal


def process_age() -> float | None:
    """Seconds since this process started (Linux), None where that cannot be read."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Estimate:
    workers: int  # worker processes in all
    per_task: int  # workers in one task (1 for a local sweep)
    at_once: int  # tasks that run at the same time
    pack: int
    wall_s: float
    task_hours: float
    busy_s: float  # training seconds summed over workers


def schedule(
    todo: Sequence[RunConfig], cal: Calibration, workers: int, per_task: int, pack: int, at_once: int | None = None
) -> Estimate:
    """Longest jobs first onto the least-loaded worker (LPT) of the tasks that run at once (all,
    unless `at_once` says fewer fit). A job is one run, or with `pack` > 1 up to `pack` runs of one
    `pack_key`, costing the calibrated packed epoch."""
    jobs = []
    for cfgs in pack_groups(todo).values():
        shape, epochs = shape_of(cfgs[0]), cfgs[0].epochs
        if pack > 1 and shape in cal.packed:
            members, seconds = cal.packed[shape]
            for start in range(0, len(cfgs), pack):
                # A pack smaller than the calibrated one costs in proportion to its members.
                jobs.append(epochs * seconds * min(pack, len(cfgs) - start) / members)
        else:
            jobs += [epochs * cal.seconds[shape]] * len(cfgs)
    n_tasks = workers // per_task
    running = min(n_tasks, at_once or n_tasks)
    loads = [0.0] * (running * per_task)
    heapq.heapify(loads)
    for job in sorted(jobs, reverse=True):
        heapq.heapreplace(loads, loads[0] + job)
    per_worker = sorted(loads, reverse=True)
    # Tasks end when their last worker does; the busiest workers fill the first tasks.
    tasks = [per_worker[i : i + per_task] for i in range(0, len(per_worker), per_task)]
    task_s = [cal.startup_s + max(t) for t in tasks]
    late = n_tasks - running  # start as others end, find the sweep done, and leave: a start-up each
    wall = max(task_s) + (cal.startup_s if late else 0.0)
    return Estimate(workers, per_task, running, pack, wall, (sum(task_s) + late * cal.startup_s) / 3600, sum(jobs))


def steps_note(cal: Calibration) -> str:
    """`24 timed step(s) of an epoch's 782`; several numbers where shapes differ (a `subset`)."""
    if not cal.steps:
        return "a few timed steps"
    timed = sorted({t for t, _ in cal.steps.values()})
    per_epoch = sorted({e for _, e in cal.steps.values()})
    show = lambda ns: "/".join(f"{n:,}" for n in ns)  # noqa: E731
    return f"{show(timed)} timed step(s) of an epoch's {show(per_epoch)}"


def headline(p: Plan) -> str:
    size = "unbounded (no run_cap)" if p.proposals is None else f"{p.proposals}"
    what = "grid configs" if p.method == "grid" else "proposals (run_cap)"
    epochs = sum(c.epochs for c in p.todo)
    return (
        f"sweep {p.name} ({p.method}): {size} {what} x {p.repeats} repeat(s); {p.done} slot(s) done, "
        f"{len(p.todo):,} run(s) to do, {epochs:,} epochs"
    )


def shape_labels(shapes: Sequence[tuple]) -> dict[tuple, str]:
    """Each shape named by the fields that differ between the shapes (all of them when there is one)."""
    fields = range(len(SHAPE_FIELDS))
    varying = [i for i in fields if len({shape[i] for shape in shapes}) > 1] or list(fields)
    show = lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
    return {shape: " ".join(f"{SHAPE_FIELDS[i]}={show(shape[i])}" for i in varying) for shape in shapes}


def render_plan(p: Plan, pack: int | str, device: str) -> str:
    """The plan alone, where `device` is not on this machine (GPU tasks sized on a cluster's login
    node): runs, epochs and packs per shape; the wall time needs a calibration on that device."""
    by_shape: dict[tuple, list[list[RunConfig]]] = defaultdict(list)
    for cfgs in pack_groups(p.todo).values():
        by_shape[shape_of(cfgs[0])].append(cfgs)
    lines = [headline(p), f"per shape (--pack {pack}):"]
    for shape, label in shape_labels(list(by_shape)).items():
        groups = by_shape[shape]
        runs, epochs = sum(map(len, groups)), sum(c.epochs for g in groups for c in g)
        # auto: each task chooses K on its GPU; a pack never spans two groups of one pack_key.
        packs = (
            f"packs of the K each task chooses, from {len(groups)} group(s) of runs that can share one"
            if pack == "auto"
            else f"{sum(-(-len(g) // pack) for g in groups):,} pack(s) of up to {pack}"
        )
        lines.append(f"  {label}: {runs:,} run(s), {epochs:,} epochs, {packs}")
    lines.append(
        f"wall time: needs {device}, which this machine lacks; run this dry run where the tasks will run "
        "(e.g. srun --gpus-per-task 1 fcn-sweep slurm workers ... --dry-run) for the estimate"
    )
    return "\n".join(lines)


def render(p: Plan, cal: Calibration, estimates: Sequence[Estimate], unit: str = "task") -> str:
    """The dry run's account, for people: what runs, what one epoch costs, and the totals."""
    lines = [
        headline(p),
        f"calibration on {cal.device} ({cal.threads} thread(s)): per shape, {steps_note(cal)} and one "
        f"evaluation of {EVAL_SAMPLES} images, scaled to an epoch and to the validation and test sets:",
    ]
    for shape, label in shape_labels(list(cal.seconds)).items():
        s = cal.seconds[shape]
        members, packed_s = cal.packed.get(shape, (0, 0.0))
        packed = f", {members} packed {packed_s:.2f} s/epoch" if members else ""
        lines.append(f"  {label}: {s:.2f} s/epoch{packed}")
    lines.append(f"worker start-up {cal.startup_s:.1f} s (this process's own imports, warm-up and data load)")
    for e in estimates:
        fit = f", {e.at_once} {unit}(s) at once" if e.at_once < e.workers // e.per_task else ""
        lines.append(
            f"--pack {e.pack}: wall {duration(e.wall_s)} on {e.workers} worker(s) ({e.per_task} per {unit}{fit}), "
            f"{e.task_hours:,.2f} {unit}-hours, {duration(e.busy_s)} of training"
        )
    if p.proposals is None:
        lines.append("the sweep has no run_cap: the estimate covers the runs above; set run_cap or --count to bound it")
    return "\n".join(lines)
