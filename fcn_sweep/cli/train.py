"""`fcn-sweep train` (one run, a pack of one) and `fcn-sweep wandb-agent` (W&B's agent, which starts
`fcn-sweep train` for each run of a W&B sweep)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..device import resolve_device
from .common import WANDB_MODES, UsageError, check_writable, config_from, stop_on_signals


def cmd_train(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from .. import tracking

    cfg = config_from(args.config, overrides, tracking.sweep_params())
    device = resolve_device(args.device)
    mode, why = tracking.resolve_wandb_mode(args.wandb)
    check_writable(args.out, "--out")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        if mode != "disabled" and os.environ.get(name):
            check_writable(os.environ[name], name)

    import torch

    from .. import data as data_mod
    from ..footprint import out_of_memory_line
    from ..train import fit

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
    # A bar redraws itself many times an epoch: on a terminal that is one line, in a file (the log
    # of `wandb agent`, which starts this with its output in its own log) a flood of them.
    trackers.append(tracking.ProgressTracker(enabled=not args.quiet and sys.stderr.isatty()))
    print(f"run dir: {rundir.path}", file=sys.stderr)
    guard = tracking.WriteGuardTracker(tracking.Trackers(trackers), stop, rundir.path)
    try:
        result = fit(cfg, guard, data=data, device=device, should_stop=stop.is_set)
    except torch.cuda.OutOfMemoryError:
        print(f"fcn-sweep train: error: {out_of_memory_line(cfg, str(device))}", file=sys.stderr)
        return 1
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
    """`--pack 1`: W&B's own `wandb agent`, each run a process of `fcn-sweep train`; `--pack K|auto`:
    one process holding K runs of the sweep, trained in packs of one shape (sweep/wandb_agent.py)."""
    from ..sweep.autopack import parse_pack

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; usage: fcn-sweep wandb-agent SWEEP_ID "
                         "[--pack K|auto] [--count N]")  # fmt: skip
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be a positive integer, got {args.count}")
    try:
        pack = parse_pack(args.pack)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if pack == 1:
        return _exec_wandb_agent(args)
    return _packed_agent(args, pack)


def _exec_wandb_agent(args: argparse.Namespace) -> int:
    """`wandb agent`, with this interpreter's bin directory first on PATH: a sweep's `command:`
    starts `fcn-sweep` through `/usr/bin/env`, which must find this installation's entry point
    and not another one (or none) elsewhere on PATH."""
    if args.device is not None or args.threads is not None:
        raise UsageError("--device and --threads apply to --pack K or auto; with --pack 1 each run is `fcn-sweep "
                         "train` on its own device (CUDA_VISIBLE_DEVICES picks the GPU)")  # fmt: skip
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    if args.out is not None:
        env["FCN_SWEEP_OUT"] = args.out  # the default --out of each `fcn-sweep train`
    # --forward-signals: W&B's agent starts each run in a process group of its own, so a signal to
    # the agent's group (Ctrl-C, scancel, launch_agents.sh stopping) misses the run, and without the
    # flag the agent dies on SIGTERM and leaves it training. With it, the agent passes the signal on
    # and waits: the run ends within a batch as `stopped`, its best model kept, and the agent exits.
    count = ["--count", str(args.count)] if args.count else []
    cmd = [sys.executable, "-m", "wandb", "agent", "--forward-signals", *count, args.sweep_id]
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def _packed_agent(args: argparse.Namespace, pack: int | str) -> int:
    """Everything a user can get wrong is found here, before any run is taken: the sweep's path,
    credentials, the sweep on the server and its parameters, the device, the output directory."""
    from .. import tracking
    from ..sweep import autopack, estimate
    from ..sweep.spec import SweepFileError, check_sweep
    from ..sweep.wandb_agent import AgentSpec, clear_run_variables, main
    from ..tracking.wandb_agent_calls import AgentCalls, AgentCallsChanged, ServerRefused, SweepNotFound, SweepPath

    clear_run_variables()
    try:
        path = SweepPath.parse(args.sweep_id)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {args.threads}")
    if not tracking.wandb_logged_in():
        raise UsageError("no W&B credentials: run `wandb login` or set WANDB_API_KEY; the agent asks W&B's server "
                         "for the sweep's runs")  # fmt: skip
    out = args.out or os.environ.get("FCN_SWEEP_OUT") or "runs"
    check_writable(out, "--out")
    device = str(resolve_device(args.device or "auto"))
    mode, why = tracking.resolve_wandb_mode(args.wandb)
    try:
        calls = AgentCalls(path)
        sweep = calls.sweep_config()
    except (AgentCallsChanged, ServerRefused, SweepNotFound) as e:
        raise UsageError(str(e)) from None
    try:  # every value the sweep can propose is a RunConfig's (what each run would exit 2 on)
        check_sweep(sweep, f"sweep {path}")
    except SweepFileError as e:
        raise UsageError(str(e)) from None
    threads = args.threads or os.cpu_count() or 1
    todo = estimate.plan(sweep, count=args.count).todo if pack == autopack.AUTO else []
    k, note = autopack.resolve(pack, todo, device, threads)
    if note:
        print(note, file=sys.stderr, flush=True)
    if args.count is not None:
        k = min(k, args.count)
    if mode == "offline":
        sync = f"wandb sync {out}/*/wandb/offline-run-*"
        print(f"W&B: the runs log offline ({why or 'WANDB_MODE'}); upload later with: {sync}", file=sys.stderr)
    spec = AgentSpec(path, k, out, device, threads, mode, args.count)
    return main(spec, calls)


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
    p.add_argument("--quiet", action="store_true", help="no progress bar (none either when stderr is not a terminal)")
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
        help="a W&B sweep's agent: --pack K trains K of its runs at once in one process",
        description="With --pack 1 (the default): wandb agent --forward-signals SWEEP_ID, with this installation "
        "first on PATH (also the Docker image's agent), one `fcn-sweep train` per run. With --pack K or auto: one "
        "process registers K agents and trains their runs of one shape together. Either way Ctrl-C or SIGTERM ends "
        "the runs in flight as `stopped`.",
    )
    p.add_argument("sweep_id", metavar="SWEEP_ID", help="ENTITY/PROJECT/SWEEP_ID as printed by `wandb sweep`")
    p.add_argument("--count", type=int, help="runs to execute before exiting (default: until the sweep ends)")
    p.add_argument("--pack", default="1", metavar="K", help="runs held and trained at once, or auto (default: 1)")
    p.add_argument("--device", help="--pack K: auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--threads", type=int, help="--pack K: CPU threads (default: all)")
    p.add_argument("--out", metavar="DIR", help="parent of the run directories (default: FCN_SWEEP_OUT or runs)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto", help="--pack K: W&B logging of each run")
    p.set_defaults(func=cmd_wandb_agent)


PARSERS = (_train_parser, _wandb_agent_parser)
