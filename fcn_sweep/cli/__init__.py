"""`fcn-sweep train | ...`: the command line. Bad input ends with exit code 2 and one line on stderr,
before anything is trained or written.

One module per command family holds its parsers and handlers (`PARSERS`); `common` holds what they
share. Handlers import the package's heavy modules (torch, wandb, the store) inside, so that
`fcn-sweep --help` and usage errors answer at once."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from ..config import ConfigError
from ..device import DeviceError
from . import bench, report, slurm, sweep, train
from .common import EXIT_USAGE, UsageError, check_writable

__all__ = ["EXIT_USAGE", "UsageError", "build_parser", "check_writable", "main"]

FAMILIES = (train, sweep, report, bench, slurm)


def hide_passwords(text: str) -> str:
    from ..sweep.store import redact_text  # here: it imports SQLAlchemy, which `--help` does not need

    return redact_text(text)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as every other usage error: one line on stderr, exit 2 (argparse
    would print the whole usage first). They quote the argument they refuse: a store URL's password
    is hidden there too."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {hide_passwords(message)}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    about = "Train FCNs on FashionMNIST; run W&B sweeps on W&B, locally or on many machines; report on them."
    parser = Parser(prog="fcn-sweep", description=about, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        for add in family.PARSERS:
            add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Every command's one way out: its exit code; bad input as one line (exit 2), a store away past
    its retry window as one line (worker.EXIT_STORE), a reader gone (`| head`) quietly, as Unix tools
    do; no message shows a store URL's password, whatever argument it was given in."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        return args.func(args, extra)
    except (ConfigError, DeviceError, UsageError) as e:
        print(f"fcn-sweep {args.command}: error: {hide_passwords(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # Nothing more can reach the reader; the interpreter's last flush must not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except ValueError as e:
        from ..sweep.store import EXIT_STORE, StoreUnavailable

        if not isinstance(e, StoreUnavailable):
            raise
        print(f"fcn-sweep {args.command}: error: {hide_passwords(str(e))}", file=sys.stderr)
        return EXIT_STORE
