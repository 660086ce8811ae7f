"""`fcn-sweep train | ...`: the command line. Bad input ends with exit code 2 and one line on stderr,
before anything is trained or written."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .config import ConfigError, RunConfig

EXIT_USAGE = 2


class UsageError(Exception):
    """Input the user can fix; main() prints it on one line and exits with code 2."""


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def config_from(config_file: str | None, overrides: Sequence[str]) -> RunConfig:
    """Defaults, then the config file, then `--key=value` overrides: later wins."""
    base = RunConfig.from_file(config_file) if config_file else RunConfig()
    return RunConfig.from_args(overrides, base)


def cmd_train(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    cfg = config_from(args.config, overrides)
    device = resolve_device(args.device)

    from . import data as data_mod
    from .tracking import Progress, RunDir, Trackers
    from .train import run

    try:
        data = data_mod.load(device, cfg.subset, args.data_dir)
    except data_mod.DataError as e:
        raise UsageError(str(e)) from None
    rundir = RunDir(args.out)
    print(f"run dir: {rundir.path}", file=sys.stderr)
    result = run(cfg, Trackers([rundir, Progress(enabled=not args.quiet)]), data=data, device=device)
    s = result.summary()
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(
        f"{rundir.path}\n{s['status']}: best val acc {fmt(s['best_val_acc'])} at epoch {s['best_epoch']}, "
        f"test acc there {fmt(s['test_acc_at_best'])}, final test acc {fmt(s['final_test_acc'])}"
    )
    return 0


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train one FCN; hyperparameters as --key=value",
        description="Train one FCN. Every RunConfig field is an override: --epochs=30 --hidden=1024,256 ...",
    )
    p.add_argument("--config", metavar="FILE", help="YAML/JSON config file, or a run directory to re-run")
    p.add_argument("--out", default="runs", metavar="DIR", help="parent of the run directory (default: runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the FashionMNIST IDX files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


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

    def cmd_bench(args: argparse.Namespace, overrides: Sequence[str]) -> int:
        from .bench import cmd_bench

        return cmd_bench(args, overrides)

    p.set_defaults(func=cmd_bench)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_train_parser, _bench_parser]


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
    except (ConfigError, UsageError) as e:
        print(f"fcn-sweep {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
