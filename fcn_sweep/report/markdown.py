"""summary.md: the headline numbers, the top of the leaderboard, importance, ablation outcomes and the
figures with their captions, in Markdown ready to paste into a write-up (figure paths are relative
to the report folder)."""

from __future__ import annotations

from . import analysis as an
from .figures import Figure
from .html import _f, pm
from .load import Study

TOP = 5  # a write-up's table; the HTML has the full leaderboard


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


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
        ranked = ", ".join(f"{i.name} ({i.importance:.2f})" for i in results.importance)
        out.append(f"- Parameter importance (random forest): {ranked}.")
    for ab in results.ablations:
        deltas = ", ".join(f"{_f(v)} {pm(s)}" for v, s in ab.mean_delta.items() if v != ab.reference and s is not None)
        if ab.rows:
            out.append(
                f"- Ablation of {ab.param} ({len(ab.rows)} matched settings): mean Δ val acc vs "
                f"{_f(ab.reference)}: {deltas}; wins: " + ", ".join(f"{_f(v)} {w}" for v, w in ab.wins.items()) + "."
            )
    problems = [p for p in results.diagnostics.problems]
    out.append(f"- Diverged, stopped or crashed: {len(problems)}.")
    if results.leaderboard:
        out += ["", "## Leaderboard", ""]
        out += md_table(
            ["#", *study.swept, "seeds", "val acc", "test acc", "epochs to best", "params"],
            [
                [str(k), *(_f(e.values[p]) for p in study.swept), str(e.val.n), pm(e.val), pm(e.test),
                 pm(e.best_epoch, 1), f"{e.n_params:,}" if e.n_params else "–"]
                for k, e in enumerate(results.leaderboard[:TOP], 1)
            ],
        )  # fmt: skip
    if results.importance:
        out += ["", "## Parameter importance", ""]
        out += md_table(
            ["parameter", "importance", "correlation", "mean val acc per value"],
            [
                [i.name, f"{i.importance:.3f}", "–" if i.correlation is None else f"{i.measure} = {i.correlation:+.2f}",
                 "; ".join(f"{_f(lv.value)}: {pm(lv.val)}" for lv in i.marginal)]
                for i in results.importance
            ],
        )  # fmt: skip
    out += ["", "## Figures", ""]
    for f in figures.values():
        out += [f"![{f.title}](figures/{f.path.name})", "", f"*{f.title}.* {f.caption}", ""]
    return "\n".join(out).rstrip() + "\n"
