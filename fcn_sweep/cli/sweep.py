"""`fcn-sweep sweep FILE` (a local sweep, or one created for workers elsewhere; `--dry-run` sizes it)
and `fcn-sweep worker STORE` (claims, trains and records runs of a shared sweep)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..device import resolve_device
from .common import WANDB_MODES, UsageError, check_writable, gpu_list, store_url


def cmd_sweep(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from ..sweep.runner import SweepOptions, run_sweep
    from ..sweep.spec import SweepFileError
    from ..sweep.store import StoreError, StoreUnavailable, without_password

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep sweep --help")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be a non-negative integer, got {args.workers}")
    for name in ("count", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be a positive integer, got {value}")
    args.pack = parse_pack(args.pack)
    url = store_url(args.store)
    if args.workers == 0 and not url:
        raise UsageError("--workers 0 only creates a sweep for workers elsewhere; give it --store URL")
    gpus = gpu_list(args.gpus)
    if gpus:
        resolve_device(f"cuda:{max(gpus)}")
    if args.dry_run:
        return _sweep_dry_run(args, len(gpus) or args.workers)
    # The default directory is sweeps-out/<sweep name>: its nearest existing ancestor is what is checked.
    check_writable(args.resume or args.out or "sweeps-out", "--resume" if args.resume else "--out")
    from .. import tracking

    mode, why = tracking.resolve_wandb_mode(args.wandb)
    if args.pack == "auto" and args.workers != 0:
        sweep, store = _sweep_and_store(args)
        args.pack = auto_pack(sweep, store, args.repeats or 1, args.count, gpus, args.workers)
        if store is not None:
            store.close()
    opts = SweepOptions(
        workers=len(gpus) or args.workers,
        gpus=gpus,
        count=args.count,
        order=args.order,
        repeats=args.repeats,
        seed=args.seed,
        wandb_mode=mode,
        progress=not args.quiet,
        pack=args.pack,
        store=url,
        name=args.name,
    )
    try:
        store, directory = run_sweep(args.file, args.out, args.resume, opts)
    except StoreUnavailable:
        raise  # not the input: main says it and exits with its own code
    except (SweepFileError, StoreError) as e:
        raise UsageError(str(e)) from None
    from ..sweep.status import render

    name = store.info.name
    if opts.workers == 0:
        pack = f" --pack {opts.pack}" if opts.pack != 1 else ""
        print(f"sweep {name!r} is ready in {store.shown}; on each machine run:")
        print(f"fcn-sweep worker {without_password(store.url)} --sweep {name}{pack} --out {directory}")
        if store.url.password:
            print("(the password is not shown: give it to workers by PGPASSWORD or ~/.pgpass)", file=sys.stderr)
        store.close()
        return 0
    print(render(store, top=5).split("\n\n")[0])
    if opts.store:
        where = f"store {store.shown}, sweep {name}, run files in {directory}"
        print(f"{where}  (fcn-sweep status --store URL --sweep {name}; fcn-sweep report --store URL --sweep {name})")
    else:
        print(f"sweep dir: {directory}  (fcn-sweep status {directory}; fcn-sweep report {directory})")
    store.close()
    if mode == "offline":
        sync = f"wandb sync {directory}/runs/*/wandb/offline-run-*"
        # Why offline: the flag as given; with auto, WANDB_MODE or no login (resolve_wandb_mode's note).
        why = why or ("WANDB_MODE" if args.wandb == "auto" else f"--wandb {args.wandb}")
        print(f"W&B: offline ({why}); upload later with: {sync}", file=sys.stderr)
    return 0


def _sweep_dry_run(args: argparse.Namespace, workers: int) -> int:
    """`fcn-sweep sweep FILE --dry-run`: the runs to do and what they will cost on this machine;
    a sweep that exists already (in --store, or the sweep directory) counts what it has done."""
    sweep, store = _sweep_and_store(args)
    threads = max(1, (os.cpu_count() or 1) // workers)
    device = f"cuda:{gpu_list(args.gpus)[0]}" if args.gpus else "cpu"
    order = (args.order or "file", args.seed or 0)  # a new sweep's; an existing one plans its stored slots
    text = estimate_text(
        sweep, store, args.repeats or 1, args.count, device, threads, args.pack, workers, 1, "machine", order=order
    )
    print(text + "\ndry run: nothing written or run")
    return 0


def _sweep_and_store(args: argparse.Namespace):
    """The sweep's config, and its store where the sweep exists already (else None)."""
    from ..sweep.runner import SweepOptions, check_options, check_same, default_dir, sweep_name
    from ..sweep.spec import SweepFileError, load_sweep
    from ..sweep.store import FILE, Store, StoreError, parse

    try:
        sweep = load_sweep(args.file) if args.file else None
    except SweepFileError as e:
        raise UsageError(str(e)) from None
    url = store_url(args.store)
    if not url:
        directory = args.resume or args.out or (default_dir(Path(args.file), sweep, args.name) if sweep else None)
        url = os.path.join(directory, FILE) if directory and os.path.isfile(os.path.join(directory, FILE)) else None
    name = args.name or (sweep_name(args.file, sweep) if sweep else None)
    store = None
    if url:
        try:
            parsed = parse(url)
            if parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_file():
                url = None  # a store the sweep would create: nothing done yet, and a dry run creates nothing
            else:
                # A shared store holds sweeps by name; a sweep directory's own store holds one sweep.
                shared = store_url(args.store) is not None
                held = Store(url, create=False)
                names = held.sweep_names()
                held.close()
                if (name in names) if shared else bool(names):
                    store = Store(url, name if shared else None, create=False)
            if store is not None:  # the sweep exists: what the real run would refuse, the dry run refuses too
                if sweep is not None:
                    check_same(store, sweep, args.file)
                check_options(store, SweepOptions(repeats=args.repeats, order=args.order, seed=args.seed))
        except (StoreError, SweepFileError) as e:
            if store is not None:
                store.close()
            raise UsageError(str(e)) from None
    if sweep is None and store is None:
        raise UsageError("give a sweep file (e.g. sweeps/smoke.yaml), or --resume DIR / --store URL --name NAME")
    return (store.info.config if store is not None else sweep), store


