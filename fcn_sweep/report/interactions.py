"""Two-way interactions: where one parameter's effect depends on the level of another, by how much,
and whether that is more than the runs vary from seed to seed.

A ranking of single parameters (a forest's importance, W&B's panel, an ablation's mean Δ) averages
an effect over the other parameters: a plain normal init that hurts badly without batch norm and
hardly at all with it shows up as "init matters, with a wide interval". Here, for every pair of
swept parameters the study crosses, the configs are set out in a table (one cell per combination of
their levels), and the interaction contrast, the difference of the differences

    (m[a1, b1] - m[a0, b1]) - (m[a1, b0] - m[a0, b0]),

is taken in each setting of the other parameters that holds all four cells (matched), then averaged.
With more than two levels each 2 x 2 sub-table gives one contrast; the largest is reported, its
interval widened for the number compared (Bonferroni), so that looking at many is not a licence to
find one. The interval comes from the seed noise (the pooled within-config variance, as the
leaderboard's ties use) or, without repeats, from how much the contrast varies between matched
settings. A random or Bayesian study (a continuous parameter among the swept ones) has no matched
settings: its configs are pooled per cell (the report's bins for continuous values), the other
parameters averaged by the draw, and the noise is the spread of configs within a cell.

Pure functions of a `Study` and what the earlier stages found; nothing here draws or writes.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..formatting import span, value
from . import analysis as an
from . import binning
from . import evidence as ev
from .load import Study, is_numeric, levels

MIN_CELL = 3  # configs per cell of a pooled (binned) table below which the pair is too thin to judge
# Verdicts, in the words the report uses.
BEYOND = "beyond noise"
WITHIN = "within noise"
NOT_ESTIMABLE = "not estimable"
TOO_FEW = "too few runs to tell"
NO_NOISE = "no noise estimate"


@dataclass(frozen=True)
class Axis:
    """One parameter's levels as the table reads them: its values, or its bins when continuous."""

    name: str
    keys: list[Any]  # level values, or binning.Bin
    binned: bool

    @property
    def labels(self) -> list[str]:
        return [span(k.lo, k.hi) if self.binned else value(k) for k in self.keys]

    def index(self, v: Any) -> int:
        return next(i for i, k in enumerate(self.keys) if k.holds(v)) if self.binned else self.keys.index(v)


@dataclass(frozen=True)
class Cell:
    mean: float | None  # mean over the cell's configs of their mean over seeds; None: no config
    configs: int
    runs: int
    half: float | None  # 95% half-width of `mean` from the noise (the figure's bars)


@dataclass(frozen=True)
class Contrast:
    a: tuple[int, int]  # two levels of the first parameter (indices into its axis)
    b: tuple[int, int]  # two levels of the second
    value: float  # effect of a[1] vs a[0] at b[1] minus that at b[0]
    at: tuple[float, float]  # effect of a[1] vs a[0] at b[0] and at b[1], over the same matched settings
    interval: tuple[float, float] | None
    settings: int  # matched settings it rests on (1 when pooled)


@dataclass(frozen=True)
class Interaction:
    axes: tuple[Axis, Axis]  # the first is the parameter whose effect is described at the other's levels
    cells: list[list[Cell]]  # [i][j]: the first's level i, the second's level j
    effects: list[list[float | None]]  # [j][i]: the first's level i minus its level 0, matched, at the second's j
    effects_b: list[list[float | None]]  # [i][j]: the second's level j minus its level 0, matched, at the first's i
    contrast: Contrast | None  # the largest estimable one
    compared: int  # 2 x 2 contrasts compared (the interval is corrected for them)
    verdict: str
    why: str  # for a pair that could not be judged, what is missing
    pooled: bool  # cells pool configs (a random or Bayesian study), not matched settings
    noise: str  # where the interval comes from, in words
    family: int = 1  # contrasts the whole study compared: the interval is corrected for all of them

    @property
    def params(self) -> tuple[str, str]:
        return self.axes[0].name, self.axes[1].name

    @property
    def named(self) -> bool:
        return self.verdict == BEYOND


