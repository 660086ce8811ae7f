"""`fcn-sweep train | ...`: the command line. Bad input ends with exit code 2 and one line on stderr,
before anything is trained or written."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import ConfigError, RunConfig
from .device import DeviceError, resolve_device

EXIT_USAGE = 2
WANDB_MODES = ("auto", "online", "offline", "disabled")


class UsageError(Exception):
    """Input the user can fix; main() prints it on one line and exits with code 2."""


def check_writable(path: str | os.PathLike, flag: str) -> None:
    """An output location this process cannot write is a usage error, found before anything is
    trained or written. The nearest existing ancestor of `path` must be a directory in which a file
    can be created: tried with a temporary file, since permission bits tell nothing for root, a
    read-only mount or a container running as another uid than the mount's owner."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is a file, not a directory; give a directory path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UsageError(
            f"{flag} {path}: cannot write in {existing} ({e.strerror}); write as its owner (in Docker: "
            f'mkdir it yourself, not Docker as root, and docker run --user "$(id -u):$(id -g)") or choose a '
            "writable directory or mount"
        ) from None


def config_from(config_file: str | None, overrides: Sequence[str], sweep: dict | None = None) -> RunConfig:
    """Defaults, then the config file, then what `wandb agent` handed over, then `--key=value`
    overrides: later wins."""
    cfg = RunConfig.from_file(config_file) if config_file else RunConfig()
    cfg = RunConfig.from_dict(sweep or {}, cfg)
    return RunConfig.from_args(overrides, cfg)


