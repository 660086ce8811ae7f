"""What the runs can and cannot show: aliased parameters, seed noise and run health, as data.

A study answers "does X matter?" only where X varied while everything else stayed put, only by more
than the runs vary from seed to seed, and only on runs that trained sensibly. W&B's importance panel
(and a forest like ours) checks none of this: given two parameters that always change together it
credits whichever it splits on first. This module finds those limits (importance.py fits the forest
with aliased parameters joined); `caveats` puts them in words, `next_sweep` writes the sweep that
would lift them.

Pure functions of a `Study` and the analysis results; nothing here draws or writes.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import analysis as an
from .load import RunRecord, Study, is_numeric

# A continuous draw (random or bayes search) gives every config its own value of a number; that it
# then "determines" every other parameter says nothing, as a forest splits it by thresholds. Only a
# small hand-made study gives each config its own value on purpose.
SAMPLED_ABOVE = 8
CONFIDENCE = 0.95
MAX_REPEATS = 10  # beyond this many seeds per config, a gap is a tie for any practical purpose
MIN_REPEATS = 3  # the fewest seeds from which a seed spread is worth estimating
# Run health. Seed noise in best val acc is a few tenths of a percent, so a five-point fall from the
# best is not noise; a gap between train and val accuracy that widens by as much is overfitting.
COLLAPSE = 0.05
OVERFIT_GAP = 0.05
PLATEAU_TOL = 0.005  # "at its best" means within this of the best val acc
PLATEAU_SHARE = 0.25  # ... reached within the first quarter of the epochs
PLATEAU_MIN_EPOCHS = 8
JITTER_EPOCHS = 5  # one seed per config: the late epochs' val acc jitter stands in for the seed spread


# --- confounding ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alias:
    params: tuple[str, ...]  # swept parameters whose effects the runs cannot tell apart, in swept order
    combos: list[tuple]  # the combinations of their values that occur

    @property
    def name(self) -> str:
        return " + ".join(self.params)


def _sampled(values: list[Any], n_configs: int) -> bool:
    return is_numeric(values) and len(set(values)) == n_configs > SAMPLED_ABOVE


def _determines(entries: list[an.Entry], p: str, q: str) -> bool:
    seen: dict[Any, Any] = {}
    return all(seen.setdefault(e.values[p], e.values[q]) == e.values[q] for e in entries)


def _together(entries: list[an.Entry], swept: tuple[str, ...], p: str, q: str) -> bool:
    """In every pair of configs equal in all but p and q, p changes exactly when q does (and at least
    one such pair exists)."""
    rest = [x for x in swept if x not in (p, q)]
    cells: dict[tuple, list[an.Entry]] = defaultdict(list)
    for e in entries:
        cells[tuple(e.values[x] for x in rest)].append(e)
    matched = [c for c in cells.values() if len(c) > 1]
    return bool(matched) and all(_determines(c, p, q) and _determines(c, q, p) for c in matched)


def aliases(study: Study, entries: list[an.Entry]) -> list[Alias]:
    """Groups of swept parameters that are aliased in the configs that count: one determines the
    other, or they change together in every pair matched on the rest. Linked pairs join into groups."""
    varied = [p for p in study.swept if len({e.values[p] for e in entries}) > 1]
    n = len(entries)
    usable = [p for p in varied if not _sampled([e.values[p] for e in entries], n)]
    parent = {p: p for p in usable}

    def root(p: str) -> str:
        while parent[p] != p:
            p = parent[p]
        return p

    for p, q in itertools.combinations(usable, 2):
        if _determines(entries, p, q) or _determines(entries, q, p) or _together(entries, study.swept, p, q):
            parent[root(q)] = root(p)
    groups: dict[str, list[str]] = defaultdict(list)
    for p in usable:
        groups[root(p)].append(p)
    out = []
    for members in groups.values():
        if len(members) > 1:
            combos = sorted({tuple(e.values[p] for p in members) for e in entries}, key=str)
            out.append(Alias(tuple(members), combos))
    return out


def blockers(study: Study, entries: list[an.Entry], param: str) -> list[str]:
    """Why `param` cannot be ablated: the parameters that also change between the configs that differ
    in it the least. Holding those fixed is what the next sweep must do."""
    others = [p for p in study.swept if p != param]
    fewest, found = len(others) + 1, set()
    for a, b in itertools.combinations(entries, 2):
        if a.values[param] == b.values[param]:
            continue
        diff = {p for p in others if a.values[p] != b.values[p]}
        if len(diff) < fewest:
            fewest, found = len(diff), set(diff)
        elif len(diff) == fewest:
            found |= diff
    return [p for p in others if p in found]


# --- seed noise -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Noise:
    spread: float | None  # typical seed-to-seed standard deviation of best val acc (None: unknown)
    source: str  # "seeds": pooled over configs with several seeds; "epochs": late-epoch jitter; "none"
    df: int  # degrees of freedom of the pooled estimate (0 when not from seeds)
    seeds: int  # the most seeds any config has
    margin: dict[int, float]  # per config (group): half-width of the 95% interval on its gap to #1
    within: frozenset[int]  # configs whose gap to #1 is inside that interval
    gap: float | None  # #1 minus #2
    repeats: int | None  # seeds per config that would separate #1 from #2; None when they already are

    def factor(self) -> float:
        """The 95% quantile that multiplies a standard error: Student's t where the spread was
        measured from seeds, 2 where it is a stand-in."""
        if self.source == "seeds" and self.df > 0:
            from scipy import stats

            return float(stats.t.ppf(0.5 + CONFIDENCE / 2, self.df))
        return 2.0

    def half_width(self, n_a: int, n_b: int) -> float | None:
        """95% half-width on the difference of two configs' means over n_a and n_b seeds."""
        return None if self.spread is None else self.factor() * self.spread * math.sqrt(1 / n_a + 1 / n_b)

    @property
    def settled(self) -> bool:
        return self.repeats is None and self.spread is not None