def axis(study: Study, name: str, entries: list[an.Entry]) -> Axis:
    values = [e.values[name] for e in entries]
    # the fewest bins the report draws: a two-way table splits the runs once more, by the other's levels
    log = binning.log_scale(study, name, values) if is_numeric(values) else False
    found = binning.bins(values, log, binning.MIN_BINS) if is_numeric(values) else None
    if found is not None:
        return Axis(name, found, True)
    return Axis(name, levels(study, name, [e.runs[0] for e in entries]), False)


def _quantile(alpha: float, df: int | None) -> float:
    """Two-sided quantile for a (1 - alpha) interval: Student's t on `df`, normal for a stand-in."""
    from scipy import stats

    return float(stats.t.ppf(1 - alpha / 2, df) if df else stats.norm.ppf(1 - alpha / 2))


def _seed_var(configs: list[an.Entry]) -> float:
    """Variance of the mean of these configs' means, in units of the seed variance."""
    return sum(1 / e.val.n for e in configs) / len(configs) ** 2


@dataclass(frozen=True)
class Table:
    """One crossed pair set out once: the cells, the matched effects and every estimable 2 x 2
    contrast (its matched settings and per-setting values), before any interval is put on them."""

    first: Axis
    second: Axis
    others: list[str]
    settings: dict  # setting of the others -> (i, j) -> the configs there
    mean: dict  # setting -> (i, j) -> mean of those configs
    cells: list[list[Cell]]
    effects: list[list[float | None]]
    effects_b: list[list[float | None]]
    contrasts: list[tuple]  # (a, b, held settings, per-setting contrasts, per-setting effects at b[0] and b[1])
    spread: float | None
    df: int | None
    unit: str  # "configs" | "seeds": what the spread is the spread of
    source: str  # "seeds" | "configs" | "settings"
    pooled: bool

    def var(self, es: list[an.Entry]) -> float:
        return 1 / len(es) if self.unit == "configs" else _seed_var(es)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def tabulate(study: Study, first: Axis, second: Axis, entries: list[an.Entry], nz: ev.Noise, pooled: bool) -> Table:
    """The table, the matched effects and the estimable contrasts of one crossed pair: the costly
    part, done once per pair whatever number of contrasts the study's intervals are corrected for."""
    others = [p for p in study.swept if p not in (first.name, second.name)]
    # setting of the others -> (i, j) -> the configs there (several only when pooled or binned)
    settings: dict[tuple, dict[tuple[int, int], list[an.Entry]]] = defaultdict(lambda: defaultdict(list))
    fi, si = {}, {}  # level index per value, looked up once per distinct value
    for e in entries:
        ctx = () if pooled else tuple(e.values[p] for p in others)
        a, b = e.values[first.name], e.values[second.name]
        i = fi[a] if a in fi else fi.setdefault(a, first.index(a))
        j = si[b] if b in si else si.setdefault(b, second.index(b))
        settings[ctx][i, j].append(e)
    ni, nj = len(first.keys), len(second.keys)
    mean = {ctx: {ij: _mean([e.val.mean for e in es]) for ij, es in cells.items()} for ctx, cells in settings.items()}

    # the noise: seeds pooled within configs; pooled cells: configs within cells; else matched settings
    if pooled:
        resid = [e.val.mean - mean[()][ij] for ij, es in settings[()].items() for e in es]
        df = len(resid) - len(settings[()])
        spread, unit, source = (math.sqrt(sum(r * r for r in resid) / df) if df > 0 else None), "configs", "configs"
    elif nz.source == "seeds":
        spread, df, unit, source = nz.spread, nz.df, "seeds", "seeds"
    else:
        spread, df, unit, source = nz.spread, None, "seeds", "settings"  # the jitter, when one setting is all

    def var(es: list[an.Entry]) -> float:
        return 1 / len(es) if unit == "configs" else _seed_var(es)

    by_cell: dict[tuple[int, int], list[an.Entry]] = defaultdict(list)
    for c in settings.values():
        for ij, es in c.items():
            by_cell[ij] += es
    cells = []
    for i in range(ni):
        row = []
        for j in range(nj):
            es = by_cell.get((i, j), [])
            half = None if spread is None or not es else _quantile(1 - ev.CONFIDENCE, df) * spread * math.sqrt(var(es))
            m = _mean([e.val.mean for e in es]) if es else None
            row.append(Cell(m, len(es), sum(e.val.n for e in es), half))
        cells.append(row)
    effects = [[0.0 if i == 0 else _matched(mean, (i, j), (0, j)) for i in range(ni)] for j in range(nj)]
    effects_b = [[0.0 if j == 0 else _matched(mean, (i, j), (i, 0)) for j in range(nj)] for i in range(ni)]
    contrasts = []
    for a, b in itertools.product(itertools.combinations(range(ni), 2), itertools.combinations(range(nj), 2)):
        four = [(a[0], b[0]), (a[1], b[0]), (a[0], b[1]), (a[1], b[1])]
        held = [ctx for ctx, cs in settings.items() if all(ij in cs for ij in four)]
        if not held:
            continue
        at = [[mean[c][four[1]] - mean[c][four[0]] for c in held], [mean[c][four[3]] - mean[c][four[2]] for c in held]]
        contrasts.append((a, b, held, [y - x for x, y in zip(*at, strict=True)], at))
    return Table(first, second, others, settings, mean, cells, effects, effects_b, contrasts, spread, df, unit,
                 source, pooled)  # fmt: skip


