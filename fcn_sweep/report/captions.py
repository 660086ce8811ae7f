"""Figure captions: what each figure shows and how to read it, with this study's numbers in them, so a
figure pasted into a write-up carries its own explanation."""

from __future__ import annotations

from collections import Counter

from .. import formatting
from . import analysis as an
from . import binning
from .fidelity import Basis, truncated
from .importance import Importance
from .interactions import Axis, Interaction
from .load import RunRecord, Study

_n = formatting.plural


def parallel(study: Study, runs: list[RunRecord]) -> str:
    groups = len({r.group for r in runs})
    cut = len(truncated(study))
    early = f"; {_n(cut, 'run')} stopped early, scored by the best of fewer epochs" if cut else ""
    return (
        f"Each line is one run that ended with a score ({_n(len(runs), 'run')} of {_n(groups, 'config')}{early}); "
        f"one axis per swept parameter ({', '.join(study.swept)}) and the objective, best validation "
        "accuracy, which also colours the line (yellow best, purple worst). Categories sit on ordinal "
        "axes in the order shown, architectures as their widths (e.g. 1024-256); log-spaced numbers on a "
        "log axis labelled with their values. In report.html, drag along any axis to keep only the runs "
        "inside that range; drag several axes to combine filters, click an axis outside its range to clear it."
    )


def rests_on(basis: Basis) -> str:
    return f"Rests on {basis.describe}."


def importance(imp: list[Importance], basis: Basis) -> str:
    top = imp[0]
    return (
        f"{rests_on(basis)} Left: how much of the variation in {basis.name} each swept parameter explains, as "
        f"the impurity importance of a random forest fitted to those {_n(len(basis.runs), 'run')} "
        f"(importances sum to 1). Right: correlation with {basis.name} — Pearson r against the value "
        "(against log10 of it for log-spaced numbers; for two-valued categories against their position, "
        "so positive means the second value shown scores higher), or the correlation ratio η (0 to 1, "
        f"unsigned) for categories of three or more values. Most important here: {top.name} "
        f"({top.importance:.2f})."
        + (" Error bars: 5th to 95th percentile over bootstrap resamples of the runs." if top.interval else "")
        + "".join(f" {i.name} are aliased in these runs: one bar for them together." for i in imp if i.members)
    )


def marginals(imp: list[Importance], basis: Basis) -> str:
    binned = [i.name for i in imp if i.binned]
    bins = (
        f" Parameters with more than {binning.MAX_LEVELS} distinct values ({', '.join(binned)}) are drawn "
        "against the value itself, each run a grey dot, with the mean per bin (quantile bins; equal widths of "
        "log10 for log-spaced values) at the bin's centre and a line across the values the bin holds."
        if binned
        else ""
    )
    return (
        f"{rests_on(basis)} Mean {basis.name} for each value of each swept parameter (blue, bars ±1 standard "
        "deviation over the runs with that value), whatever the other parameters were; grey dots are the "
        f"individual runs.{bins} A marginal mixes all settings of the other parameters; the ablation tables "
        "hold them fixed."
    )


def curves(runs: list[RunRecord], labels: list[str]) -> str:
    return (
        f"Training (dashed) and validation (solid) loss, on a log scale, and accuracy per epoch for "
        f"{_n(len(runs), 'run')}: the best seed of each top config, then any run named with --runs. "
        "Each label is the run id's tail and the parameters in which the plotted runs differ."
    )


def ablation(ab: an.Ablation, partner: Axis | None = None, shown: int | None = None) -> str:
    """`shown`: how many matched settings the figure draws as lines (all of them when None)."""
    best = max(ab.wins, key=ab.wins.get)
    n = len(ab.rows)
    lines = f"one grey line per such setting ({n}), "
    if shown is not None and shown < n:
        lines = f"a random sample of {shown} of the {n} such settings as faint grey lines, "
    spread = (
        f" Right: every setting's difference from {formatting.value(ab.reference)} per value"
        + (f" and level of {partner.name} (colours as on the left)" if partner else "")
        + " (box: the middle half, the bar across it the median; whiskers: 5th to 95th percentile)."
        if shown is not None and shown < n
        else ""
    )
    deltas = "; ".join(
        f"{formatting.value(v)} {s.mean:+.4f}" + (f" ± {s.std:.4f}" if s.n > 1 else "")
        for v, s in ab.mean_delta.items()
        if v != ab.reference and s
    )
    return (
        f"Best validation accuracy (mean over seeds) for each value of {ab.param}, with every other swept "
        f"parameter held fixed: {lines}"
        + (
            f"the coloured lines the mean over all of them at each level of {partner.name}, as the effect of "
            f"{ab.param} depends on it (see Interactions). {formatting.value(best)} scores best in {ab.wins[best]} "
            f"of {n}."
            if partner
            else f"the red line the mean over all of them. {formatting.value(best)} scores best in {ab.wins[best]} "
            f"of {n}; mean difference from {formatting.value(ab.reference)}: {deltas or 'n/a'}."
        )
        + spread
    )


def interaction(x: Interaction) -> str:
    a, b = x.axes
    c = x.contrast
    return (
        f"Mean best validation accuracy of the configs with each value of {a.name}, one line per value of "
        f"{b.name}; the other swept parameters are averaged over. Lines that run parallel would mean the two "
        f"effects simply add up; here they do not: {a.labels[c.a[1]]} vs {a.labels[c.a[0]]} differs by "
        f"{c.at[0]:+.4f} at {b.name}={b.labels[c.b[0]]} and {c.at[1]:+.4f} at "
        f"{b.name}={b.labels[c.b[1]]} (interaction {c.value:+.4f}). Bars: 95% interval of each mean from "
        + ("the seed noise." if x.noise == "pooled seed noise" else f"{x.noise}.")
    )


def stop_lines(d: an.Diagnostics) -> list[str]:
    """Runs Hyperband stopped (by design) and runs that went wrong, as two separate sentences."""
    out = []
    if d.hyperband:
        at = ", ".join(f"{n} after {_n(e, 'epoch')}" for e, n in d.stop_epochs.items())
        brackets = f"; brackets at epochs {', '.join(map(str, d.brackets))}" if d.brackets else ""
        out.append(f"Stopped by Hyperband, by design: {len(d.hyperband)} ({at}{brackets}).")
    kinds = ", ".join(f"{state} {n}" for state, n in Counter(p.run.state for p in d.problems).items())
    out.append(
        f"Problems (diverged, crashed, or stopped for another reason): {len(d.problems)}"
        + (f" ({kinds})." if kinds else ".")
    )
    return out
