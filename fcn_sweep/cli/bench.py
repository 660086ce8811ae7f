"""`fcn-sweep bench`: the training step against a tutorial loop, the device's floor and its FLOP
rate, packed at several K; `fcn-sweep bench store`: the sweep store on SQLite and PostgreSQL;
`fcn-sweep bench report`: the study report on the grid's 5,832 runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..config import RunConfig
from ..device import resolve_device
from .common import UsageError

# kernels.BN_IMPLS's names, written out: kernels imports torch, and a usage error need not wait for it
BN_IMPLS = ("native", "reduce", "compiled")
UPDATE_IMPLS = ("grouped", "stacked", "compiled")  # packed.UPDATE_IMPLS's, for the same reason


def parse_packs(text: str) -> tuple[int, ...]:
    """`1,16,128` -> (1, 16, 128); ValueError with what would be right otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"--pack takes positive integers separated by commas, such as 1,16,128; got {text!r}")
    return tuple(sorted({int(p) for p in parts}))


def cmd_bench(args: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}")
    try:
        packs = parse_packs(args.pack) if args.pack is not None else None
        parsed = RunConfig.from_dict({"hidden": args.hidden, "matmul_precision": args.matmul_precision})
        hidden, precision = parsed.hidden, parsed.matmul_precision
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.sweep and args.sweep != "none" and not Path(args.sweep).is_file():  # none: no estimate
        raise UsageError(f"--sweep {args.sweep}: no such file; give a sweep YAML such as sweeps/grid.yaml")
    from .. import data as data_mod  # torch: after the checks, so bad input is answered at once
    from ..bench import GRID, bench

    device = resolve_device(args.device)
    sweep = None if args.sweep == "none" else Path(args.sweep) if args.sweep else GRID
    try:
        lines = bench(
            device,
            args.steps,
            args.repeats,
            packs,
            hidden,
            args.epochs,
            args.data_dir,
            sweep,
            precision,
            args.bn,
            args.update,
        )
    except data_mod.DataError as e:
        raise UsageError(str(e)) from None
    print("\n".join(lines))
    return 0


def cmd_bench_store(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from ..bench.store import NoServer, bench_store

    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}")
    try:
        for line in bench_store(args.store):  # minutes in all: each line as it is measured
            print(line, flush=True)
    except NoServer as e:
        raise UsageError(str(e)) from None
    return 0


def cmd_bench_report(args: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise UsageError(f"unexpected arguments {' '.join(extra)}")
    for flag, path in (("--study", args.study), ("--from", args.template)):
        if path is not None and not Path(path).is_dir():
            raise UsageError(f"{flag} {path}: no such directory")
    if args.template is not None and not (Path(args.template) / "config.json").is_file():
        raise UsageError(f"--from {args.template}: not a run directory (no config.json)")
    from ..bench.study import bench_report
    from ..report import StudyError

    study = Path(args.study) if args.study else None
    template = Path(args.template) if args.template else None
    try:
        lines = bench_report(study, template, args.levels, args.repeats)
    except (StudyError, RuntimeError) as e:
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
        help="a tutorial loop, this package's step, the GEMM floor and packed training against the device's "
        "FLOP rate; `bench store`: the sweep store",
        description="Seconds, FLOP/s (and its share of a large matmul's), ops per step and configs/hour for naive, "
        "project, floor and packed training at several K, and the wall time of a sweep at the best K.",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--steps", type=positive, help="training steps per measurement (default: 30 on a CPU, 200 on a GPU)")
    p.add_argument("--repeats", type=positive, help="interleaved repeats; medians reported (default: 3 CPU, 5 GPU)")
    p.add_argument(
        "--pack", metavar="K[,K...]", help="pack sizes to measure (default: 1,4,16 on a CPU, 1,16,128,512 on a GPU)"
    )
    p.add_argument("--hidden", default="1024,256", help="hidden widths (default: 1024,256)")
    p.add_argument("--epochs", type=positive, default=20, help="epochs per config for configs/hour (default: 20)")
    p.add_argument("--sweep", metavar="FILE", help="sweep whose wall time to estimate (default: sweeps/grid.yaml)")
    p.add_argument("--matmul-precision", default="highest", help="highest (fp32, default) or high (TF32 on a GPU)")
    p.add_argument(
        "--bn", choices=BN_IMPLS,
        help="batch norm implementation of every pack, the estimate's included (default: the device's, native on "
        "a CPU and a GPU; compiled: reduce through torch.compile; kernels.py)",
    )  # fmt: skip
    p.add_argument(
        "--update", choices=UPDATE_IMPLS,
        help="optimizer update of every pack, the estimate's included (default: grouped on a CPU, stacked on a GPU; "
        "compiled: torch.compile's fused kernels, compiled.py)",
    )  # fmt: skip
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the FashionMNIST IDX files")
    p.set_defaults(func=cmd_bench)
    what = p.add_subparsers(dest="what", metavar="store | report")
    s = what.add_parser(
        "store",
        allow_abbrev=False,
        help="the sweep store on SQLite and PostgreSQL side by side (minutes)",
        description="Planning the 5,832-run grid, claims, 16 concurrent claimers and bayes proposals, on SQLite "
        "and PostgreSQL; without --store on a throwaway local PostgreSQL server, removed after.",
    )
    s.add_argument("--store", metavar="URL", help="a PostgreSQL server to create scratch databases on")
    s.set_defaults(func=cmd_bench_store)
    r = what.add_parser(
        "report",
        allow_abbrev=False,
        help="fcn-sweep report on the grid's 5,832 runs (synthetic, from one real run): seconds per stage, page size",
        description="Writes a synthetic study of sweeps/grid.yaml's configs from one real run directory (trained "
        "here in a few seconds, or --from), and times `fcn-sweep report` on it: wall clock and CPU seconds per "
        "stage, the load average beside them (a shared machine's wall clock is only as good as its load), and the "
        "size of report.html.",
    )
    r.add_argument("--study", metavar="DIR", help="time the report of this study instead (a sweep or run folder)")
    r.add_argument("--from", dest="template", metavar="RUN_DIR", help="the real run directory to copy (default: "
                   "train one)")  # fmt: skip
    r.add_argument("--levels", type=positive, help="keep the first N values of each swept parameter (a smaller grid)")
    r.add_argument("--repeats", type=positive, default=2, help="reports timed, one after another (default: 2)")
    r.set_defaults(func=cmd_bench_report)


PARSERS = (_bench_parser,)