def pair(
    study: Study, first: Axis, second: Axis, entries: list[an.Entry], nz: ev.Noise, pooled: bool, family: int = 0
) -> Interaction:
    """The table, the matched effects and the largest contrast of one crossed pair; `family` is how
    many contrasts the whole study compares (each interval is widened for all of them)."""
    return judge(tabulate(study, first, second, entries, nz, pooled), family)


def judge(t: Table, family: int = 0) -> Interaction:
    """The largest contrast of a tabulated pair and its verdict, its interval widened for `family`
    contrasts (or its own number, where that is more)."""
    first, second, cells, mean, settings = t.first, t.second, t.cells, t.mean, t.settings
    ni, nj = len(first.keys), len(second.keys)
    spread, df, source, pooled = t.spread, t.df, t.source, t.pooled

    def result(verdict: str, why: str = "", contrast: Contrast | None = None, compared: int = 0) -> Interaction:
        words = {"seeds": "pooled seed noise", "configs": "the spread of configs within a cell",
                 "settings": "the spread over matched settings"}[source]  # fmt: skip
        if source == "settings" and contrast is not None and contrast.settings == 1:
            words = "the late-epoch jitter, standing in for seed noise"
        return Interaction(
            (first, second), cells, t.effects, t.effects_b, contrast, compared, verdict, why, pooled, words, family
        )

    if pooled and (thin := min(c.configs for row in cells for c in row)) < MIN_CELL:
        return result(TOO_FEW, f"a cell holds {thin} config{'s' * (thin != 1)}; {MIN_CELL} each would do")
    if not t.contrasts:
        missing = [f"{first.labels[i]} / {second.labels[j]}" for i in range(ni) for j in range(nj)
                   if not cells[i][j].configs]  # fmt: skip
        why = (
            f"no config has {', '.join(missing)}"
            if missing
            else (f"no setting of {', '.join(t.others)} holds both levels of each")
        )
        return result(NOT_ESTIMABLE, why)
    alpha = (1 - ev.CONFIDENCE) / max(family, len(t.contrasts))
    judged = []
    for a, b, held, per, at in t.contrasts:
        at = (_mean(at[0]), _mean(at[1]))
        value = _mean(per)
        if source == "settings" and len(held) > 1:  # no repeats: the matched settings' own spread
            half = _quantile(alpha, len(held) - 1) * float(np.std(per, ddof=1)) / math.sqrt(len(held))
        elif spread is not None:
            units = sum(t.var(settings[c][ij]) for c in held for ij in ((a[0], b[0]), (a[1], b[0]), (a[0], b[1]),
                                                                         (a[1], b[1])))  # fmt: skip
            half = _quantile(alpha, df) * spread * math.sqrt(units) / len(held)
        else:
            half = None
        # read as "how far a[1] falls behind (or ahead of) a[0]", a[0] the better of the two overall
        if sum(mean[c][a[1], j] - mean[c][a[0], j] for c in held for j in b) > 0:
            a, value, at = (a[1], a[0]), -value, (-at[0], -at[1])
        interval = None if half is None else (value - half, value + half)
        judged.append(Contrast(a, b, value, at, interval, len(held)))
    beyond = [c for c in judged if c.interval and (c.interval[0] > 0 or c.interval[1] < 0)]
    top = max(beyond or judged, key=lambda c: abs(c.value))
    if top.interval is None:
        return result(NO_NOISE, "no seeds, no other matched setting and no curves to judge the noise by", top,
                      len(judged))  # fmt: skip
    return result(BEYOND if beyond else WITHIN, "", top, len(judged))