def stop_on_signals() -> threading.Event:
    """SIGTERM (what `wandb agent` sends when Hyperband stops a run or a sweep is cancelled) and
    Ctrl-C set an event that the training loop checks between batches, so the run ends within a
    batch, logs its state and keeps its best model instead of dying mid-write."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    return stop


def cmd_train(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from . import tracking

    cfg = config_from(args.config, overrides, tracking.sweep_params())
    device = resolve_device(args.device)
    mode, why = tracking.resolve_wandb_mode(args.wandb)
    check_writable(args.out, "--out")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        if mode != "disabled" and os.environ.get(name):
            check_writable(os.environ[name], name)

    from . import data as data_mod
    from .train import fit

    try:
        data = data_mod.load(device, cfg.subset, args.data_dir)
    except data_mod.DataError as e:
        raise UsageError(str(e)) from None
    stop = stop_on_signals()
    # Under `wandb agent`, the sweep's run id names the run directory too.
    rundir = tracking.RunDirTracker(args.out, os.environ.get("WANDB_RUN_ID") or None)
    trackers: list[tracking.Tracker] = [rundir]
    if mode != "disabled":
        wb = tracking.WandbTracker(rundir, mode, project=args.project, group=args.group)
        trackers.append(wb)
    trackers.append(tracking.ProgressTracker(enabled=not args.quiet))
    print(f"run dir: {rundir.path}", file=sys.stderr)
    guard = tracking.WriteGuardTracker(tracking.Trackers(trackers), stop, rundir.path)
    result = fit(cfg, guard, data=data, device=device, should_stop=stop.is_set)
    if guard.error is not None:
        model = rundir.path / "model.safetensors"
        kept = f"best model (epoch {result.best_epoch}) kept in {model}" if model.exists() else "no model written"
        print(f"fcn-sweep train: error: {guard.error}; the run ended {result.status}, {kept}", file=sys.stderr)
        return 1

    s = result.summary()
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(
        f"{rundir.path}\n{s['status']}: best val acc {fmt(s['best_val_acc'])} at epoch {s['best_epoch']}, "
        f"test acc there {fmt(s['test_acc_at_best'])}, final test acc {fmt(s['final_test_acc'])}"
    )
    if mode == "offline":
        print(f"W&B: offline ({why or 'WANDB_MODE'}); upload later with: wandb sync {wb.sync_dir}", file=sys.stderr)
    return 0


def cmd_wandb_agent(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """`wandb agent`, with this interpreter's bin directory first on PATH: a sweep's `command:`
    starts `fcn-sweep` through `/usr/bin/env`, which must find this installation's entry point
    and not another one (or none) elsewhere on PATH."""
    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; usage: fcn-sweep wandb-agent SWEEP_ID [--count N]")
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [sys.executable, "-m", "wandb", "agent", *(["--count", str(args.count)] if args.count else []), args.sweep_id]
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train one FCN; hyperparameters as --key=value",
        description="Train one FCN. Every RunConfig field is an override: --epochs=30 --hidden=1024,256 ...",
    )
    p.add_argument("--config", metavar="FILE", help="YAML/JSON config file, or a run directory to re-run")
    p.add_argument("--from", dest="config", metavar="RUN_DIR", help="re-run the run in RUN_DIR (or its config.json)")
    p.add_argument(
        "--out",
        default=os.environ.get("FCN_SWEEP_OUT", "runs"),
        metavar="DIR",
        help="parent of the run directory (default: FCN_SWEEP_OUT or runs)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the FashionMNIST IDX files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--wandb",
        choices=WANDB_MODES,
        default="auto",
        help="W&B logging: auto (online if logged in, else offline; WANDB_MODE wins), online, offline, "
        "disabled (default: auto)",
    )
    p.add_argument("--project", help="W&B project (default: WANDB_PROJECT or fcn-sweep)")
    p.add_argument("--group", help="W&B run group")
    p.set_defaults(func=cmd_train)


def _wandb_agent_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wandb-agent",
        allow_abbrev=False,
        help="run `wandb agent` for a sweep with this installation's fcn-sweep",
        description="wandb agent SWEEP_ID, with this installation first on PATH (also the Docker image's agent).",
    )
    p.add_argument("sweep_id", metavar="SWEEP_ID", help="ENTITY/PROJECT/SWEEP_ID as printed by `wandb sweep`")
    p.add_argument("--count", type=int, help="runs to execute before exiting (default: until the sweep ends)")
    p.set_defaults(func=cmd_wandb_agent)


def _store_url(given: str | None) -> str | None:
    from .sweep.store import ENV

    return given or os.environ.get(ENV) or None


def cmd_sweep(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from .sweep.runner import SweepOptions, run_sweep
    from .sweep.spec import SweepFileError
    from .sweep.store import StoreError, without_password

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep sweep --help")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be a non-negative integer, got {args.workers}")
    for name in ("count", "repeats", "pack"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be a positive integer, got {value}")
    store_url = _store_url(args.store)
    if args.workers == 0 and not store_url:
        raise UsageError("--workers 0 only creates a sweep for workers elsewhere; give it --store URL")
    gpus = _gpu_list(args.gpus)
    if gpus:
        resolve_device(f"cuda:{max(gpus)}")
    if args.dry_run:
        return _sweep_dry_run(args, len(gpus) or args.workers)
    # The default directory is sweeps-out/<sweep name>: its nearest existing ancestor is what is checked.
    check_writable(args.resume or args.out or "sweeps-out", "--resume" if args.resume else "--out")
    from . import tracking

    mode, why = tracking.resolve_wandb_mode(args.wandb)
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
        store=store_url,
        name=args.name,
    )
    try:
        store, directory = run_sweep(args.file, args.out, args.resume, opts)
    except (SweepFileError, StoreError) as e:
        raise UsageError(str(e)) from None
    from .sweep.status import render

    name = store.info.name
    if opts.workers == 0:
        pack = f" --pack {opts.pack}" if opts.pack > 1 else ""
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
        print(f"W&B: offline ({why or 'WANDB_MODE'}); upload later with: {sync}", file=sys.stderr)
    return 0


def _sweep_dry_run(args: argparse.Namespace, workers: int) -> int:
    """`fcn-sweep sweep FILE --dry-run`: the runs to do and what they will cost on this machine;
    a sweep that exists already (in --store, or the sweep directory) counts what it has done."""
    from .sweep.runner import default_dir
    from .sweep.spec import SweepFileError, load_sweep
    from .sweep.store import FILE, Store, StoreError

    try:
        sweep = load_sweep(args.file) if args.file else None
    except SweepFileError as e:
        raise UsageError(str(e)) from None
    url = _store_url(args.store)
    if not url:
        directory = args.resume or args.out or (default_dir(Path(args.file), sweep) if sweep else None)
        url = os.path.join(directory, FILE) if directory and os.path.isfile(os.path.join(directory, FILE)) else None
    name = args.name or (str(sweep.get("name") or Path(args.file).stem) if sweep else None)
    store = None
    if url:
        try:
            store = Store(url)
            store = Store(url, name) if name in store.sweep_names() else None
        except StoreError as e:
            raise UsageError(str(e)) from None
    if sweep is None and store is None:
        raise UsageError("give a sweep file (e.g. sweeps/smoke.yaml), or --resume DIR / --store URL --name NAME")
    sweep = store.info.config if store is not None else sweep
    threads = max(1, (os.cpu_count() or 1) // workers)
    device = "cuda" if args.gpus else "cpu"
    text = _estimate(sweep, store, args.repeats or 1, args.count, device, threads, args.pack, workers, 1, "machine")
    print(text + "\ndry run: nothing written or run")
    return 0


def _estimate(sweep, store, repeats, count, device, threads, pack, workers, per_task, unit, at_once=None) -> str:
    """The dry run of a sweep (local or an array): plan, calibrate on `device`, schedule as asked
    and with the other packing (`--pack` as given, and 1 or 4)."""
    from .sweep import estimate

    plan = estimate.plan(sweep, repeats, count, store)
    other = 4 if pack == 1 else 1
    cal = estimate.calibrate(plan.todo, device, threads, max(pack, other))
    estimates = [estimate.schedule(plan.todo, cal, workers, per_task, k, at_once) for k in (pack, other)]
    return estimate.render(plan, cal, estimates, unit)


def cmd_worker(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from .sweep.runner import SweepOptions, run_workers
    from .sweep.store import ENV, Store, StoreError

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep worker --help")
    for name in ("workers", "pack", "threads"):
        if (getattr(args, name) or 1) < 1:
            raise UsageError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    url = _store_url(args.store)
    if not url:
        raise UsageError(f"give the store: fcn-sweep worker postgresql://USER@HOST:PORT/DB (or set {ENV})")
    gpus = _gpu_list(args.gpus)
    if gpus:
        resolve_device(f"cuda:{max(gpus)}")
    try:
        store = Store(url, args.sweep, create=False)
        info = store.info
        store.close()
    except StoreError as e:
        raise UsageError(str(e)) from None
    from . import tracking

    mode, _ = tracking.resolve_wandb_mode(args.wandb)
    opts = SweepOptions(
        workers=len(gpus) or args.workers,
        gpus=gpus,
        wandb_mode=mode,
        progress=not args.quiet,
        pack=args.pack,
        threads=args.threads,
    )
    out = Path(args.out) if args.out else Path("sweeps-out") / info.name
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
    p.add_argument("--pack", type=int, default=1, metavar="K", help="runs of one shape trained at once (default: 1)")
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


def _gpu_list(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(g) for g in text.split(","))
    except ValueError:
        raise UsageError(f"--gpus must look like 0,1,2, got {text!r}") from None


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
        type=int,
        default=1,
        metavar="K",
        help="each worker trains up to K pending runs of one shape at once (default: 1); see fcn-sweep bench",
    )
    p.add_argument("--seed", type=int, help="seed of --order random (default: 0; a resume keeps the stored one)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto", help="W&B logging of each run (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs to do and the estimated wall time (one calibration epoch per shape); run nothing",
    )
    p.set_defaults(func=cmd_sweep)


def _open_store(args: argparse.Namespace, command: str):
    """The store a status or report names: --store URL (or FCN_SWEEP_STORE), else DIR's sweep.db.
    None when neither names one (report then reads DIR as a folder of run directories)."""
    from .sweep.store import FILE, Store, StoreError

    url = args.store or (None if args.dir else _store_url(None))
    if url is None and args.dir and os.path.isfile(os.path.join(args.dir, FILE)):
        url = os.path.join(args.dir, FILE)
    if url is None:
        return None
    try:
        store = Store(url, args.sweep)
        store.info  # noqa: B018  (a store without sweeps fails here, not later)
    except StoreError as e:
        raise UsageError(str(e)) from None
    return store


def cmd_status(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from .sweep.status import render
    from .sweep.store import FILE

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; usage: fcn-sweep status DIR | --store URL")
    store = _open_store(args, "status")
    if store is None:
        raise UsageError(f"{args.dir or '.'} is not a sweep directory (no {FILE}); or give --store URL")
    print(render(store, top=args.top))
    store.close()
    return 0


def _status_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", allow_abbrev=False, help="table of a local sweep's runs and its leaderboard")
    p.add_argument("dir", nargs="?", metavar="DIR", help="sweep directory")
    p.add_argument("--store", metavar="URL", help="the sweep's store instead of DIR's (default: FCN_SWEEP_STORE)")
    p.add_argument("--sweep", metavar="NAME", help="the sweep, when the store holds several")
    p.add_argument("--top", type=int, default=10, help="leaderboard length (default: 10)")
    p.set_defaults(func=cmd_status)


def cmd_report(args: argparse.Namespace, extra: Sequence[str]) -> int:
    import time

    from .report import StudyError, build
    from .report.load import store_source

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; usage: fcn-sweep report DIR [--out REPORT_DIR]")
    if args.top < 1 or args.curves < 0:
        raise UsageError("--top must be positive and --curves non-negative")
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()] if text else []  # noqa: E731
    if args.dir and os.path.isdir(args.dir):
        check_writable(args.out or os.path.join(args.dir, "report"), "--out")
    t0 = time.perf_counter()
    source, out = args.dir, args.out
    if args.store or (not args.dir and _store_url(None)):
        store = _open_store(args, "report")
        name = store.info.name
        source = store_source(store.url, name)
        out = out or os.path.join("sweeps-out", name, "report")
        store.close()
    elif not args.dir:
        raise UsageError("give a sweep directory, a folder of run directories, or --store URL")
    try:
        report = build(source, out, split(args.ablate) or None, split(args.runs), args.top, args.curves)
    except StudyError as e:
        raise UsageError(str(e)) from None
    print(f"{report.html}\n{report.summary}\n{len(report.figures)} figures in {report.out / 'figures'}")
    print(f"report written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        allow_abbrev=False,
        help="study report of a sweep or a folder of runs: parallel coordinates, importance, ablations, curves",
        description="Write report.html (self-contained, offline), summary.md and figures/*.png for a sweep "
        "directory or a folder of run directories.",
    )
    p.add_argument(
        "dir", nargs="?", metavar="DIR", help="sweep directory (with sweep.db) or a folder of run directories"
    )
    p.add_argument("--store", metavar="URL", help="report the sweep in this store (default: FCN_SWEEP_STORE)")
    p.add_argument("--sweep", metavar="NAME", help="the sweep, when the store holds several")
    p.add_argument(
        "--out", metavar="REPORT_DIR", help="where to write the report (default: DIR/report, sweeps-out/NAME/report)"
    )
    p.add_argument("--ablate", metavar="NAME[,NAME]", help="parameters to ablate (default: each swept one)")
    p.add_argument("--runs", metavar="ID[,ID]", help="runs whose curves to add (a full id or its unique ending)")
    p.add_argument("--top", type=int, default=10, help="leaderboard length (default: 10)")
    p.add_argument("--curves", type=int, default=4, help="top configs whose best run's curves are drawn (default: 4)")
    p.set_defaults(func=cmd_report)


def cmd_bench(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from . import data as data_mod
    from .bench import bench

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}")
    device = resolve_device(args.device)
    try:
        hidden = RunConfig.from_dict({"hidden": args.hidden}).hidden
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        lines = bench(device, args.steps, args.repeats, args.pack, hidden, args.epochs, args.data_dir)
    except data_mod.DataError as e:
        raise UsageError(str(e)) from None
    print("\n".join(lines))
    return 0


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
        return int(text)

    p = sub.add_parser(
        "bench",
        allow_abbrev=False,
        help="time a tutorial loop, this package's step, the GEMM floor and packed training, side by side",
        description="Seconds per epoch and their ratios for naive, project, floor and packed training.",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--steps", type=positive, default=200, help="training steps per measurement (default: 200)")
    p.add_argument("--repeats", type=positive, default=5, help="interleaved repeats; medians reported (default: 5)")
    p.add_argument(
        "--pack", type=positive, default=8, help="configs trained at once in the packed variant (default: 8)"
    )
    p.add_argument("--hidden", default="1024,256", help="hidden widths (default: 1024,256)")
    p.add_argument("--epochs", type=positive, default=20, help="epochs per config for configs/hour (default: 20)")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the FashionMNIST IDX files")

    p.set_defaults(func=cmd_bench)


def cmd_slurm_workers(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from .sweep.launch import slurm
    from .sweep.store import without_password

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep slurm workers --help")
    if args.pack < 1:
        raise UsageError(f"--pack must be a positive integer, got {args.pack}")
    sb = _sbatch_options(args)
    store, store_arg = _open_sweep(args.store, args.sweep)
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
        print(_estimate(info.config, store, 1, None, device, threads, args.pack, workers, per_task, "task", at_once))
        print(f"dry run: nothing written or submitted ({sb.array} task(s) of fcn-sweep worker would run)")
        return 0
    try:
        slurm.sbatch_path()
        slurm.check_reachable(store_arg, args.partition)
    except slurm.LaunchError as e:
        raise UsageError(str(e)) from None
    store.close()
    # A password never goes into the script: workers get it by PGPASSWORD (sbatch passes it on) or ~/.pgpass.
    shown = without_password(store.url) if "://" in store_arg else store_arg
    job = slurm.WorkersJob(shown, info.name, out, args.pack)
    logs = out / "slurm" / "logs"
    return _submit(slurm.render_workers(job, sb, logs), out / "slurm", logs, "workers", sb.array,
                   f"fcn-sweep status --store {without_password(store.url)} --sweep {info.name}")  # fmt: skip


def cmd_slurm_agents(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from .sweep.launch import slurm

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep slurm agents --help")
    if args.sweep_id.count("/") != 2 or not all(args.sweep_id.split("/")):
        raise UsageError(f"expected ENTITY/PROJECT/SWEEP_ID as `wandb sweep` prints it, got {args.sweep_id!r}")
    for name in ("per_gpu", "count", "stagger"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "stagger" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    sb = _sbatch_options(args)
    try:
        slurm.sbatch_path()
    except slurm.LaunchError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out).resolve()
    job = slurm.AgentsJob(args.sweep_id, out, args.per_gpu, args.count, args.stagger)
    logs = out / "slurm" / "logs"
    return _submit(slurm.render_agents(job, sb, logs), out / "slurm", logs, "agents", sb.array, "wandb sweep page")


def _sbatch_options(args: argparse.Namespace):
    from .sweep.launch import slurm

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


def _open_sweep(store: str, name: str | None):
    """The store (a URL, a SQLite file, or a sweep directory holding one) opened on the sweep,
    and its path or URL as workers take it; a UsageError naming what is missing."""
    from .sweep.store import FILE, Store, StoreError

    if "://" not in store:
        path = Path(store) / FILE if Path(store).is_dir() else Path(store)
        if not path.is_file():
            raise UsageError(f"{store} is neither a store URL (postgresql://...) nor a sweep directory or SQLite file")
        store = str(path.resolve())
    try:
        opened = Store(store, name)
        opened.info  # noqa: B018  (a store without sweeps says so here)
    except StoreError as e:
        raise UsageError(str(e)) from None
    return opened, store


def _submit(text: str, directory: Path, logs: Path, kind: str, tasks: int, watch: str) -> int:
    from .sweep.launch import slurm

    logs.mkdir(parents=True, exist_ok=True)
    script = slurm.write_script(text, directory, kind)
    try:
        job = slurm.submit(script)
    except slurm.LaunchError as e:
        raise UsageError(str(e)) from None
    print(f"submitted job {job}: {tasks} array task(s) of {kind}\nscript: {script}")
    print(f"watch:  squeue -j {job}\n        {watch}\nlogs:   {logs}/{job}_*")
    return 0


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
    w.add_argument("--pack", type=int, default=1, metavar="K", help="runs of one shape a worker trains at once")
    w.add_argument("--out", metavar="DIR", help="run directories and the script (default: the sweep's directory)")
    w.add_argument(
        "--dry-run", action="store_true", help="print the runs to do and the estimated hours; submit nothing"
    )
    w.set_defaults(func=cmd_slurm_workers)

    a = kinds.add_parser(
        "agents",
        allow_abbrev=False,
        help="tasks that each run M `wandb agent`s per GPU for a W&B sweep",
        description="A job array of W&B agents for a sweep on W&B's server; the API key comes from the environment "
        "at run time (WANDB_API_KEY or ~/.netrc), never from the script.",
    )
    a.add_argument("sweep_id", metavar="ENTITY/PROJECT/SWEEP_ID", help="as printed by `wandb sweep`")
    common(a, 1)
    a.add_argument("--per-gpu", type=int, default=1, metavar="M", help="agents per GPU (default: 1)")
    a.add_argument("--count", type=int, help="runs per agent (default: until the sweep ends)")
    a.add_argument("--stagger", type=int, default=2, metavar="S", help="seconds between agent starts (default: 2)")
    a.add_argument("--out", default="runs", metavar="DIR", help="parent of the run directories (default: runs)")
    a.set_defaults(func=cmd_slurm_agents)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _train_parser,
    _wandb_agent_parser,
    _sweep_parser,
    _worker_parser,
    _status_parser,
    _report_parser,
    _bench_parser,
    _slurm_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcn-sweep", description=__doc__.splitlines()[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        return args.func(args, extra)
    except (ConfigError, DeviceError, UsageError) as e:
        print(f"fcn-sweep {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
