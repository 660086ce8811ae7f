"""The report's figures as PNG files (matplotlib, Agg: no display needed), each with its caption.

Each `draw_*` takes analysis results and returns a matplotlib Figure, or None when the study has
nothing to show there (no swept parameter, no run that counts). `render` saves them and returns
`Figure`s that the HTML and the Markdown summary both use, so the two never disagree.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless machines and CI have no display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.ticker import FuncFormatter, NullFormatter
from PIL import Image

from .. import formatting
from . import analysis as an
from . import binning, captions
from .fidelity import Basis
from .importance import Importance
from .interactions import Axis, Interaction
from .load import RunRecord, Study
from .results import Results

DPI = 110
CMAP = "viridis"  # perceptually uniform and colour-blind safe; also the HTML's parallel-coordinates scale
# Curves: train dashed, validation solid, the same colour per run across panels.
CURVE_PANELS = (("loss", "loss"), ("acc", "accuracy"))
SPLITS = (("train", "--"), ("val", "-"))
# Matched settings an ablation figure draws as lines; beyond, a sample and the spread of all. Besides
# the ink, a legend's "best" place is found against every point drawn: seconds over thousands of lines.
LINES = 60
THIN_ABOVE = 500  # runs above which the parallel coordinates' lines are drawn thin


@dataclass(frozen=True)
class Figure:
    name: str  # file stem under figures/
    title: str
    caption: str
    path: Path


def _style() -> None:
    plt.rcParams.update(
        {
            "figure.dpi": DPI,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 9,
        }
    )


def draw_parallel(axes: list[an.Axis], runs: list[RunRecord]) -> plt.Figure | None:
    if len(axes) < 2 or not runs:
        return None
    fig, ax = plt.subplots(figsize=(11, 4.2))
    n = len(axes)
    lows = [min(a.values + (a.tickvals or [])) for a in axes]
    highs = [max(a.values + (a.tickvals or [])) for a in axes]
    scale = [(lo, (hi - lo) or 1.0) for lo, hi in zip(lows, highs, strict=True)]
    ys = np.array(
        [[(a.values[i] - lo) / span for a, (lo, span) in zip(axes, scale, strict=True)] for i in range(len(runs))]
    )
    obj = np.array(axes[-1].values)
    norm = plt.Normalize(obj.min(), obj.max() if obj.max() > obj.min() else obj.min() + 1e-9)
    cmap = plt.get_cmap(CMAP)
    order = np.argsort(obj)  # best drawn last, on top
    # one collection, not one artist per run: thousands of runs draw in the time of a few
    xs = np.broadcast_to(np.arange(n, dtype=float), ys.shape)
    lines = LineCollection(np.stack([xs, ys], axis=-1)[order], colors=cmap(norm(obj[order])), alpha=0.75,
                           linewidths=1.4 if len(runs) <= THIN_ABOVE else 0.6)  # fmt: skip
    ax.add_collection(lines)
    for j, (a, (lo, span)) in enumerate(zip(axes, scale, strict=True)):
        ax.axvline(j, color="0.3", lw=0.8)
        ticks = a.tickvals or list(np.linspace(lo, lo + span, 5))
        text = a.ticktext or [f"{t:.3g}" for t in ticks]
        for t, label in zip(ticks, text, strict=True):
            ax.text(j + 0.02, (t - lo) / span, label, fontsize=8, va="center", ha="left",
                    bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 0.5})  # fmt: skip
    ax.set_xticks(range(n), [a.label for a in axes], fontsize=9, fontweight="bold")
    ax.set_yticks([])
    ax.set_xlim(-0.1, n - 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(False)
    ax.spines["left"].set_visible(False)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="best val acc", pad=0.01)
    fig.tight_layout()
    return fig


def draw_importance(imp: list[Importance], basis: Basis) -> plt.Figure | None:
    if not imp:
        return None
    names = [i.name for i in imp][::-1]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(imp) + 1.4), sharey=True)
    ws = [i.importance for i in imp][::-1]
    # the bootstrap interval as an error bar (the forest on all runs may sit outside its resamples' range)
    err = [[max(0.0, i.importance - i.interval[0]), max(0.0, i.interval[1] - i.importance)] if i.interval else [0, 0]
           for i in imp][::-1]  # fmt: skip
    a1.barh(names, ws, xerr=np.array(err).T.tolist(), color="#3b75af", ecolor="0.3", capsize=3)
    a1.set_xlabel("importance (random forest, sums to 1)")
    corr = [i.correlation if i.correlation is not None else 0.0 for i in imp][::-1]
    a2.barh(names, corr, color=["#2ca02c" if c >= 0 else "#d62728" for c in corr])
    a2.axvline(0, color="0.3", lw=0.8)
    a2.set_xlim(-1, 1)
    a2.set_xlabel(f"correlation with {basis.name} (r; η for categories of 3+ values)")
    for y, i in enumerate(imp[::-1]):
        text = "n/a" if i.correlation is None else f"{i.measure}={i.correlation:+.2f}"
        a2.text(0.02 if (i.correlation or 0) < 0 else -0.02, y, text, va="center",
                ha="left" if (i.correlation or 0) < 0 else "right", fontsize=8)  # fmt: skip
    fig.tight_layout()
    return fig


def _levels_panel(ax, i: Importance, values: list, scores: list[float], rng: np.random.Generator) -> None:
    """A category (or a few numbers) per tick: the runs as jittered dots, the means joined."""
    xs = range(len(i.marginal))
    for k, level in enumerate(i.marginal):
        pts = [s for v, s in zip(values, scores, strict=True) if level.holds(v)]
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(pts)), pts, s=10, color="0.6", zorder=1)
    ax.errorbar(xs, [lv.val.mean for lv in i.marginal], yerr=[lv.val.std for lv in i.marginal],
                fmt="o-", color="#3b75af", capsize=4, lw=1.5, zorder=2)  # fmt: skip
    ax.set_xticks(list(xs), [lv.label for lv in i.marginal], rotation=20 if len(i.marginal) > 4 else 0)
    ax.set_xlim(-0.5, len(i.marginal) - 0.5)


def _binned_panel(ax, i: Importance, values: list, scores: list[float]) -> None:
    """A continuous parameter: every run at its own value, and each bin's mean across the bin's values."""
    ax.scatter(values, scores, s=10, color="0.6", zorder=1)
    centres = [binning.centre(lv.span, i.log) for lv in i.marginal]
    ax.errorbar(
        centres, [lv.val.mean for lv in i.marginal], yerr=[lv.val.std for lv in i.marginal],
        xerr=[[c - lv.span.lo for c, lv in zip(centres, i.marginal, strict=True)],
              [lv.span.hi - c for c, lv in zip(centres, i.marginal, strict=True)]],
        fmt="o-", color="#3b75af", capsize=3, lw=1.5, zorder=2,
    )  # fmt: skip
    if i.log:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: formatting.sig(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def draw_marginals(imp: list[Importance], basis: Basis) -> plt.Figure | None:
    if not imp:
        return None
    cols = min(3, len(imp))
    rows = math.ceil(len(imp) / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(11, 2.6 * rows), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)  # jitter only, so that equal scores do not hide each other
    for ax, i in zip(axs.flat, imp, strict=False):
        values = [i.value(r) for r in basis.runs]  # an aliased group's: its members' values joined
        if i.binned:
            _binned_panel(ax, i, values, basis.scores)
        else:
            _levels_panel(ax, i, values, basis.scores, rng)
        ax.set_title(f"{i.name}  (importance {i.importance:.2f})", fontsize=9)
    for ax in axs[:, 0]:
        ax.set_ylabel(basis.name)
    for ax in list(axs.flat)[len(imp) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _row_means(ab: an.Ablation, rows: list[an.AblationRow]) -> list[float]:
    return [np.mean([r.val[v].mean for r in rows if v in r.val]) if any(v in r.val for r in rows) else np.nan
            for v in ab.levels]  # fmt: skip


def shown_rows(ab: an.Ablation) -> list[an.AblationRow]:
    """The matched settings drawn as lines: all of them, or a fixed random sample of LINES where there
    are more (thousands of lines are ink, not information; the spread panel shows them all)."""
    if len(ab.rows) <= LINES:
        return ab.rows
    pick = np.random.default_rng(0).choice(len(ab.rows), LINES, replace=False)
    return [ab.rows[k] for k in sorted(pick)]


def _spread_panel(ax, ab: an.Ablation, partner: Axis | None) -> None:
    """Every matched setting's difference from the reference value, per value (and per level of the
    partner it interacts with, in the left panel's colours): the distribution, drawn at a cost that
    does not grow with the number of settings."""
    groups = [(None, ab.rows)]
    if partner is not None:
        groups = [(k, [r for r in ab.rows if partner.index(r.context[partner.name]) == k])
                  for k in range(len(partner.keys))]  # fmt: skip
    others = [v for v in ab.levels if v != ab.reference]
    width = 0.7 / len(groups)
    for g, (k, rows) in enumerate(groups):
        color = "0.2" if k is None else plt.get_cmap("tab10")(k % 10)
        for i, v in enumerate(others):
            d = np.array([r.delta[v] for r in rows if r.delta.get(v) is not None])
            if len(d):
                ax.boxplot([d], positions=[i + (g - (len(groups) - 1) / 2) * width], widths=0.8 * width,
                           whis=(5, 95), showfliers=False, manage_ticks=False,
                           boxprops={"color": color}, whiskerprops={"color": color}, capprops={"color": color},
                           medianprops={"color": "#d62728" if k is None else color, "lw": 2})  # fmt: skip
    ax.set_xticks(range(len(others)), [formatting.value(v) for v in others])
    ax.set_xlim(-0.6, len(others) - 0.4)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel(ab.param)
    ax.set_ylabel(f"Δ vs {formatting.value(ab.reference)}, per setting")


def draw_ablation(ab: an.Ablation, partner: Axis | None = None) -> plt.Figure | None:
    """One grey line per matched setting and their mean in red; where the parameter interacts with
    `partner`, one mean per level of it instead, as one mean over both would hide the difference.
    Beyond LINES settings, a sample of them drawn faint, and beside it the spread of every setting's
    difference from the reference value."""
    if not ab.rows:
        return None
    many = len(ab.rows) > LINES
    fig, axs = plt.subplots(1, 2 if many else 1, figsize=(11 if many else 6.5, 2.8), squeeze=False)
    ax = axs[0, 0]
    xs = range(len(ab.levels))
    for row in shown_rows(ab):
        pts = [(k, row.val[v].mean) for k, v in enumerate(ab.levels) if v in row.val]
        ax.plot(*zip(*pts, strict=True), "o-", color="0.65", lw=1, ms=3, alpha=0.35 if many else 1)
    if many:
        _spread_panel(axs[0, 1], ab, partner)
    if partner is None:
        ax.plot(xs, _row_means(ab, ab.rows), "o-", color="#d62728", lw=2.5, ms=6, label="mean over the rows")
    for k, label in enumerate(partner.labels if partner else []):
        rows = [r for r in ab.rows if partner.index(r.context[partner.name]) == k]
        if rows:
            ax.plot(xs, _row_means(ab, rows), "o-", color=plt.get_cmap("tab10")(k % 10), lw=2.5, ms=6,
                    label=f"mean at {partner.name}={label}")  # fmt: skip
    ax.set_xticks(list(xs), [formatting.value(v) for v in ab.levels])
    ax.set_xlabel(ab.param)
    ax.set_ylabel("best val acc (mean over seeds)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def draw_interaction(x: Interaction) -> plt.Figure:
    """One parameter's levels along x, one line per level of the other: parallel lines add up, lines
    that spread or cross interact."""
    a, b = x.axes
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    colors = plt.get_cmap("tab10")
    for j, label in enumerate(b.labels):
        pts = [(i, x.cells[i][j]) for i in range(len(a.labels)) if x.cells[i][j].mean is not None]
        ax.errorbar([i for i, _ in pts], [c.mean for _, c in pts], yerr=[c.half or 0 for _, c in pts], fmt="o-",
                    color=colors(j % 10), capsize=4, lw=1.8, label=f"{b.name}={label}")  # fmt: skip
    ax.set_xticks(range(len(a.labels)), a.labels, rotation=20 if len(a.labels) > 4 else 0)
    ax.set_xlim(-0.4, len(a.labels) - 0.6)
    ax.set_xlabel(a.name)
    ax.set_ylabel("best val acc (config means)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def draw_curves(runs: list[RunRecord], labels: list[str]) -> plt.Figure | None:
    runs_labels = [(r, lab) for r, lab in zip(runs, labels, strict=True) if r.history]
    if not runs_labels:
        return None
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.get_cmap("tab10")
    for ax, (metric, title) in zip(axs, CURVE_PANELS, strict=True):
        for c, (r, label) in enumerate(runs_labels):
            epochs = [h["epoch"] for h in r.history]
            for split, style in SPLITS:
                ys = [np.nan if h.get(f"{split}/{metric}") is None else h[f"{split}/{metric}"] for h in r.history]
                ax.plot(
                    epochs, ys, style, color=colors(c % 10), marker="o", ms=3, label=label if split == "val" else None
                )
        ax.set_title(f"{title}: train dashed, validation solid", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axs[0].set_yscale("log")  # losses span decades early on; a diverging one would flatten the rest
    fig.legend(*axs[1].get_legend_handles_labels(), loc="lower center", ncol=min(2, len(runs_labels)), fontsize=8,
               frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.07 * math.ceil(len(runs_labels) / 2), 1, 1))
    return fig


def save(fig: plt.Figure | None, out: Path, name: str, title: str, caption: Callable[[], str]) -> Figure | None:
    """The caption is only asked for when there is a figure: it quotes numbers that may not exist."""
    if fig is None:
        return None
    path = out / f"{name}.png"
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI)
    plt.close(fig)
    # A palette of 256 colours looks the same on these plots at a quarter of the bytes, and every
    # PNG is inlined in report.html as well.
    Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return Figure(name, title, caption(), path)


def _partner(results: Results, param: str) -> Axis | None:
    """The parameter `param` interacts with (beyond noise), as an axis; None when it interacts with none."""
    split = results.by_level.get(param)
    if split is None:
        return None
    a, b = split[0].axes
    return b if a.name == param else a


def render(study: Study, results: Results, out: Path) -> dict[str, Figure]:
    """Every figure of the report, saved under `out`, by name."""
    _style()
    out.mkdir(parents=True, exist_ok=True)
    imp, basis = results.importance, results.basis
    early, eb = results.early, results.early_basis
    axes, pruns = an.parallel_axes(study)
    at = f" at epoch {eb.epoch}" if eb else ""
    figs = [
        save(draw_parallel(axes, pruns), out, "parallel", "Parallel coordinates",
             lambda: captions.parallel(study, pruns)),
        save(draw_importance(imp, basis), out, "importance", "Parameter importance",
             lambda: captions.importance(imp, basis)),
        save(draw_marginals(imp, basis), out, "marginals", "Marginal effect of each parameter",
             lambda: captions.marginals(imp, basis)),
        save(draw_importance(early, eb) if eb else None, out, "importance-early", f"Parameter importance{at}",
             lambda: captions.importance(early, eb)),
        save(draw_marginals(early, eb) if eb else None, out, "marginals-early", f"Marginal effect{at}",
             lambda: captions.marginals(early, eb)),
        save(draw_curves(results.curves, results.curve_labels), out, "curves", "Learning curves",
             lambda: captions.curves(results.curves, results.curve_labels)),
    ]  # fmt: skip
    figs += [
        save(
            draw_ablation(ab, _partner(results, ab.param)),
            out,
            f"ablation-{ab.param}",
            f"Ablation: {ab.param}",
            lambda ab=ab: captions.ablation(ab, _partner(results, ab.param), len(shown_rows(ab))),
        )
        for ab in results.ablations
    ]
    figs += [
        save(draw_interaction(x), out, f"interaction-{'-'.join(x.params)}", f"Interaction: {' × '.join(x.params)}",
             lambda x=x: captions.interaction(x))
        for x in results.named
    ]  # fmt: skip
    return {f.name: f for f in figs if f is not None}
