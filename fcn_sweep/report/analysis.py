"""What a study says, as data: leaderboard, parameter importance, ablations, diagnostics, curve picks.

Pure functions of a `Study`; nothing here draws or writes. Every number is over the runs that
count (`RunRecord.done`: ended with a score, not an interrupted attempt that was re-run), and a
config's number is the mean over its seeds with the sample standard deviation beside it (0 for a
single seed), the same convention as `fcn-sweep status`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import formatting
from . import binning, fidelity
from .fidelity import Basis
from .load import RunRecord, Study, is_numeric, levels

if TYPE_CHECKING:
    from . import evidence, next_sweep

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


# --- parameter importance -------------------------------------------------------------------------
@dataclass(frozen=True)
class Level:
    value: Any  # the parameter's value (axis value); for a bin of a continuous parameter, None
    val: Stat
    span: binning.Bin | None = None  # the bin's lowest and highest value

    @property
    def label(self) -> str:
        return formatting.span(self.span.lo, self.span.hi) if self.span else formatting.value(self.value)

    def holds(self, v: Any) -> bool:
        return self.span.holds(v) if self.span else v == self.value


@dataclass(frozen=True)
class Importance:
    name: str
    importance: float  # random-forest (impurity) importance; sums to 1 over the parameters
    correlation: float | None  # Pearson r, or η for a category of more than two values
    measure: str  # "r" | "η"
    log: bool  # r was taken against log10 of the value
    marginal: list[Level]  # mean score per value (or per bin of values), over every run that has it
    interval: tuple[float, float] | None = None  # 5th-95th percentile over bootstrap resamples of the runs
    members: tuple[str, ...] = ()  # an aliased group (evidence.py): the parameters it stands for

    @property
    def binned(self) -> bool:
        return any(lv.span for lv in self.marginal)

    def value(self, run: RunRecord) -> Any:
        """The run's value on this row's axis: a group's is its members' values joined."""
        if self.members:
            return " / ".join(formatting.value(run.value(p)) for p in self.members)
        return run.value(self.name)


def log_spaced(study: Study, name: str) -> bool:
    """Learning rates and weight decays are searched in decades; correlate against the exponent."""
    return binning.log_scale(study, name, levels(study, name))


def encode(study: Study, name: str, runs: list[RunRecord]) -> tuple[np.ndarray, bool]:
    """One number per run: the value itself (log10 when log-spaced), or the index of its category
    in display order (false < true). Trees only need the order; r then reads as 'later is better'."""
    order = levels(study, name)
    if is_numeric(order):
        log = log_spaced(study, name)
        xs = np.array([float(r.value(name)) for r in runs])
        return (np.log10(xs) if log else xs), log
    index = {v: i for i, v in enumerate(order)}
    return np.array([float(index[r.value(name)]) for r in runs]), False


def correlation_ratio(codes: np.ndarray, y: np.ndarray) -> float:
    """η: the share of the objective's spread explained by the category (0 none, 1 all)."""
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    between = sum(float((codes == c).sum()) * (float(y[codes == c].mean()) - float(y.mean())) ** 2 for c in set(codes))
    return math.sqrt(between / total)


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def marginal(study: Study, name: str, runs: list[RunRecord], scores: list[float]) -> list[Level]:
    """Mean score per value of the parameter; per bin of values when it has more than a reader can
    take in (a continuous parameter of a random or Bayesian sweep)."""
    values = [r.value(name) for r in runs]
    found = binning.bins(values, binning.log_scale(study, name, values)) if is_numeric(values) else None
    if found is None:
        return [Level(v, Stat.of([s for r, s in zip(runs, scores, strict=True) if r.value(name) == v]))
                for v in levels(study, name, runs)]  # fmt: skip
    pairs = list(zip(values, scores, strict=True))
    # each value in the first bin that holds it: the spans do not overlap, so that is the only one
    return [Level(None, Stat.of([s for v, s in pairs if b.holds(v)]), b) for b in found]


def importance(study: Study, basis: Basis | None = None, seed: int = 0) -> list[Importance]:
    """Per swept parameter: random-forest importance for the score (what W&B's importance panel
    shows), its correlation with the score, and the marginal mean score per value; most important
    first. The runs and their scores are the basis's (default: the runs that reached their full
    budget, by best val acc: see fidelity.py)."""
    from sklearn.ensemble import RandomForestRegressor

    basis = basis or fidelity.full_budget(study)
    runs = basis.runs
    if not study.swept or len(runs) < 2:
        return []
    y = np.array(basis.scores, dtype=float)
    encoded = {p: encode(study, p, runs) for p in study.swept}
    X = np.column_stack([encoded[p][0] for p in study.swept])
    if y.std() > 0:
        forest = RandomForestRegressor(n_estimators=300, random_state=seed, n_jobs=1).fit(X, y)
        weights = forest.feature_importances_
    else:  # nothing to explain
        weights = np.zeros(len(study.swept))
    out = []
    for p, w in zip(study.swept, weights, strict=True):
        x, log = encoded[p]
        categorical = not is_numeric(levels(study, p)) and len(set(x)) > 2
        out.append(
            Importance(
                name=p,
                importance=float(w),
                correlation=correlation_ratio(x, y) if categorical else pearson(x, y),
                measure="η" if categorical else "r",
                log=log,
                marginal=marginal(study, p, runs, basis.scores),
            )
        )
    return sorted(out, key=lambda i: -i.importance)


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


def ablation(study: Study, param: str) -> Ablation:
    """Runs identical in every swept parameter but `param`, side by side: one row per setting of the
    others that was run with at least two values of `param`."""
    others = [p for p in study.swept if p != param]
    entries = configs(study)
    order = levels(study, param, [r for e in entries for r in e.runs])
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


# --- everything at once ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Results:
    leaderboard: list[Entry]
    importance: list[Importance]  # over `basis`: the runs that reached their full budget
    basis: Basis
    early: list[Importance]  # over `early_basis`: every run at the first bracket (when runs were cut short)
    early_basis: Basis | None
    ablations: list[Ablation]
    diagnostics: Diagnostics
    curves: list[RunRecord]
    curve_labels: list[str]
    evidence: evidence.Evidence | None = None
    next_sweep: next_sweep.NextSweep | None = None


def analyse(study: Study, ablate: list[str], named: list[RunRecord], top: int = 10, curves: int = 4) -> Results:
    from . import evidence as ev
    from . import next_sweep as nx

    entries = configs(study)
    basis, early_basis = fidelity.bases(study)
    imp = importance(study, basis)
    rank = {i.name: k for k, i in enumerate(imp)}
    # the parameter that matters most first: that is the ablation a reader wants to see
    ablations = [ablation(study, p) for p in sorted(ablate, key=lambda p: rank.get(p, len(rank)))]
    found = ev.assess(study, entries, ablations)
    # a run that trained badly is shown, whether or not it ranks
    picked = curve_runs(study, curves, [*named, *(f.run for f in found.health if f.kind == "collapsed")])
    keys = differing(study, picked)
    results = Results(
        leaderboard=entries[:top],
        # aliased groups and intervals on the same runs and scores as each forest: its basis's
        importance=ev.importance(study, imp, found.aliases, basis),
        basis=basis,
        early=ev.importance(study, importance(study, early_basis), found.aliases, early_basis) if early_basis else [],
        early_basis=early_basis,
        ablations=ablations,
        diagnostics=diagnostics(study),
        curves=picked,
        curve_labels=[run_label(r, keys) + "".join(f" [{f.kind}]" for f in found.flags(r)) for r in picked],
        evidence=found,
    )
    return replace(results, next_sweep=nx.plan(study, results))
