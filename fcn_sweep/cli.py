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


def cmd_sweep(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from .sweep.runner import SweepOptions, run_sweep
    from .sweep.spec import SweepFileError

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; see fcn-sweep sweep --help")
    for name in ("workers", "count", "repeats", "pack"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be a positive integer, got {value}")
    gpus = _gpu_list(args.gpus)
    if gpus:
        resolve_device(f"cuda:{max(gpus)}")
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
    )
    try:
        directory = run_sweep(args.file, args.out, args.resume, opts)
    except SweepFileError as e:
        raise UsageError(str(e)) from None
    from .sweep.status import render
    from .sweep.store import Store

    store = Store.in_dir(directory)
    print(render(store, top=5).split("\n\n")[0])
    print(f"sweep dir: {directory}  (fcn-sweep status {directory}; fcn-sweep report {directory})")
    if mode == "offline":
        sync = f"wandb sync {directory}/runs/*/wandb/offline-run-*"
        print(f"W&B: offline ({why or 'WANDB_MODE'}); upload later with: {sync}", file=sys.stderr)
    return 0


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
    p.add_argument("--workers", type=int, default=1, help="worker processes on the CPU (default: 1)")
    p.add_argument("--gpus", help="one worker per listed GPU, e.g. 0,1")
    p.add_argument("--count", type=int, help="run at most N runs in this invocation, then stop")
    p.add_argument("--out", metavar="DIR", help="sweep directory (default: sweeps-out/<sweep name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR")
    p.add_argument(
        "--order",
        choices=("file", "random"),
        default="file",
        help="grid order: as enumerated, or shuffled with --seed (default: file)",
    )
    p.add_argument("--repeats", type=int, default=1, help="seeds per proposed config (default: 1)")
    p.add_argument(
        "--pack",
        type=int,
        default=1,
        metavar="K",
        help="each worker trains up to K pending runs of one shape at once (default: 1); see fcn-sweep bench",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --order random (default: 0)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto", help="W&B logging of each run (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.set_defaults(func=cmd_sweep)


def cmd_status(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from .sweep.status import render
    from .sweep.store import Store

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; usage: fcn-sweep status DIR")
    if not (os.path.isfile(os.path.join(args.dir, Store.FILE))):
        raise UsageError(f"{args.dir} is not a sweep directory (no {Store.FILE})")
    print(render(Store.in_dir(args.dir), top=args.top))
    return 0


def _status_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", allow_abbrev=False, help="table of a local sweep's runs and its leaderboard")
    p.add_argument("dir", metavar="DIR", help="sweep directory")
    p.add_argument("--top", type=int, default=10, help="leaderboard length (default: 10)")
    p.set_defaults(func=cmd_status)


def cmd_report(args: argparse.Namespace, extra: Sequence[str]) -> int:
    import time

    from .report import StudyError, build

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; usage: fcn-sweep report DIR [--out REPORT_DIR]")
    if args.top < 1 or args.curves < 0:
        raise UsageError("--top must be positive and --curves non-negative")
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()] if text else []  # noqa: E731
    if os.path.isdir(args.dir):
        check_writable(args.out or os.path.join(args.dir, "report"), "--out")
    t0 = time.perf_counter()
    try:
        report = build(args.dir, args.out, split(args.ablate) or None, split(args.runs), args.top, args.curves)
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
    p.add_argument("dir", metavar="DIR", help="sweep directory (with sweep.db) or a folder of run directories")
    p.add_argument("--out", metavar="REPORT_DIR", help="where to write the report (default: DIR/report)")
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


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _train_parser,
    _wandb_agent_parser,
    _sweep_parser,
    _status_parser,
    _report_parser,
    _bench_parser,
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
