"""`fcn-sweep train | ...`: the command line. Bad input ends with exit code 2 and one line on stderr,
before anything is trained or written.

One module per command family holds its parsers and handlers (`PARSERS`); `common` holds what they
share. Handlers import the package's heavy modules (torch, wandb, the store) inside, so that
`fcn-sweep --help` and usage errors answer at once."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..config import ConfigError
from ..device import DeviceError
from . import bench, report, slurm, sweep, train
from .common import EXIT_USAGE, UsageError, check_writable

__all__ = ["EXIT_USAGE", "UsageError", "build_parser", "check_writable", "main"]

FAMILIES = (train, sweep, report, bench, slurm)


def build_parser() -> argparse.ArgumentParser:
    about = "Train FCNs on FashionMNIST; run W&B sweeps on W&B, locally or on many machines; report on them."
    parser = argparse.ArgumentParser(prog="fcn-sweep", description=about, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        for add in family.PARSERS:
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
