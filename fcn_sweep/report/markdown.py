"""summary.md: the headline numbers, the top of the leaderboard, importance, ablation outcomes and the
figures with their captions, in Markdown ready to paste into a write-up (figure paths are relative
to the report folder)."""

from __future__ import annotations

from ..formatting import plural, pm, value
from . import analysis as an
from . import captions, caveats, tables
from .figures import Figure
from .importance import Importance
from .load import Study
from .results import Results

TOP = 5  # a write-up's table; the HTML has the full leaderboard


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


def interval(i: Importance) -> str:
    return "" if i.interval is None else f" [{i.interval[0]:.2f}, {i.interval[1]:.2f}]"


def correlation(i: Importance) -> str:
    if i.correlation is None:
        return "–"
    return f"{i.measure} = {i.correlation:+.2f}" + (" (log10)" if i.log else "")


def ranked(imp: list[Importance]) -> str:
    return ", ".join(f"{i.name} ({i.importance:.2f}{interval(i)}{', aliased' if i.members else ''})" for i in imp)


def render(study: Study, results: Results, figures: dict[str, Figure]) -> str:
    out = [f"# Study report: {study.name}", ""]
    caveat = [f"- **{c.split(':', 1)[0]}:**{c.split(':', 1)[1]}" for c in caveats.summary(study, results)]
    if results.finished_nothing:  # the one thing to know opens the summary, before any count
        out, caveat = out + caveat, []
    counts = ", ".join(f"{k} {v}" for k, v in results.diagnostics.counts.items() if v)
    out.append(f"- {plural(len(study.runs), 'run attempt')} ({counts}); swept: {', '.join(study.swept) or 'nothing'}.")
    if results.leaderboard:
        b = results.leaderboard[0]
        cfg = ", ".join(f"{k}={value(v)}" for k, v in b.values.items()) or "(the only config)"
        out.append(
            f"- Best config by validation accuracy: {cfg}: val acc {pm(b.val)}, test acc {pm(b.test)} "
            f"({'mean ± std over ' if b.val.n > 1 else ''}{plural(b.val.n, 'seed')})."
        )
    if results.importance:
        out.append(
            f"- Parameter importance (random forest; 90% bootstrap interval) over {results.basis.describe}: "
            f"{ranked(results.importance)}."
        )
    if results.early:
        out.append(f"- Parameter importance over {results.early_basis.describe}: {ranked(results.early)}.")
    for ab in results.ablations:
        deltas = ", ".join(f"{value(v)} {pm(s)}" for v, s in ab.mean_delta.items() if v != ab.reference and s)
        wins = ", ".join(f"{value(v)} {w}" for v, w in ab.wins.items())
        if ab.param in results.by_level:
            out.append(
                f"- Ablation of {ab.param} ({plural(len(ab.rows), 'matched setting')}): Δ val acc vs "
                f"{value(ab.reference)} {caveats.by_level(ab.param, results.by_level[ab.param])}; wins: {wins}."
            )
        elif ab.rows:
            out.append(
                f"- Ablation of {ab.param} ({plural(len(ab.rows), 'matched setting')}): mean Δ val acc vs "
                f"{value(ab.reference)}: {deltas}; wins: {wins}." + caveats.ablation_intervals(ab, results.evidence)
            )
    out += [f"- {line}" for line in captions.stop_lines(results.diagnostics)]
    out += caveat
    nz = results.evidence.noise
    if results.leaderboard:
        out += ["", "## Leaderboard", ""]
        out += md_table(
            ["#", *study.swept, "seeds", "val acc", "gap to #1", "test acc", "epochs to best", "params"],
            [
                [str(k), *(value(e.values[p]) for p in study.swept), str(e.val.n), pm(e.val),
                 caveats.versus_best(nz, results.leaderboard[0], e), pm(e.test),
                 pm(e.best_epoch, 1), f"{e.n_params:,}" if e.n_params else "–"]
                for k, e in enumerate(results.leaderboard[:TOP], 1)
            ],
        )  # fmt: skip
        out += ["", caveats.leaderboard_note(nz)]
    for title, imp, basis in (
        ("Parameter importance", results.importance, results.basis),
        ("Parameter importance at the first bracket", results.early, results.early_basis),
    ):
        if imp:
            out += ["", f"## {title}", "", f"Over {basis.describe}. {caveats.importance_note(imp)}", ""]
            out += md_table(
                ["parameter", "importance", "correlation", f"mean {basis.name} per value or bin (n)"],
                [
                    [i.name + (" (aliased)" if i.members else ""), f"{i.importance:.3f}{interval(i)}",
                     correlation(i),
                     "; ".join(f"{lv.label}: {pm(lv.val)} ({lv.val.n})" for lv in i.marginal)]
                    for i in imp
                ],
            )  # fmt: skip
    if results.interactions:
        out += ["", "## Interactions", "", caveats.interactions_note(results.interactions), ""]
        out += md_table(*caveats.interactions_table(results.interactions))
        for x in results.named:
            out += ["", f"Config means (mean over seeds, then over the other parameters), {' × '.join(x.params)}:", ""]
            out += md_table(*caveats.means_table(x))
    if results.evidence.health:
        shown, hidden = tables.first_flags(results.evidence.health)
        out += ["", "## Run health", ""]
        out += md_table(
            ["run", "flag", "what happened", "status"],
            [[an.short_id(f.run.id), f.kind, f.detail, f.run.state] for f in shown],
        )
        if hidden:
            out += ["", f"{plural(len(results.evidence.health), 'flag')} in all; {hidden} not shown here: every one in "
                        f"[{tables.HEALTH_FILE}]({tables.HEALTH_FILE})."]  # fmt: skip
    out += ["", "## Figures", ""]
    for f in figures.values():
        out += [f"![{f.title}](figures/{f.path.name})", "", f"*{f.title}.* {f.caption}", ""]
    return "\n".join(out).rstrip() + "\n"
