"""report.html: one self-contained file that opens from disk with no network.

plotly.js is inlined once, gzipped (plotly_embed.py; the interactive parallel coordinates need it);
the other figures are the very PNGs written beside the report, embedded as data URIs so the HTML and
the PNGs never differ. Long tables show their extremes and link the whole table (tables.py).
Links to run directories are relative, so the report folder can move together with its sweep.
"""

from __future__ import annotations

import base64
import datetime
import os
from html import escape
from pathlib import Path

from ..formatting import metric, plural, pm, value
from . import analysis as an
from . import captions, caveats, plotly_embed, tables
from . import evidence as ev
from .fidelity import Basis
from .figures import CMAP, Figure
from .importance import Importance
from .load import RunRecord, Study, levels
from .results import Results

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 28px 48px; background: #fff; }
h1 { font-size: 24px; margin: 8px 0 2px; } h2 { font-size: 19px; margin: 30px 0 8px; border-bottom: 2px solid #e4e4e4; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta, figcaption, .note { color: #555; font-size: 13px; }
nav a { margin-right: 14px; }
ul.headline { font-size: 15px; padding-left: 20px; } ul.headline li { margin: 3px 0; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e6e6e6; text-align: left; vertical-align: top; }
th { background: #f1f3f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fbfbfc; }
tr.best td { background: #eef7ee; }
.pos { color: #1a7f37; } .neg { color: #c62828; }
.bar { display: inline-block; height: 10px; background: #3b75af; vertical-align: middle; margin-right: 6px; }
figure { margin: 10px 0 18px; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { max-width: 1100px; margin-top: 4px; }
#parallel-plot { width: 100%; height: 460px; }
.state-finished { color: #1a7f37; } .state-stopped { color: #b26a00; }
.state-diverged, .state-crashed, .flag-collapsed { color: #c62828; } .flag-plateaued, .flag-overfit { color: #b26a00; }
.caveat { color: #8a4b00; }
"""


def signed(d: float | None, near: bool = False) -> str:
    if d is None:
        return "<td class='num'>–</td>"
    cls = "pos" if d > 0 else "neg" if d < 0 else ""
    return f"<td class='num {cls}'>{caveats.NEAR + ' ' if near else ''}{d:+.4f}</td>"


def table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """Cells are HTML already (escaped by the caller); a cell starting with <td is used as is."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row)
        cls = f" class='{classes[i]}'" if classes and classes[i] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def num(text: str) -> str:
    return f"<td class='num'>{text}</td>"


def more(columns: int, text: str) -> str:
    """A row across the table saying what was left out of the page and where it is."""
    return f"<td class='note' colspan='{columns}'>{text}</td>"


class Page:
    def __init__(self, study: Study, results: Results, figures: dict[str, Figure], out: Path):
        self.study, self.results, self.figures, self.out = study, results, figures, out

    def link(self, run: RunRecord) -> str:
        label = escape(an.short_id(run.id))
        if run.run_dir is None:
            return label
        href = Path(os.path.relpath(run.run_dir.resolve(), self.out.resolve())).as_posix() + "/"
        return f"<a href='{escape(href)}' title='{escape(run.id)}'>{label}</a>"

    def flags(self, runs: list[RunRecord]) -> str:
        """Health flags of these runs, after their status: a collapsed run may still have `finished`."""
        flags = [f for r in runs for f in self.results.evidence.flags(r)]
        return "".join(
            f" <span class='flag-{f.kind}' title='{escape(an.short_id(f.run.id))}: {escape(f.detail)}'>"
            f"({escape(f.kind)})</span>"
            for f in flags
        )

    def figure(self, name: str) -> str:
        f = self.figures.get(name)
        if f is None:
            return ""
        data = base64.b64encode(f.path.read_bytes()).decode()
        return (
            f"<figure><img alt='{escape(f.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{escape(f.title)}.</b> {escape(f.caption)} "
            f"(figures/{escape(f.path.name)})</figcaption></figure>"
        )

    # --- sections ---------------------------------------------------------------------------------
    def headline(self) -> str:
        s, r = self.study, self.results
        counts = ", ".join(f"{k} {v}" for k, v in r.diagnostics.counts.items() if v)
        items = [
            f"{plural(len(s.runs), 'run attempt')} ({counts}); {plural(len(r.configs), 'config')} with a score, "
            f"{plural(len(s.done), 'run')} that count{'s' if len(s.done) == 1 else ''}.",
            "Swept: " + (", ".join(f"<b>{escape(p)}</b> ({len(levels(s, p))})" for p in s.swept) or "nothing"),
        ]
        if r.leaderboard:
            b = r.leaderboard[0]
            cfg = ", ".join(f"{escape(k)}={escape(value(v))}" for k, v in b.values.items())
            items.append(
                f"Best config: {cfg or '(the only one)'} — val acc {pm(b.val)}, test acc {pm(b.test)} "
                f"over {b.val.n} seed{'s' if b.val.n > 1 else ''}."
            )
        if r.importance:
            i = r.importance[0]
            items.append(
                f"Most important parameter: <b>{escape(i.name)}</b> (importance {i.importance:.2f}, over "
                f"{escape(r.basis.describe)})."
            )
        items += [escape(line) for line in captions.stop_lines(r.diagnostics)]
        said = [f"<span class='caveat'>{escape(c)}</span>" for c in caveats.summary(s, r)]
        items = said + items if r.finished_nothing else items + said  # nothing finished: say so first
        return "<ul class='headline'>" + "".join(f"<li>{x}</li>" for x in items) + "</ul>"

    def parallel(self) -> str:
        axes, runs = an.parallel_axes(self.study)
        if len(axes) < 2 or not runs:
            return "<p class='note'>Nothing swept, or no run with a score: no parallel coordinates.</p>"
        plot = plotly_embed.parallel(axes, CMAP.capitalize())
        f = self.figures.get("parallel")
        caption = (
            f"<figcaption><b>Parallel coordinates.</b> {escape(f.caption)} (static: figures/parallel.png)</figcaption>"
        )
        return f"<figure>{plot}{caption if f else ''}</figure>"

    def leaderboard(self) -> str:
        board = self.results.leaderboard
        if not board:
            return "<p class='note'>No run ended with a score.</p>"
        header = ["#", *map(escape, self.study.swept), "seeds", "val acc", "gap to #1", "test acc", "epochs to best",
                  "params", "status", "runs"]  # fmt: skip
        nz = self.results.evidence.noise
        rows = [
            [num(str(k)), *(escape(value(e.values[p])) for p in self.study.swept), num(str(e.val.n)), num(pm(e.val)),
             num(escape(caveats.versus_best(nz, board[0], e))),
             num(pm(e.test)), num(pm(e.best_epoch, 1)), num(f"{e.n_params:,}" if e.n_params else "–"),
             ", ".join(f"<span class='state-{escape(s)}'>{escape(s)}</span>" + (f" ×{c}" if c > 1 else "")
                       for s, c in e.states.items()) + self.flags(e.runs),
             " ".join(self.link(r) for r in e.runs)]
            for k, e in enumerate(board, 1)
        ]  # fmt: skip
        note = (
            "<p class='note'>Configs ranked by best validation accuracy, mean ± standard deviation over "
            "seeds (the test set never ranks anything); test accuracy is at each run's best validation "
            f"epoch. Runs link to their run directories. {escape(caveats.leaderboard_note(nz))}</p>"
        )
        return note + table(header, rows, ["best"] + [""] * (len(rows) - 1))

    def importance(self) -> str:
        r = self.results
        out = self.importance_table(r.importance, r.basis, "")
        if r.early_basis is not None:
            out += f"<h3>At the first bracket: epoch {r.early_basis.epoch}</h3>"
            out += self.importance_table(r.early, r.early_basis, "-early")
        return out

    def importance_table(self, imp: list[Importance], basis: Basis, suffix: str) -> str:
        if not basis.runs:
            return "<p class='note'>No run has trained its full budget yet: nothing to compare.</p>"
        note = f"<p class='note'>Over {escape(basis.describe)}.</p>"
        if not imp:
            return note + "<p class='note'>Needs at least one swept parameter and two such runs with a score.</p>"
        rows = []
        for i in imp:
            corr = (
                "–" if i.correlation is None else f"{i.measure} = {i.correlation:+.2f}" + (" (log10)" if i.log else "")
            )
            marg = "<br>".join(f"{escape(lv.label)}: {pm(lv.val)} <span class='note'>(n={lv.val.n})</span>"
                               for lv in i.marginal)  # fmt: skip
            bar = f"<span class='bar' style='width:{i.importance * 120:.0f}px'></span>{i.importance:.3f}"
            if i.interval:
                bar += f" <span class='note'>[{i.interval[0]:.2f}, {i.interval[1]:.2f}]</span>"
            name = f"<b>{escape(i.name)}</b>" + (" <span class='caveat'>(aliased)</span>" if i.members else "")
            rows.append([name, num(bar), num(corr), marg])
        head = ["parameter", "importance (random forest)", f"correlation with {basis.name}",
                f"mean {basis.name} per value (or bin of values)"]  # fmt: skip
        note += f"<p class='note'>{escape(caveats.importance_note(imp))}</p>"
        return note + table(head, rows) + self.figure(f"importance{suffix}") + self.figure(f"marginals{suffix}")

    def interactions(self) -> str:
        found = self.results.interactions
        if not found:
            return "<p class='note'>No two swept parameters crossed in the configs that count.</p>"
        header, rows = caveats.interactions_table(found)
        out = f"<p class='note'>{escape(caveats.interactions_note(found))}</p>" + table(
            header, [[escape(c) for c in row] for row in rows], ["best" if x.named else "" for x in found]
        )
        for x in self.results.named:
            header, rows = caveats.means_table(x)
            out += f"<h3>{escape(' × '.join(x.params))}</h3><p>{escape(caveats.interaction(x, False))}</p>"
            out += table([escape(h) for h in header], [[escape(c) for c in row] for row in rows])
            out += self.figure(f"interaction-{'-'.join(x.params)}")
        return out

    def ablations(self) -> str:
        if not self.results.ablations:
            return "<p class='note'>Nothing swept: no ablations.</p>"
        return "".join(self.ablation(ab) for ab in self.results.ablations)

    def ablation(self, ab: an.Ablation) -> str:
        title = f"<h3 id='ablation-{escape(ab.param)}'>{escape(ab.param)}</h3>"
        if not ab.rows:
            why = self.results.evidence.blocked.get(ab.param)
            text = caveats.blocked(ab.param, why) if why is not None else "No two runs differ in this parameter alone."
            return title + f"<p class='caveat'>{escape(text)} Nothing to set side by side.</p>"
        others = list(ab.rows[0].context)
        vals = [escape(value(v)) for v in ab.levels]
        header = [*map(escape, others), *(f"{v}<br><span class='note'>val acc</span>" for v in vals),
                  *(f"Δ {v}<br><span class='note'>vs {vals[0]}</span>" for v in vals[1:]), "runs"]  # fmt: skip
        rows = []
        marks = self.results.evidence.ablations[ab.param].within
        head, hidden, tail = tables.extremes(list(zip(ab.rows, marks, strict=True)))
        for row, near in head + tail:
            best = max(row.val, key=lambda v: row.val[v].mean)
            cells = [
                num(("<b>" if v == best else "") + pm(row.val.get(v)) + ("</b>" if v == best else ""))
                for v in ab.levels
            ]
            runs = "; ".join(
                f"{escape(value(v))}: " + " ".join(self.link(self.study.run(i)) for i in row.runs[v])
                for v in ab.levels
                if v in row.runs
            )
            rows.append([*(escape(value(row.context[p])) for p in others), *cells,
                         *(signed(row.delta.get(v), near.get(v, False)) for v in ab.levels[1:]), runs])  # fmt: skip
        csv = escape(tables.ablation_file(ab.param))
        if hidden:  # the middle of a long table: one click away, not in the page
            rows.insert(len(head), [more(len(header), f"… {hidden:,} more settings between these: every one in "
                                                      f"<a href='{csv}'>{csv}</a>")])  # fmt: skip
        split = self.results.by_level.get(ab.param)
        rows.append([*(["<b>mean Δ</b>"] + [""] * (len(others) - 1) if others else []),
                     *(num(f"wins {ab.wins[v]}") for v in ab.levels),
                     *(num(pm(ab.mean_delta[v]) if ab.mean_delta[v] and not split else "–") for v in ab.levels[1:]),
                     ""])  # fmt: skip
        if split is not None:  # it interacts: one mean Δ per level of its partner, not one over them all
            words = f"<p class='caveat'>Δ vs {vals[0]} {escape(caveats.by_level(ab.param, split))}.</p>"
        else:
            words = f"<p class='note'>{escape(caveats.ablation_intervals(ab, self.results.evidence))}</p>"
        shown = (
            f"the {tables.EXTREMES} best and the {tables.EXTREMES} worst of its {len(ab.rows):,} matched settings "
            f"are shown (ranked by the row's best value), all of them in <a href='{csv}'>{csv}</a>"
            if hidden
            else f"every matched setting is shown (also in <a href='{csv}'>{csv}</a>)"
        )
        intro = (
            f"<p class='note'>Each row holds every other swept parameter fixed and sets the runs with each "
            f"value of <b>{escape(ab.param)}</b> side by side (best validation accuracy, mean ± std over "
            f"seeds; the best of the row in bold). Δ is the difference from {vals[0]}; the last row gives "
            f"how often each value was best and the mean Δ, over every setting. {caveats.NEAR} marks a row's Δ "
            f"inside the seed noise (95%). Here {shown}.</p>"
        )
        return title + intro + table(header, rows) + words + self.figure(f"ablation-{ab.param}")

    def curves(self) -> str:
        runs = self.results.curves
        if not runs:
            return "<p class='note'>No run with a score to plot.</p>"
        listed = table(
            ["run", "curve label", "best val acc", "best epoch", "state"],
            [[self.link(r), escape(lab), num(metric(r.objective)), num(value(r.summary.get("best_epoch"))),
              escape(r.state) + self.flags([r])]
             for r, lab in zip(runs, self.results.curve_labels, strict=True)],
        )  # fmt: skip
        return self.figure("curves") + listed

    def diagnostics(self) -> str:
        d = self.results.diagnostics
        counts = table([escape(k) for k in d.counts], [[num(str(v)) for v in d.counts.values()]])
        note = (
            "<p class='note'>Every run attempt by state, as the source holds them. A crashed or interrupted "
            "attempt is re-run under a new id, so it is counted here but not in the analysis.</p>"
        )
        out = note + counts + "".join(f"<p>{escape(line)}</p>" for line in captions.stop_lines(d))
        if d.hyperband:
            out += "<h3>Stopped by Hyperband</h3>" + self.problem_table(d.hyperband, tables.STOPPED_FILE)
        if d.problems:
            out += "<h3>Problems</h3>" + self.problem_table(d.problems, tables.PROBLEMS_FILE)
        return out + self.health()

    def problem_table(self, problems: list[an.Problem], csv: str) -> str:
        """The first runs of a list (a Hyperband grid stops thousands), the rest one click away."""
        rows = [
            [self.link(p.run), f"<span class='state-{escape(p.run.state)}'>{escape(p.run.state)}</span>",
             escape(p.detail), num(str(p.epochs)), num(metric(p.run.objective)),
             escape(", ".join(f"{k}={value(v)}" for k, v in p.values.items()))]
            for p in problems[: tables.FLAGS_SHOWN]
        ]  # fmt: skip
        if (hidden := len(problems) - tables.FLAGS_SHOWN) > 0:
            rows.append([more(6, f"… {hidden:,} more runs: every one in <a href='{escape(csv)}'>{escape(csv)}</a>")])
        return table(["run", "state", "why", "epochs", "best val acc", "config"], rows)

    def health(self) -> str:
        flags = self.results.evidence.health
        if not flags:
            return "<p>Run health: no run collapsed, plateaued early or overfit.</p>"
        shown, hidden = tables.first_flags(flags)
        rows = [
            [self.link(f.run), f"<span class='flag-{f.kind}'>{escape(f.kind)}</span>", escape(f.detail),
             escape(f.run.state), escape(", ".join(f"{k}={value(f.run.value(k))}" for k in self.study.swept))]
            for f in shown
        ]  # fmt: skip
        if hidden:
            csv = escape(tables.HEALTH_FILE)
            rows.append([more(5, f"… {hidden:,} more flags: every one in <a href='{csv}'>{csv}</a>")])
        note = (
            "<p class='note'>Run health, from each run's curves: <b>collapsed</b>, val acc ended "
            f"{ev.COLLAPSE} or more below its best; <b>plateaued</b>, within {ev.PLATEAU_TOL} of its best in "
            f"the first quarter of its epochs; <b>overfit</b>, the train − val accuracy gap grew by "
            f"{ev.OVERFIT_GAP} or more after its best epoch.</p>"
        )
        return "<h3>Run health</h3>" + note + table(["run", "flag", "what happened", "status", "config"], rows)

    # --- the page ---------------------------------------------------------------------------------
    SECTIONS = (
        ("summary", "Summary", "headline"),
        ("parallel", "Parallel coordinates", "parallel"),
        ("leaderboard", "Leaderboard", "leaderboard"),
        ("importance", "Parameter importance", "importance"),
        ("interactions", "Interactions", "interactions"),
        ("ablations", "Ablations", "ablations"),
        ("curves", "Learning curves", "curves"),
        ("diagnostics", "Diagnostics", "diagnostics"),
    )

    def render(self) -> str:
        nav = " ".join(f"<a href='#{sid}'>{title}</a>" for sid, title, _ in self.SECTIONS)
        body = "".join(
            f"<section id='{sid}'><h2>{title}</h2>{getattr(self, method)()}</section>"
            for sid, title, method in self.SECTIONS
        )
        when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Study report: {escape(self.study.name)}</title><style>{CSS}</style>"
            f"{plotly_embed.head()}</head><body><main>"
            f"<h1>Study report: {escape(self.study.name)}</h1>"
            f"<div class='meta'>{escape(self.study.kind)} {escape(str(self.study.source))} · generated {when} "
            f"by fcn-sweep report · objective: best validation accuracy</div><nav>{nav}</nav>{body}"
            "</main></body></html>"
        )


def write(study: Study, results: Results, figures: dict[str, Figure], out: Path, final: Path) -> Path:
    """Writes report.html into `out`; links are computed as seen from `final`, where it will live."""
    path = out / "report.html"
    path.write_text(Page(study, results, figures, final).render(), encoding="utf-8")
    return path
