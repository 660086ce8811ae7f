"""The report's long tables in full, as CSV files beside report.html (`tables/*.csv`), and which rows of
them the page itself shows.

An ablation of the study's grid has one row per matched setting: 1,944 for a parameter of three
values, over 60,000 in all. Nobody reads that many rows in a page, and a page that holds them is
slow to open and to scroll; so the page shows the extremes (the best and the worst settings, ranked
as the analysis ranks them) with the summary row, and links the whole table, one click away, in a
form a spreadsheet or pandas reads. Short tables are shown whole and written all the same, so a
script finds every table in one place whatever the study's size.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..formatting import value
from . import analysis as an
from .evidence import Flag
from .load import Study
from .results import Results

FOLDER = "tables"
EXTREMES = 5  # rows the page shows from each end of a long table
FLAGS_SHOWN = 20  # rows of a list of runs the page shows (health flags, collapsed runs first; problems)


def ablation_file(param: str) -> str:
    return f"{FOLDER}/ablation-{param}.csv"


HEALTH_FILE = f"{FOLDER}/health.csv"
STOPPED_FILE = f"{FOLDER}/stopped-by-hyperband.csv"
PROBLEMS_FILE = f"{FOLDER}/problems.csv"


def extremes(rows: list[Any], k: int = EXTREMES) -> tuple[list[Any], int, list[Any]]:
    """The first k and the last k rows, and how many lie between; a table of 2k + 1 rows or fewer is
    shown whole (hiding one row saves nothing)."""
    if len(rows) <= 2 * k + 1:
        return rows, 0, []
    return rows[:k], len(rows) - 2 * k, rows[-k:]


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def ablation_table(ab: an.Ablation) -> tuple[list[str], list[list[str]]]:
    """Every matched setting of an ablation: the other parameters, then per value its mean, std and
    seeds, its difference from the reference value, and its run ids (full precision, for a script)."""
    others = list(ab.rows[0].context) if ab.rows else []
    vals = [value(v) for v in ab.levels]
    header = [*others, *(f"{v} {what}" for v in vals for what in ("val acc", "std", "seeds")),
              *(f"delta {v} vs {vals[0]}" for v in vals[1:]), *(f"{v} runs" for v in vals)]  # fmt: skip
    rows = []
    for row in ab.rows:
        stats = []
        for v in ab.levels:
            s = row.val.get(v)
            stats += [_num(s.mean), _num(s.std), str(s.n)] if s else ["", "", ""]
        rows.append([*(value(row.context[p]) for p in others), *stats,
                     *(_num(row.delta.get(v)) for v in ab.levels[1:]),
                     *(" ".join(row.runs.get(v, [])) for v in ab.levels)])  # fmt: skip
    return header, rows


def first_flags(flags: list[Flag]) -> tuple[list[Flag], int]:
    """The flags a page lists, collapsed runs first (the flag a reader must not miss, so never one left
    to the CSV), and how many more there are."""
    ranked = sorted(flags, key=lambda f: f.kind != "collapsed")
    return ranked[:FLAGS_SHOWN], max(0, len(ranked) - FLAGS_SHOWN)


def health_table(study: Study, flags: list[Flag]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "flag", "what happened", "status", *study.swept]
    return header, [[f.run.id, f.kind, f.detail, f.run.state, *(value(f.run.value(p)) for p in study.swept)]
                    for f in flags]  # fmt: skip


def problem_table(study: Study, problems: list[an.Problem]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "state", "why", "epochs", "best val acc", *study.swept]
    return header, [[p.run.id, p.run.state, p.detail, str(p.epochs), _num(p.run.objective),
                     *(value(p.values[k]) for k in study.swept)] for p in problems]  # fmt: skip


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write(study: Study, results: Results, out: Path) -> list[Path]:
    """Every ablation with a matched setting, the run health flags, the runs Hyperband stopped and the
    problem runs, under `out` (the report folder): the files the page links to."""
    written = []
    for ab in results.ablations:
        if ab.rows:
            written.append(out / ablation_file(ab.param))
            _write(written[-1], *ablation_table(ab))
    if results.evidence.health:
        written.append(out / HEALTH_FILE)
        _write(written[-1], *health_table(study, results.evidence.health))
    for file, problems in (
        (STOPPED_FILE, results.diagnostics.hyperband),
        (PROBLEMS_FILE, results.diagnostics.problems),
    ):
        if problems:
            written.append(out / file)
            _write(written[-1], *problem_table(study, problems))
    return written