def parse_pack(text: str) -> int | str:
    """`--pack` of sweep, worker and slurm workers: a positive integer or auto."""
    from ..sweep.autopack import parse_pack

    try:
        return parse_pack(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


def auto_pack(sweep, store, repeats, count, gpus, workers, threads=None) -> int:
    """`--pack auto` of a sweep's workers: K for their device and the sweep's pending runs (printed)."""
    from ..sweep import autopack, estimate

    todo = estimate.plan(sweep, repeats, count, store).todo
    device = f"cuda:{gpus[0]}" if gpus else "cpu"
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, len(gpus) or workers))
    k, note = autopack.resolve("auto", todo, device, threads)
    print(note, flush=True)
    return k


def estimate_text(
    sweep, store, repeats, count, device, threads, pack, workers, per_task, unit, at_once=None, order=("file", 0)
) -> str:
    """The dry run of a sweep (local or an array): plan, calibrate on `device`, schedule as asked
    and with the other packing (`--pack` as given or chosen by auto, and 1 or 4). `order`: a new
    grid's --order and --seed, so --count plans the runs the real one draws."""
    import torch

    from ..sweep import autopack, estimate

    plan = estimate.plan(sweep, repeats, count, store, order=order)
    if device.startswith("cuda") and not torch.cuda.is_available():
        return estimate.render_plan(plan, pack, "a GPU")  # a login node sizing GPU tasks: no calibration here
    pack, note = autopack.resolve(pack, plan.todo, device, threads)
    other = 4 if pack == 1 else 1
    cal = estimate.calibrate(plan.todo, device, threads, max(pack, other))
    estimates = [estimate.schedule(plan.todo, cal, workers, per_task, k, at_once) for k in (pack, other)]
    return "\n".join([*([note] if note else []), estimate.render(plan, cal, estimates, unit)])