def _jitter(runs: list[RunRecord]) -> float | None:
    """Median over runs of the spread of val acc over the last epochs, around their trend."""
    spreads = []
    for r in runs:
        ys = [h.get("val/acc") for h in r.history[-JITTER_EPOCHS:]]
        if len(ys) < JITTER_EPOCHS or any(y is None for y in ys):
            continue
        x = np.arange(len(ys))
        resid = np.array(ys) - np.polyval(np.polyfit(x, ys, 1), x)
        spreads.append(float(resid.std(ddof=2)))
    return float(np.median(spreads)) if spreads else None


def noise(study: Study, entries: list[an.Entry]) -> Noise:
    multi = [e for e in entries if e.val.n > 1]
    seeds = max((e.val.n for e in entries), default=0)
    if multi:
        df = sum(e.val.n - 1 for e in multi)
        spread, source = math.sqrt(sum((e.val.n - 1) * e.val.std**2 for e in multi) / df), "seeds"
    else:
        df, spread = 0, _jitter(study.done)
        source = "none" if spread is None else "epochs"
    base = Noise(spread, source, df, seeds, {}, frozenset(), None, None)
    if spread is None or not entries:
        return base
    top = entries[0]
    margin = {e.group: base.half_width(top.val.n, e.val.n) for e in entries[1:]}
    within = frozenset(e.group for e in entries[1:] if top.val.mean - e.val.mean <= margin[e.group])
    gap = top.val.mean - entries[1].val.mean if len(entries) > 1 else None
    repeats = None
    if gap is not None and (entries[1].group in within or seeds < 2):
        # n seeds each resolve the gap when factor * spread * sqrt(2 / n) < gap
        need = 2 * (base.factor() * spread / gap) ** 2 if gap > 0 else math.inf
        repeats = max(MIN_REPEATS, math.ceil(need)) if need <= MAX_REPEATS else MAX_REPEATS + 1
    return replace(base, margin=margin, within=within, gap=gap, repeats=repeats)


@dataclass(frozen=True)
class AblationNoise:
    within: list[dict[Any, bool]]  # per row, per value but the reference: Δ inside the seed noise
    interval: dict[Any, tuple[float, float] | None]  # 95% t-interval on the mean Δ over the rows


