"""Parameter importance, fitted once: a random forest over the swept parameters (what W&B's importance
panel shows), with aliased parameters as one column, a bootstrap interval from the same fit path,
each parameter's correlation with the score and its marginal mean per value (or bin).

Aliased parameters (evidence.aliases) are joined into one column before the forest is fitted: given
two columns that always change together, a forest credits whichever it splits on first, so their
importances would be split at random. Pure functions of a `Study`; nothing here draws or writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import formatting
from . import binning
from .analysis import Stat, log_spaced
from .evidence import Alias
from .fidelity import Basis
from .load import RunRecord, Study, is_numeric, levels

TREES = 300
# A tree's cost grows with the runs it is fitted to, and so does its steadiness: past this many runs
# a forest gets proportionally fewer trees (never under a sixth of them, nor under 10), so that the
# grid's 5,832 runs cost about what 1,000 do; its importances still move by under 0.01 between seeds.
TREE_RUNS = 1000
BOOTSTRAP = 20  # resamples of the runs for the interval; its ends are the 5th and 95th percentiles
BOOTSTRAP_TREES = 20


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
    members: tuple[str, ...] = ()  # an aliased group: the parameters it stands for

    @property
    def binned(self) -> bool:
        return any(lv.span for lv in self.marginal)

    def value(self, run: RunRecord) -> Any:
        """The run's value on this row's axis: a group's is its members' values joined."""
        if self.members:
            return " / ".join(formatting.value(run.value(p)) for p in self.members)
        return run.value(self.name)


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


def _group_codes(study: Study, group: tuple[str, ...], runs: list[RunRecord]) -> tuple[np.ndarray, list[tuple]]:
    """An aliased group as one category per run: the index of its members' values, combinations in
    display order."""
    rank = {p: {v: i for i, v in enumerate(levels(study, p, runs))} for p in group}
    combos = sorted({tuple(r.value(p) for p in group) for r in runs},
                    key=lambda c: [rank[p][v] for p, v in zip(group, c, strict=True)])  # fmt: skip
    index = {c: i for i, c in enumerate(combos)}
    return np.array([float(index[tuple(r.value(p) for p in group)]) for r in runs]), combos


def _trees(trees: int, runs: int) -> int:
    return min(trees, max(trees // 6, 10, trees * TREE_RUNS // runs))


def _forest(X: np.ndarray, y: np.ndarray, trees: int, seed: int) -> np.ndarray:
    from sklearn.ensemble import RandomForestRegressor

    if y.std() == 0:  # nothing to explain
        return np.zeros(X.shape[1])
    return RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=1).fit(X, y).feature_importances_


def importance(study: Study, basis: Basis, aliases: list[Alias] = (), seed: int = 0) -> list[Importance]:
    """Per swept parameter (per aliased group): forest importance for the basis's scores with a
    bootstrap interval over its runs, the correlation with the score and the marginal mean score per
    value; most important first. The basis is the runs compared and their scores (fidelity.py)."""
    runs, y = basis.runs, np.array(basis.scores, dtype=float)
    if not study.swept or len(runs) < 2:
        return []
    grouped = {p for a in aliases for p in a.params}
    groups = [a.params for a in aliases] + [(p,) for p in study.swept if p not in grouped]
    columns = []
    for g in groups:
        columns.append(encode(study, g[0], runs)[0] if len(g) == 1 else _group_codes(study, g, runs)[0])
    X = np.column_stack(columns)
    point = _forest(X, y, _trees(TREES, len(runs)), seed)
    rng = np.random.default_rng(seed)
    boot = [_forest(X[pick], y[pick], _trees(BOOTSTRAP_TREES, len(runs)), seed + k)
            for k, pick in enumerate(rng.integers(0, len(runs), len(runs)) for _ in range(BOOTSTRAP))]  # fmt: skip
    lo, hi = np.percentile(np.array(boot), [5, 95], axis=0)
    out = []
    for k, g in enumerate(groups):
        interval = (float(lo[k]), float(hi[k]))
        if len(g) == 1:
            x, log = encode(study, g[0], runs)
            categorical = not is_numeric(levels(study, g[0])) and len(set(x)) > 2
            out.append(Importance(
                name=g[0], importance=float(point[k]),
                correlation=correlation_ratio(x, y) if categorical else pearson(x, y),
                measure="η" if categorical else "r", log=log,
                marginal=marginal(study, g[0], runs, basis.scores), interval=interval,
            ))  # fmt: skip
            continue
        codes, combos = _group_codes(study, g, runs)
        out.append(Importance(
            name=" + ".join(g), importance=float(point[k]), correlation=correlation_ratio(codes, y), measure="η",
            log=False, interval=interval, members=g,
            marginal=[Level(" / ".join(map(formatting.value, c)), Stat.of(y[codes == i].tolist()))
                      for i, c in enumerate(combos)],
        ))  # fmt: skip
    return sorted(out, key=lambda i: -i.importance)