def cmd_worker(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from ..sweep.runner import SweepOptions, run_workers, shared_dir
    from ..sweep.spec import SweepFileError
    from ..sweep.store import ENV, Store, StoreError

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep worker --help")
    for name in ("workers", "threads", "count"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    args.pack = parse_pack(args.pack)
    url = store_url(args.store)
    if not url:
        raise UsageError(f"give the store: fcn-sweep worker postgresql://USER@HOST:PORT/DB (or set {ENV})")
    gpus = gpu_list(args.gpus)
    if gpus:
        resolve_device(f"cuda:{max(gpus)}")
    try:
        store = Store(url, args.sweep, create=False)  # a worker works a sweep; it never makes a store
        info = store.info
        out = shared_dir(info.name, args.out, url)
        if args.pack == "auto":
            args.pack = auto_pack(info.config, store, 1, None, gpus, args.workers, args.threads)
        store.close()
    except (StoreError, SweepFileError) as e:
        raise UsageError(str(e)) from None
    from .. import tracking

    mode, _ = tracking.resolve_wandb_mode(args.wandb)
    opts = SweepOptions(
        workers=len(gpus) or args.workers,
        gpus=gpus,
        wandb_mode=mode,
        progress=not args.quiet,
        pack=args.pack,
        threads=args.threads,
        per_worker=args.count,
    )
    out.mkdir(parents=True, exist_ok=True)
    return run_workers(url, info.name, out, opts)  # worker.EXIT_STORE: the store was away past its window


def _worker_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        allow_abbrev=False,
        help="claim, train and record runs of a sweep in a shared store until it is done (any machine)",
        description="Workers for a sweep created with fcn-sweep sweep FILE --store URL; start them on as many "
        "machines as reach the store.",
    )
    p.add_argument("store", nargs="?", metavar="STORE", help="store URL (default: FCN_SWEEP_STORE)")
    p.add_argument("--sweep", metavar="NAME", help="the sweep, when the store holds several")
    p.add_argument("--workers", type=int, default=1, help="worker processes on the CPU (default: 1)")
    p.add_argument("--gpus", help="one worker per listed GPU, e.g. 0,1")
    p.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="each worker runs at most N runs, then leaves, as wandb agent --count (default: until the sweep is done)",
    )
    p.add_argument(
        "--pack",
        default="1",
        metavar="K",
        help="runs of one shape trained at once, or auto: chosen for this device (default: 1)",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads per worker (default: this machine's cores / workers; SLURM scripts pass their allocation)",
    )
    p.add_argument("--out", metavar="DIR", help="run directories go to DIR/runs (default: sweeps-out/<sweep name>)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto", help="W&B logging of each run (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.set_defaults(func=cmd_worker)


def _sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        allow_abbrev=False,
        help="run a W&B sweep file locally (W&B's engine + SQLite), resumable",
        description="Run the sweep a W&B server would run, on this machine. Running it again resumes it.",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="sweep YAML, e.g. sweeps/smoke.yaml")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on the CPU (default: 1); 0: only create the sweep, for fcn-sweep worker elsewhere",
    )
    p.add_argument("--gpus", help="one worker per listed GPU, e.g. 0,1")
    p.add_argument(
        "--store",
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: FCN_SWEEP_STORE, else DIR/sweep.db)",
    )
    p.add_argument(
        "--name",
        "--sweep",
        dest="name",
        metavar="NAME",
        help="the sweep's name in the store "
        "(default: the file's name); --sweep NAME alone resumes that sweep of --store",
    )
    p.add_argument("--count", type=int, help="run at most N runs in this invocation, then stop")
    p.add_argument("--out", metavar="DIR", help="sweep directory (default: sweeps-out/<sweep name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR")
    p.add_argument(
        "--order",
        choices=("file", "random"),
        help="grid order: as enumerated, or shuffled with --seed (default: file; a resume keeps the stored one)",
    )
    p.add_argument("--repeats", type=int, help="seeds per proposed config (default: 1; a resume keeps the stored)")
    p.add_argument(
        "--pack",
        default="1",
        metavar="K",
        help="each worker trains up to K pending runs of one shape at once, or auto: K chosen for the workers' "
        "device (default: 1); see fcn-sweep bench",
    )
    p.add_argument("--seed", type=int, help="seed of --order random (default: 0; a resume keeps the stored one)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto", help="W&B logging of each run (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs to do and the estimated wall time (a few dozen calibration steps per shape); run nothing",
    )
    p.set_defaults(func=cmd_sweep)


PARSERS = (_sweep_parser, _worker_parser)
