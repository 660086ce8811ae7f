"""What a study says, as data: leaderboard, ablations, diagnostics, curve picks, parallel axes.

The first stage after load.py: evidence.py, importance.py, interactions.py and next_sweep.py build
on these (never the other way), and results.py assembles them. Pure functions of a `Study`; nothing
here draws or writes. Every number is over the runs that count (`RunRecord.done`: ended with a
score, not an interrupted attempt that was re-run), and a config's number is the mean over its
seeds with the sample standard deviation beside it (0 for a single seed), the same convention as
`fcn-sweep status`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .. import formatting
from . import binning, fidelity
from .load import RunRecord, Study, is_numeric, levels

# The states a reader must hear about: a run that did not simply finish. A run Hyperband stopped
# did what the sweep asked of it and is reported apart (see `diagnostics`).
PROBLEM_STATES = ("diverged", "stopped", "crashed")
HYPERBAND = "hyperband"  # the stop reason the sweep's workers record for a Hyperband stop


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> Stat | None:
        xs = [v for v in values if v is not None]
        if not xs:
            return None
        return cls(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs))


# --- leaderboard ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    group: int
    values: dict[str, Any]  # the swept parameters' values
    runs: list[RunRecord]  # its seeds, best first
    val: Stat
    test: Stat | None
    best_epoch: Stat | None
    n_params: int | None
    states: dict[str, int]


def configs(study: Study) -> list[Entry]:
    """Every config with at least one run that counts, ranked by mean best validation accuracy."""
    by_group: dict[int, list[RunRecord]] = defaultdict(list)
    for r in study.done:
        by_group[r.group].append(r)
    out = []
    for group, runs in by_group.items():
        runs = sorted(runs, key=lambda r: -r.objective)
        states: dict[str, int] = defaultdict(int)
        for r in runs:
            states[r.state] += 1
        out.append(
            Entry(
                group=group,
                values={p: runs[0].value(p) for p in study.swept},
                runs=runs,
                val=Stat.of([r.objective for r in runs]),
                test=Stat.of([r.summary.get("test_acc_at_best") for r in runs]),
                best_epoch=Stat.of([r.summary.get("best_epoch") for r in runs]),
                n_params=runs[0].summary.get("params"),
                states=dict(states),
            )
        )
    return sorted(out, key=lambda e: (-e.val.mean, e.group))


def leaderboard(study: Study, top: int = 10) -> list[Entry]:
    return configs(study)[:top]


# --- parameter values as numbers -----------------------------------------------------------------
def log_spaced(study: Study, name: str) -> bool:
    """Learning rates and weight decays are searched in decades; correlate against the exponent."""
    return binning.log_scale(study, name, levels(study, name))


# --- ablations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AblationRow:
    context: dict[str, Any]  # every other swept parameter, held fixed
    val: dict[Any, Stat]  # per value of the ablated parameter, over seeds
    test: dict[Any, Stat | None]
    runs: dict[Any, list[str]]
    delta: dict[Any, float | None]  # val mean minus the reference value's


@dataclass(frozen=True)
class Ablation:
    param: str
    levels: list[Any]
    reference: Any  # differences are against this value (the first in display order)
    rows: list[AblationRow]
    mean_delta: dict[Any, Stat | None]  # over the rows holding both values
    wins: dict[Any, int]  # rows in which the value scored best


def ablation(study: Study, param: str, entries: list[Entry] | None = None) -> Ablation:
    """Runs identical in every swept parameter but `param`, side by side: one row per setting of the
    others that was run with at least two values of `param`. `entries`: `configs(study)`, where the
    caller has them already."""
    others = [p for p in study.swept if p != param]
    entries = configs(study) if entries is None else entries
    order = levels(study, param, [r for e in entries for r in e.runs])
    if not order:  # nothing has a score yet: nothing to set side by side
        return Ablation(param, [], None, [], {}, {})
    contexts: dict[tuple, dict[Any, Entry]] = defaultdict(dict)
    for e in entries:
        contexts[tuple(e.values[p] for p in others)][e.values[param]] = e
    rows = []
    for ctx, cells in contexts.items():
        if len(cells) < 2:
            continue
        ref = cells.get(order[0])
        rows.append(
            AblationRow(
                context=dict(zip(others, ctx, strict=True)),
                val={v: e.val for v, e in cells.items()},
                test={v: e.test for v, e in cells.items()},
                runs={v: [r.id for r in e.runs] for v, e in cells.items()},
                delta={v: (e.val.mean - ref.val.mean) if ref else None for v, e in cells.items()},
            )
        )
    rows.sort(key=lambda row: -max(s.mean for s in row.val.values()))
    return Ablation(
        param=param,
        levels=order,
        reference=order[0],
        rows=rows,
        mean_delta={v: Stat.of([row.delta.get(v) for row in rows]) for v in order},
        wins={v: sum(max(row.val, key=lambda k: row.val[k].mean) == v for row in rows) for v in order},
    )


# --- diagnostics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    run: RunRecord
    values: dict[str, Any]
    epochs: int  # epochs it logged
    detail: str  # why, in a line: the stop reason, the last line of a crash's error


@dataclass(frozen=True)
class Diagnostics:
    counts: dict[str, int]  # every attempt by state, as the source holds them
    problems: list[Problem]  # diverged, crashed, or stopped for a reason other than Hyperband
    hyperband: list[Problem]  # stopped by Hyperband: by design, not a problem
    stop_epochs: dict[int, int]  # Hyperband stops by the number of epochs the run had trained
    brackets: list[int]  # the sweep's Hyperband brackets (epochs), where known


def hyperband_stopped(r: RunRecord) -> bool:
    return r.state == "stopped" and r.stop_reason == HYPERBAND


def diagnostics(study: Study) -> Diagnostics:
    problems, stops = [], []
    for r in study.runs:
        if r.state not in PROBLEM_STATES:
            continue
        error = (r.summary.get("error") or "").strip().splitlines()
        detail = {
            "diverged": "training loss became NaN or infinite",
            "stopped": f"stopped ({r.stop_reason or 'reason not recorded'})",
            "crashed": f"{r.stop_reason or 'crashed'}" + (f": {error[-1]}" if error else ""),
        }[r.state]
        (stops if hyperband_stopped(r) else problems).append(
            Problem(r, {p: r.value(p) for p in study.swept}, len(r.history), detail)
        )
    longest = max((r.config.epochs for r in study.runs), default=0)
    return Diagnostics(
        dict(study.counts), problems, stops, fidelity.stop_epochs([p.run for p in stops]),
        fidelity.brackets(study, longest),
    )  # fmt: skip


# --- curves ---------------------------------------------------------------------------------------
def curve_runs(study: Study, top: int = 4, named: list[RunRecord] = ()) -> list[RunRecord]:
    """The best seed of each of the `top` best configs, then the runs asked for by name."""
    picked = [e.runs[0] for e in leaderboard(study, top)]
    return picked + [r for r in named if r.id not in {p.id for p in picked}]


def differing(study: Study, runs: list[RunRecord]) -> list[str]:
    """The parameters (seed included) in which these runs differ: what tells their curves apart."""
    names = [*study.swept, "seed"]
    return [p for p in names if len({str(r.value(p)) for r in runs}) > 1]


RUN_ID = re.compile(r"^\d{8}-\d{6}-([0-9a-f]+)$")


def short_id(run_id: str) -> str:
    """The random tail of a generated run id (`20261128-020315-c266c1` → `c266c1`); other names whole."""
    m = RUN_ID.match(run_id)
    return m.group(1) if m else run_id


def run_label(run: RunRecord, keys: list[str]) -> str:
    return short_id(run.id) + (": " + ", ".join(f"{k}={formatting.value(run.value(k))}" for k in keys) if keys else "")


# --- parallel coordinates -------------------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    name: str
    label: str
    values: list[float]  # one per run, in axis units
    tickvals: list[float] | None  # None: let the plotting library choose
    ticktext: list[str] | None


MAX_TICKS = 8  # above this many distinct numbers, labelling each one clutters the axis


def parallel_axes(study: Study) -> tuple[list[Axis], list[RunRecord]]:
    """One axis per swept parameter and one for the objective, over the runs that count. Categories
    become ordinal axes labelled with their values; log-spaced numbers a log10 axis labelled with
    the numbers themselves."""
    runs = study.done
    axes = []
    for p in study.swept:
        order = levels(study, p, runs)
        if is_numeric(order):
            log = log_spaced(study, p)
            f = math.log10 if log else float
            ticks = [f(v) for v in order] if len(order) <= MAX_TICKS or log else None
            text = [formatting.value(v) for v in order] if len(order) <= MAX_TICKS else None
            if log and text is None:  # many log-spaced values: label the decades
                decades = range(math.floor(min(ticks)), math.ceil(max(ticks)) + 1)
                ticks, text = [float(d) for d in decades], [formatting.sig(10.0**d) for d in decades]
            axes.append(Axis(p, p + (" (log)" if log else ""), [f(r.value(p)) for r in runs], ticks, text))
        else:
            index = {v: i for i, v in enumerate(order)}
            axes.append(
                Axis(
                    p,
                    p,
                    [float(index[r.value(p)]) for r in runs],
                    list(map(float, index.values())),
                    list(map(str, order)),
                )
            )
    axes.append(Axis("best_val_acc", "best val acc", [r.objective for r in runs], None, None))
    return axes, runs