def _matched(mean: dict, x: tuple[int, int], y: tuple[int, int]) -> float | None:
    """Mean over the settings holding both cells of the difference x - y."""
    ds = [cells[x] - cells[y] for cells in mean.values() if x in cells and y in cells]
    return float(np.mean(ds)) if ds else None


def interactions(
    study: Study, entries: list[an.Entry], aliases: list[ev.Alias], nz: ev.Noise, rank: dict[str, int]
) -> list[Interaction]:
    """Every pair of swept parameters with at least two levels each among the configs that count; in
    each pair the more important parameter (rank) comes first. Named ones first, then by size."""
    axes = {p: axis(study, p, entries) for p in study.swept}
    varied = [p for p in study.swept if len(axes[p].keys) > 1]
    pooled = any(a.binned for a in axes.values())
    out, crossed = [], []
    for p, q in itertools.combinations(varied, 2):
        first, second = sorted(
            (axes[p], axes[q]), key=lambda x: (rank.get(x.name, len(rank)), study.swept.index(x.name))
        )
        if any(first.name in a.params and second.name in a.params for a in aliases):
            why = "aliased: their values change together"
            out.append(Interaction((first, second), [], [], [], None, 0, NOT_ESTIMABLE, why, pooled, ""))
        else:
            crossed.append((first, second))
    # the intervals are corrected for every contrast the study compares, not only the pair's own:
    # among many pairs, one beyond a 95% interval by chance is to be expected
    tables = [tabulate(study, a, b, entries, nz, pooled) for a, b in crossed]
    family = sum(judge(t).compared for t in tables)
    out += [judge(t, family) for t in tables]
    return sorted(out, key=lambda x: (not x.named, -abs(x.contrast.value) if x.contrast else 0))


# --- what follows from a named interaction --------------------------------------------------------
@dataclass(frozen=True)
class LevelDelta:
    mean: float
    interval: tuple[float, float] | None
    rows: int


def ablation_by_level(ab: an.Ablation, by: Axis, nz: ev.Noise) -> dict[str, dict[Any, LevelDelta]]:
    """An ablation's mean Δ per level of the parameter it interacts with: one averaged Δ over settings
    where the effect differs says little. Per level: a t-interval over its matched settings, or the
    seed noise where there is one."""
    groups: dict[int, list[an.AblationRow]] = defaultdict(list)
    for row in ab.rows:
        groups[by.index(row.context[by.name])].append(row)
    out: dict[str, dict[Any, LevelDelta]] = {}
    for k in sorted(groups):
        rows, per = groups[k], {}
        for v in ab.levels:
            if v == ab.reference:
                continue
            ds = [r.delta[v] for r in rows if r.delta.get(v) is not None]
            if not ds:
                continue
            m = float(np.mean(ds))
            if len(ds) > 1:
                half = _quantile(1 - ev.CONFIDENCE, len(ds) - 1) * float(np.std(ds, ddof=1)) / math.sqrt(len(ds))
            else:
                row = next(r for r in rows if r.delta.get(v) is not None)
                half = nz.half_width(row.val[ab.reference].n, row.val[v].n)
            per[v] = LevelDelta(m, None if half is None else (m - half, m + half), len(ds))
        out[by.labels[k]] = per
    return out


def partner(found: list[Interaction], param: str) -> Interaction | None:
    """The strongest named interaction `param` takes part in."""
    return next((x for x in found if x.named and param in x.params), None)


def seeds_to_size(x: Interaction, nz: ev.Noise) -> int:
    """Seeds per config that would put the contrast's 95% half-width under half its size: with four
    cells of n seeds each, 2 * spread * sqrt(4 / n) <= |contrast| / 2."""
    if nz.spread is None or not x.contrast or x.contrast.value == 0:
        return ev.MIN_REPEATS
    need = math.ceil((8 * nz.spread / abs(x.contrast.value)) ** 2)
    return min(ev.MAX_REPEATS, max(ev.MIN_REPEATS, need))
