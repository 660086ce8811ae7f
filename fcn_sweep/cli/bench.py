"""`fcn-sweep bench`: the training step against a tutorial loop and the device's floor."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..config import RunConfig
from ..device import resolve_device
from .common import UsageError


def cmd_bench(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from .. import data as data_mod
    from ..bench import bench

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


PARSERS = (_bench_parser,)
