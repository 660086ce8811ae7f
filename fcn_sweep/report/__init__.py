"""`fcn-sweep report DIR`: what a sweep found, offline. DIR is a sweep directory or a folder of run
directories; the report folder gets report.html (self-contained), summary.md, figures/*.png and
tables/*.csv.

One way, each stage on what the earlier ones found (no module imports a later one):
  load.py        either source → one Study (a table of runs and what was swept); configs.py: what a
                 config is (runs equal but for the seed), shared with `fcn-sweep status`
  analysis.py    leaderboard, ablations, diagnostics, curve picks: data, no drawing
  evidence.py    what the runs cannot show (aliasing, seed noise, run health)
  importance.py  parameter importance, fitted once with aliased parameters joined
  next_sweep.py  next-sweep.yaml, when aliasing or too few seeds leave the question open
  results.py     all of the above, assembled once
  figures.py / html.py / markdown.py   the PNGs, report.html and summary.md, in the words of
                 captions.py and caveats.py; plotly_embed.py: plotly.js and the parallel coordinates
                 in the page; tables.py: the long tables in full (tables/*.csv), their extremes in the page

Everything the user can get wrong (DIR, --ablate, --runs) is checked before anything is written, and
the report is assembled in a temporary folder that replaces the old one only when complete.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..config import RunConfig
from .load import Study, StudyError, load

__all__ = ["Report", "StudyError", "build", "load"]
OUTPUTS = ("report.html", "summary.md", "figures", "tables", "next-sweep.yaml")


@dataclass(frozen=True)
class Report:
    out: Path
    html: Path
    summary: Path
    figures: list[Path]
    next_sweep: Path | None = None


class Clock:
    """Seconds since the last call, by stage name, into `into` (nothing kept when it is None)."""

    def __init__(self, into: dict[str, float] | None):
        self.into, self.t = into, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        if self.into is not None:
            self.into[stage] = now - self.t
        self.t = now


def check_ablate(study: Study, names: list[str] | None) -> list[str]:
    if names is None:
        return list(study.swept)
    known = {f.name for f in fields(RunConfig)}
    for n in names:
        if n not in study.swept:
            why = "was not swept in this study" if n in known else "is not a parameter"
            raise StudyError(f"--ablate {n!r} {why}; swept: {', '.join(study.swept) or 'nothing'}")
    return names


def build(
    directory: str | Path,
    out: str | Path | None = None,
    ablate: list[str] | None = None,
    runs: list[str] = (),
    top: int = 10,
    curves: int = 4,
    stages: dict[str, float] | None = None,
) -> Report:
    """`stages`, where given, gets the seconds each stage took (`fcn-sweep bench report` prints them)."""
    from . import figures, html, markdown, next_sweep, results, tables

    clock = Clock(stages)
    study = load(directory)
    clock("load")
    ablate = check_ablate(study, ablate)
    named = [study.run(i) for i in runs]
    final = Path(out) if out is not None else Path(directory) / "report"
    if final.exists() and not final.is_dir():
        raise StudyError(f"--out {final} exists and is not a directory")
    found = results.analyse(study, ablate, named, top=top, curves=curves)
    clock("analysis")

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        figs = figures.render(study, found, tmp / "figures")
        clock("figures")
        html.write(study, found, figs, tmp, final)
        tables.write(study, found, tmp)
        clock("html and tables")
        (tmp / "summary.md").write_text(markdown.render(study, found, figs), encoding="utf-8")
        if found.next_sweep is not None:
            (tmp / next_sweep.FILE).write_text(next_sweep.render(found.next_sweep, study), encoding="utf-8")
        final.mkdir(exist_ok=True)
        for name in OUTPUTS:  # a report from an earlier run is replaced part by part, never mixed
            target = final / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists() and not (tmp / name).exists():
                target.unlink()  # an earlier report's next sweep, no longer called for
            if (tmp / name).exists():
                (tmp / name).replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    clock("markdown and files")
    nxt = final / next_sweep.FILE
    figs = sorted((final / "figures").glob("*.png"))
    return Report(final, final / "report.html", final / "summary.md", figs, nxt if nxt.is_file() else None)
