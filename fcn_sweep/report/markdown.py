"""summary.md: the headline numbers, the top of the leaderboard, importance, ablation outcomes and the
figures with their captions, in Markdown ready to paste into a write-up (figure paths are relative
to the report folder)."""

from __future__ import annotations

from . import analysis as an
from . import caveats
from .figures import Figure
from .html import _f, pm
from .load import Study

TOP = 5  # a write-up's table; the HTML has the full leaderboard


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


def interval(i: an.Importance) -> str:
    return "" if i.interval is None else f" [{i.interval[0]:.2f}, {i.interval[1]:.2f}]"


def render(study: Study, results: an.Results, figures: dict[str, Figure]) -> str:
    out = [f"# Study report: {study.name}", ""]
    counts = ", ".join(f"{k} {v}" for k, v in results.diagnostics.counts.items() if v)
    out.append(f"- {len(study.runs)} run attempts ({counts}); swept: {', '.join(study.swept) or 'nothing'}.")
    if results.leaderboard:
        b = results.leaderboard[0]
        cfg = ", ".join(f"{k}={_f(v)}" for k, v in b.values.items()) or "(the only config)"
        out.append(
            f"- Best config by validation accuracy: {cfg}: val acc {pm(b.val)}, test acc {pm(b.test)} "
            f"({b.val.n} seed{'s' if b.val.n > 1 else ''}; mean ± std)."
        )
    if results.importance:
        ranked = ", ".join(f"{i.name} ({i.importance:.2f}{interval(i)}{', aliased' if i.members else ''})"
                           for i in results.importance)  # fmt: skip
        out.append(f"- Parameter importance (random forest; 90% bootstrap interval): {ranked}.")
    for ab in results.ablations:
        deltas = ", ".join(f"{_f(v)} {pm(s)}" for v, s in ab.mean_delta.items() if v != ab.reference and s is not None)
        if ab.rows:
            out.append(
                f"- Ablation of {ab.param} ({len(ab.rows)} matched settings): mean Δ val acc vs "
                f"{_f(ab.reference)}: {deltas}; wins: "
                + ", ".join(f"{_f(v)} {w}" for v, w in ab.wins.items())
                + "."
                + caveats.ablation_intervals(ab, results.evidence)
            )
    problems = [p for p in results.diagnostics.problems]
    out.append(f"- Diverged, stopped or crashed: {len(problems)}.")
    out += [f"- **{c.split(':', 1)[0]}:**{c.split(':', 1)[1]}" for c in caveats.summary(study, results)]
    nz = results.evidence.noise
    if results.leaderboard:
        out += ["", "## Leaderboard", ""]
        out += md_table(
            ["#", *study.swept, "seeds", "val acc", "gap to #1", "test acc", "epochs to best", "params"],
            [
                [str(k), *(_f(e.values[p]) for p in study.swept), str(e.val.n), pm(e.val),
                 caveats.versus_best(nz, results.leaderboard[0], e), pm(e.test),
                 pm(e.best_epoch, 1), f"{e.n_params:,}" if e.n_params else "–"]
                for k, e in enumerate(results.leaderboard[:TOP], 1)
            ],
        )  # fmt: skip
        out += ["", caveats.leaderboard_note(nz)]
    if results.importance:
        out += ["", "## Parameter importance", "", caveats.importance_note(results.importance), ""]
        out += md_table(
            ["parameter", "importance", "correlation", "mean val acc per value"],
            [
                [i.name + (" (aliased)" if i.members else ""), f"{i.importance:.3f}{interval(i)}",
                 "–" if i.correlation is None else f"{i.measure} = {i.correlation:+.2f}",
                 "; ".join(f"{_f(lv.value)}: {pm(lv.val)}" for lv in i.marginal)]
                for i in results.importance
            ],
        )  # fmt: skip
    if results.evidence.health:
        out += ["", "## Run health", ""]
        out += md_table(
            ["run", "flag", "what happened", "status"],
            [[an.short_id(f.run.id), f.kind, f.detail, f.run.state] for f in results.evidence.health],
        )
    out += ["", "## Figures", ""]
    for f in figures.values():
        out += [f"![{f.title}](figures/{f.path.name})", "", f"*{f.title}.* {f.caption}", ""]
    return "\n".join(out).rstrip() + "\n"
