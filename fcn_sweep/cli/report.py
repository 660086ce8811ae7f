"""`fcn-sweep status` (the runs and the leaderboard in the terminal) and `fcn-sweep report` (the
study report: HTML, markdown, figures)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .common import UsageError, check_writable, open_store, store_url


def cmd_status(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from ..sweep.status import render
    from ..sweep.store import FILE

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; usage: fcn-sweep status DIR | --store URL")
    store = open_store(args, "status")
    if store is None:
        raise UsageError(f"{args.dir or '.'} is not a sweep directory (no {FILE}); or give --store URL")
    print(render(store, top=args.top, every=args.all))
    store.close()
    return 0


def _status_parser(sub: argparse._SubParsersAction) -> None:
    about = "a sweep at a glance: counts, running, last ended, leaderboard (--all: every run)"
    p = sub.add_parser("status", allow_abbrev=False, help=about)
    p.add_argument("dir", nargs="?", metavar="DIR", help="sweep directory")
    p.add_argument("--store", metavar="URL", help="the sweep's store instead of DIR's (default: FCN_SWEEP_STORE)")
    p.add_argument("--sweep", metavar="NAME", help="the sweep, when the store holds several")
    p.add_argument("--top", type=int, default=10, help="leaderboard length (default: 10)")
    p.add_argument("--all", action="store_true", help="every slot's run, not only the running and the last ended")
    p.set_defaults(func=cmd_status)


def cmd_report(args: argparse.Namespace, extra: Sequence[str]) -> int:
    import time

    from ..formatting import plural
    from ..report import StudyError, build
    from ..report.load import store_source

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}; usage: fcn-sweep report DIR [--out REPORT_DIR]")
    if args.top < 1 or args.curves < 0:
        raise UsageError("--top must be positive and --curves non-negative")
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()] if text else []  # noqa: E731
    if args.dir and os.path.isdir(args.dir):
        check_writable(args.out or os.path.join(args.dir, "report"), "--out")
    t0 = time.perf_counter()
    source, out = args.dir, args.out
    if args.store or (not args.dir and store_url(None)):
        store = open_store(args, "report")
        name = store.info.name
        source = store_source(store.url, name)
        store.close()
        if out is None:
            from ..sweep.runner import shared_dir
            from ..sweep.spec import SweepFileError

            try:  # not into the folder of another store's sweep of the same name
                out = str(shared_dir(name, None, str(store.url)) / "report")
            except SweepFileError as e:
                raise UsageError(f"{e} (for the report: --out REPORT_DIR)") from None
    elif not args.dir:
        raise UsageError("give a sweep directory, a folder of run directories, or --store URL")
    try:
        report = build(source, out, split(args.ablate) or None, split(args.runs), args.top, args.curves)
    except StudyError as e:
        raise UsageError(str(e)) from None
    print(f"{report.html}\n{report.summary}\n{plural(len(report.figures), 'figure')} in {report.out / 'figures'}")
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


PARSERS = (_status_parser, _report_parser)