def ablation_noise(ab: an.Ablation, nz: Noise) -> AblationNoise:
    from scipy import stats

    within = []
    for row in ab.rows:
        ref = row.val.get(ab.reference)
        marks = {}
        for v, d in row.delta.items():
            if v == ab.reference or d is None or ref is None:
                continue
            h = nz.half_width(ref.n, row.val[v].n)
            marks[v] = h is not None and abs(d) <= h
        within.append(marks)
    interval: dict[Any, tuple[float, float] | None] = {}
    for v in ab.levels:
        ds = [row.delta[v] for row in ab.rows if row.delta.get(v) is not None]
        if v == ab.reference or not ds:
            interval[v] = None
        elif len(ds) > 1:
            m, se = float(np.mean(ds)), float(np.std(ds, ddof=1)) / math.sqrt(len(ds))
            t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(ds) - 1))
            interval[v] = (m - t * se, m + t * se)
        else:  # one matched row: only the seed noise bounds it
            row = next(r for r in ab.rows if r.delta.get(v) is not None)
            h = nz.half_width(row.val[ab.reference].n, row.val[v].n)
            interval[v] = None if h is None else (ds[0] - h, ds[0] + h)
    return AblationNoise(within, interval)


# --- run health -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    run: RunRecord
    kind: str  # collapsed | plateaued | overfit
    detail: str


def _series(r: RunRecord, key: str) -> list[tuple[int, float]]:
    return [(h["epoch"], h[key]) for h in r.history if h.get(key) is not None and h.get("epoch") is not None]


def health(runs: list[RunRecord]) -> list[Flag]:
    """Runs that trained badly although they may have `finished`: collapse (val acc fell far from its
    best), an early plateau (the later epochs bought nothing), overfitting (the train/val gap grew)."""
    flags = []
    for r in runs:
        val = _series(r, "val/acc")
        if len(val) < 3:
            continue
        (be, best), (le, last) = max(val, key=lambda x: x[1]), val[-1]
        collapsed = best - last >= COLLAPSE
        if collapsed:
            flags.append(Flag(r, "collapsed", f"val acc {best:.4f} at epoch {be}, {last:.4f} at epoch {le}"))
        reached = next(e for e, y in val if y >= best - PLATEAU_TOL)
        if not collapsed and len(val) >= PLATEAU_MIN_EPOCHS and reached <= val[0][0] + PLATEAU_SHARE * len(val):
            flags.append(Flag(r, "plateaued", f"within {PLATEAU_TOL} of its best from epoch {reached} of {le}"))
        # Train acc is averaged over an epoch while the net learns, so early gaps are negative; what
        # counts is how far train pulled ahead after val acc stopped improving.
        train = dict(_series(r, "train/acc"))
        if be in train and le in train:
            g0, g1 = max(0.0, train[be] - best), train[le] - last
            if g1 - g0 >= OVERFIT_GAP:
                text = f"train - val acc gap {g0:.4f} at its best epoch {be}, {g1:.4f} at epoch {le}"
                flags.append(Flag(r, "overfit", text))
    return flags


# --- everything at once ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    aliases: list[Alias]
    blocked: dict[str, list[str]]  # parameter that cannot be ablated -> what changes with it
    noise: Noise
    ablations: dict[str, AblationNoise]
    health: list[Flag]

    @property
    def too_few_seeds(self) -> bool:
        """One seed each (no spread measured), or more seeds would separate #1 from #2; a gap that
        even MAX_REPEATS seeds would not resolve is a tie, and more runs will not change that."""
        nz = self.noise
        return nz.seeds < 2 or (nz.repeats is not None and nz.seeds < nz.repeats <= MAX_REPEATS)

    def flags(self, run: RunRecord) -> list[Flag]:
        return [f for f in self.health if f.run.id == run.id]


def assess(study: Study, entries: list[an.Entry], ablations: list[an.Ablation], found: list[Alias]) -> Evidence:
    nz = noise(study, entries)
    return Evidence(
        aliases=found,
        blocked={ab.param: blockers(study, entries, ab.param) for ab in ablations if entries and not ab.rows},
        noise=nz,
        ablations={ab.param: ablation_noise(ab, nz) for ab in ablations},
        health=health(study.done),
    )
