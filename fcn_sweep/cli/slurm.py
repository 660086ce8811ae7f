"""`fcn-sweep slurm workers|agents`: a readable sbatch script, kept under OUT/slurm, submitted as a
job array of sweep workers or of W&B agents."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from .common import UsageError, open_sweep
from .sweep import estimate_text, parse_pack


def cmd_slurm_workers(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from ..sweep.launch import slurm
    from ..sweep.store import without_password

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep slurm workers --help")
    args.pack = parse_pack(args.pack)
    sb = _sbatch_options(args)
    store, store_arg = open_sweep(args.store, args.sweep)
    info = store.info
    # Run files beside a SQLite store's sweep directory; for a shared store, where `fcn-sweep worker` puts them.
    beside = Path(store_arg).parent if "://" not in store_arg else Path("sweeps-out") / info.name
    out = Path(args.out or beside).resolve()
    per_task = sb.gpus_per_task or 1
    if args.dry_run:
        device = "cuda" if sb.gpus_per_task else "cpu"
        threads = min(sb.cpus_per_task, os.cpu_count() or 1)
        # CPU tasks: as many run at once as the partition's CPUs hold (GPUs: all, as asked).
        cpus = None if sb.gpus_per_task else slurm.partition_cpus(args.partition)
        at_once = cpus // sb.cpus_per_task if cpus else None
        workers = sb.array * per_task
        text = estimate_text(
            info.config, store, 1, None, device, threads, args.pack, workers, per_task, "task", at_once
        )
        print(text)
        print(f"dry run: nothing written or submitted ({sb.array} task(s) of fcn-sweep worker would run)")
        return 0
    try:
        slurm.sbatch_path()
        slurm.check_reachable(store_arg, args.partition)
        # A password never goes into the script: workers get it by PGPASSWORD (from the URL, through
        # the job's environment; else the submitting shell's) or ~/.pgpass.
        env = slurm.job_environment(store.url.password, sb.extra)
    except slurm.LaunchError as e:
        store.close()
        raise UsageError(str(e)) from None
    shown = without_password(store.url) if "://" in store_arg else store_arg
    job = slurm.WorkersJob(shown, info.name, out, args.pack)
    logs = out / "slurm" / "logs"
    watch = f"fcn-sweep status --store {without_password(store.url)} --sweep {info.name}"
    try:
        job_id = _submit(slurm.render_workers(job, sb, logs), out, "workers", sb.array, watch, env)
        store.add_launch(job_id, str(logs))  # for status, which shows the tasks that could not start
    finally:
        store.close()
    return 0


def cmd_slurm_agents(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from ..sweep.launch import slurm

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep slurm agents --help")
    if args.sweep_id.count("/") != 2 or not all(args.sweep_id.split("/")):
        raise UsageError(f"expected ENTITY/PROJECT/SWEEP_ID as `wandb sweep` prints it, got {args.sweep_id!r}")
    for name in ("per_gpu", "count", "stagger"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "stagger" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    args.pack = parse_pack(args.pack)
    if args.pack != 1 and args.per_gpu != 1:
        raise UsageError(f"--per-gpu {args.per_gpu} needs --pack 1; a packed agent holds K runs on its GPU by itself: "
                         "give a larger --pack instead")  # fmt: skip
    sb = _sbatch_options(args)
    try:
        slurm.sbatch_path()
    except slurm.LaunchError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out).resolve()
    job = slurm.AgentsJob(args.sweep_id, out, args.per_gpu, args.count, args.stagger, args.pack)
    logs = out / "slurm" / "logs"
    _submit(slurm.render_agents(job, sb, logs), out, "agents", sb.array, "wandb sweep page")
    return 0


def _sbatch_options(args: argparse.Namespace):
    from ..sweep.launch import slurm

    sb = slurm.Sbatch(
        array=args.array,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        time=args.time,
        partition=args.partition,
        extra=tuple(args.sbatch_arg),
    )
    try:
        slurm.check_args(sb)
    except slurm.LaunchError as e:
        raise UsageError(str(e)) from None
    return sb


def _submit(text: str, out: Path, kind: str, tasks: int, watch: str, env=None) -> str:
    """Check the script with sbatch, write it under OUT/slurm and submit it (sbatch in `env`, else
    this environment); the job id. Refused, it leaves nothing: not the script, not a folder it made."""
    from ..sweep.launch import slurm

    directory, logs = out / "slurm", out / "slurm" / "logs"
    try:
        slurm.check_with_sbatch(text, env)
    except slurm.LaunchError as e:
        raise UsageError(str(e)) from None
    made = [d for d in (logs, *logs.parents) if not d.exists()]  # deepest first
    logs.mkdir(parents=True, exist_ok=True)  # before the job exists: a task's log has nowhere else to go
    script = slurm.write_script(text, directory, kind)
    try:
        job = slurm.submit(script, env)
    except slurm.LaunchError as e:
        # sbatch can still refuse what --test-only passed (the cluster changed in between).
        script.unlink()
        for d in made:
            with suppress(OSError):
                d.rmdir()
        raise UsageError(f"{e}; nothing was kept") from None
    print(f"submitted job {job}: {tasks} array task(s) of {kind}\nscript: {script}")
    print(f"watch:  squeue -j {job}\n        {watch}\nlogs:   {logs}/{job}_*")
    return job


def _slurm_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "slurm",
        allow_abbrev=False,
        help="submit a SLURM job array of sweep workers or of W&B agents",
        description="Write a readable sbatch script (kept under OUT/slurm) and submit it with sbatch.",
    )
    kinds = p.add_subparsers(dest="kind", required=True)

    def common(q: argparse.ArgumentParser, gpus_default: int) -> None:
        q.add_argument("--array", type=int, required=True, metavar="N", help="array tasks")
        q.add_argument(
            "--gpus-per-task", type=int, default=gpus_default, metavar="G", help=f"(default: {gpus_default})"
        )
        q.add_argument("--cpus-per-task", type=int, default=1, metavar="C", help="(default: 1)")
        q.add_argument("--time", metavar="T", help="each task's time limit, as sbatch takes it (e.g. 4:00:00)")
        q.add_argument("--partition", metavar="P", help="SLURM partition (default: the cluster's default)")
        q.add_argument(
            "--sbatch-arg",
            action="append",
            default=[],
            metavar="OPT",
            help="another #SBATCH option, e.g. --sbatch-arg=--mem=8G (repeatable)",
        )

    w = kinds.add_parser(
        "workers",
        allow_abbrev=False,
        help="tasks that each run `fcn-sweep worker STORE` until the sweep is done",
        description="A job array of fcn-sweep workers on a store (PostgreSQL URL, or a sweep directory on a one-node "
        "cluster). Preemption warnings (USR1) and scancel re-queue the runs in flight.",
    )
    w.add_argument("store", metavar="STORE", help="postgresql://USER@HOST:PORT/DB or a sweep directory")
    w.add_argument("--sweep", metavar="NAME", help="the sweep in a store that holds several")
    common(w, 0)
    w.add_argument(
        "--pack",
        default="1",
        metavar="K",
        help="runs of one shape a worker trains at once, or auto: each task's worker chooses for its device",
    )
    w.add_argument("--out", metavar="DIR", help="run directories and the script (default: the sweep's directory)")
    w.add_argument(
        "--dry-run", action="store_true", help="print the runs to do and the estimated hours; submit nothing"
    )
    w.set_defaults(func=cmd_slurm_workers)

    a = kinds.add_parser(
        "agents",
        allow_abbrev=False,
        help="tasks that each run `fcn-sweep wandb-agent --pack K` (or M plain agents) per GPU for a W&B sweep",
        description="A job array of W&B agents for a sweep on W&B's server: with --pack K or auto, one `fcn-sweep "
        "wandb-agent --pack K` per GPU; with --pack 1, M plain agents per GPU (W&B's own `wandb agent`). The API "
        "key comes from the environment at run time (WANDB_API_KEY or ~/.netrc), never from the script.",
    )
    a.add_argument("sweep_id", metavar="ENTITY/PROJECT/SWEEP_ID", help="as printed by `wandb sweep`")
    common(a, 1)
    a.add_argument(
        "--pack",
        default="1",
        metavar="K",
        help="runs one agent process holds and trains at once, or auto: chosen for its device (default: 1, "
        "W&B's own agent)",
    )
    a.add_argument(
        "--per-gpu", type=int, default=1, metavar="M", help="plain agents per GPU, with --pack 1 (default: 1)"
    )
    a.add_argument("--count", type=int, help="runs per agent process (default: until the sweep ends)")
    a.add_argument("--stagger", type=int, default=2, metavar="S", help="seconds between agent starts (default: 2)")
    a.add_argument("--out", default="runs", metavar="DIR", help="parent of the run directories (default: runs)")
    a.set_defaults(func=cmd_slurm_agents)


PARSERS = (_slurm_parser,)
