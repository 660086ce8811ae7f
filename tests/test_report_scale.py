"""The report at the study's own scale: synthetic studies of sweeps/grid.yaml's configs made from one
real run directory (`fcn_sweep.bench.study`: config, metrics and summary rewritten from a score model
with two interactions built in). The page must not grow with the number of matched settings, must
name what was built in and nothing else, keep every matched setting one click away, and open in a
browser with every run drawn. The full 5,832-run study is marked slow; a 256- and a 1,296-run study
check the same things, and how the page's size grows, in the default run. How long it takes is
`fcn-sweep bench report`'s business, not a test's."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from fcn_sweep.bench import study as synthetic
from fcn_sweep.report import build, tables

from .browser import CHROMIUM, open_page
from .conftest import needs_data
from .test_report import section

LIMIT = 3_000_000  # bytes of report.html for the grid's 5,832 runs (issue 29)
GRID_RUNS = 5832


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return synthetic.template_run(tmp_path_factory.mktemp("template"))


def make_report(root: Path, template: Path, configs: list[dict]) -> tuple[Path, int]:
    synthetic.write(template, root / "runs", configs)
    return build(root / "runs", root / "report").out, len(configs)


@pytest.fixture(scope="module")
def small_and_medium(tmp_path_factory, template):
    # 256 configs (two values of each parameter) and 1,296 (all three of epochs, init, optimizer, lr)
    small, medium = synthetic.grid(levels=2), synthetic.grid(levels=2, whole=("epochs", "init", "optimizer", "lr"))
    return [make_report(tmp_path_factory.mktemp(name), template, configs)
            for name, configs in (("small", small), ("medium", medium))]  # fmt: skip


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory, template):
    return make_report(tmp_path_factory.mktemp("grid"), template, synthetic.grid())


def check_findings(out: Path, runs: int) -> None:
    """What was built in, said; nothing else claimed; every matched setting in the CSVs, a few in the page."""
    md, html = (out / "summary.md").read_text(), (out / "report.html").read_text()
    named = re.findall(r"^- \*\*The effect of (\w+) depends on (\w+):\*\*", md, re.M)
    assert {frozenset(x) for x in named} == {frozenset(x) for x in synthetic.INTERACTIONS}, named
    assert md.count("| beyond noise |") == len(synthetic.INTERACTIONS)  # and no other pair judged beyond noise
    assert f"- {runs} run attempts (finished {runs});" in md
    assert "**One seed per config:**" in md and "**Next sweep:**" in md
    imp = re.search(r"scored by best val acc: (\w+) \(", md).group(1)
    assert imp in {p for x in synthetic.INTERACTIONS for p in x}  # a parameter of a built-in interaction leads

    abl = section(html, "ablations")
    for param in ("init", "batch_norm", "dropout"):
        with (out / tables.ablation_file(param)).open() as f:
            rows = list(csv.reader(f))[1:]
        others = runs // len({r[param] for r in _configs(out)})  # the settings of the other parameters
        assert len(rows) == others, param  # every matched setting of the full grid holds all values
        block = abl.split(f"<h3 id='ablation-{param}'>")[1].split("<h3")[0]
        shown = len(re.findall(r"<tr[^>]*>", block.split("<tbody>")[1].split("</tbody>")[0]))
        assert shown <= 2 * tables.EXTREMES + 2  # extremes, the "… more" row, the mean Δ row
        assert f"href='{tables.ablation_file(param)}'" in block
        if others > 2 * tables.EXTREMES + 1:
            assert f"… {others - 2 * tables.EXTREMES:,} more settings" in block
            assert "a random sample of 60 of the" in block  # the figure draws a sample, and the spread of all


def _configs(out: Path) -> list[dict]:
    import json

    return [json.loads((d / "config.json").read_text()) for d in sorted((out.parent / "runs").iterdir())]


@needs_data
def test_the_page_does_not_grow_with_the_matched_settings_and_names_what_was_built_in(small_and_medium):
    (_, n_small), (_, n_med) = small_and_medium
    assert (n_small, n_med) == (256, 1296)
    for out, n in small_and_medium:
        check_findings(out, n)
    # What still grows is the parallel coordinates (every run stays a line) and the dots of the
    # marginal plots: a few dozen bytes a run, which keeps the grid's 5,832 runs under the limit.
    sizes = [(out / "report.html").stat().st_size for out, _ in small_and_medium]
    per_run = (sizes[1] - sizes[0]) / (n_med - n_small)
    assert per_run < 120, per_run
    assert sizes[1] + per_run * (GRID_RUNS - n_med) < LIMIT, (sizes, per_run)


def open_drawn(report: Path, shot: Path, runs: int) -> None:
    """The page opens with no error, the parallel coordinates draw every run (waited on, not timed),
    and the screenshot of the plot holds coloured lines."""
    from matplotlib.image import imread

    with open_page(report.resolve().as_uri(), height=1400) as page:
        assert page.evaluate("window.parallelDrawn.then(() => true)")  # settles once Plotly.newPlot has drawn
        assert page.errors() == []
        plot = "#parallel-plot"
        assert page.evaluate(f"document.querySelector('{plot}')._fullData[0].dimensions[0].values.length") == runs
        assert page.evaluate(f"document.querySelectorAll('{plot} canvas').length") > 0
        page.evaluate("document.getElementById('parallel').scrollIntoView()")
        box = page.evaluate(f"(() => {{ const r = document.querySelector('{plot}').getBoundingClientRect(); "
                            "return [r.x, r.y, r.width, r.height]; })()")  # fmt: skip
        page.screenshot(shot)
    img = imread(shot)[..., :3]
    x, y, w, h = (int(v) for v in box)
    area = img[max(y, 0) : y + h, x : x + w]
    assert ((area.max(axis=-1) - area.min(axis=-1)) > 0.25).sum() > 2000


@needs_data
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
def test_a_thousand_run_report_opens_with_every_run_drawn(small_and_medium, tmp_path):
    out, n = small_and_medium[1]
    open_drawn(out / "report.html", tmp_path / "shot.png", n)


@pytest.mark.slow
@needs_data
def test_the_grids_5832_runs_report_under_3_mb_naming_both_interactions(grid_report):
    out, n = grid_report
    assert n == GRID_RUNS
    assert (out / "report.html").stat().st_size <= LIMIT
    check_findings(out, n)


@pytest.mark.slow
@needs_data
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
def test_the_grids_report_opens_in_chromium_with_every_run_drawn(grid_report, tmp_path):
    import os
    import shutil

    out, n = grid_report
    shot = tmp_path / "grid.png"
    open_drawn(out / "report.html", shot, n)
    if os.environ.get("REPORT_SCREENSHOT"):  # to look at it: REPORT_SCREENSHOT=/tmp/grid.png pytest -m slow ...
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])


@needs_data
def test_bench_report_times_a_study_and_says_how_big_the_page_is(small_and_medium, capsys, tmp_path):
    from fcn_sweep import cli as cli_mod

    out, n = small_and_medium[0]
    assert cli_mod.main(["bench", "report", "--study", str(out.parent / "runs"), "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("study: ") and f"({n} entries)" in lines[0]
    assert re.match(r"report 1: [\d.]+ s wall, [\d.]+ s CPU \(load [\d.]+, analysis [\d.]+, figures", lines[1])
    assert re.match(r"report\.html [\d.]+ MB; tables/\*\.csv [\d.]+ MB; 14 PNGs", lines[2])
    # bad input: one line, exit 2, nothing timed
    assert cli_mod.main(["bench", "report", "--study", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "--study" in err and "no such directory" in err and err.count("\n") == 1


def test_a_long_list_of_stopped_runs_shows_its_first_and_links_the_rest(tmp_path):
    """A Hyperband sweep of thousands stops thousands: the page lists the first few, the CSV all."""
    from .test_report import bayes_like_study

    bayes_like_study(tmp_path / "runs", n=120)
    rep = build(tmp_path / "runs", tmp_path / "out")
    stopped = sum('"status": "stopped"' in (d / "summary.json").read_text() for d in (tmp_path / "runs").iterdir())
    assert stopped > tables.FLAGS_SHOWN
    block = section(rep.html.read_text(), "diagnostics").split("<h3>Stopped by Hyperband</h3>")[1].split("<h3")[0]
    assert len(re.findall(r"<tr[^>]*>", block)) == 1 + tables.FLAGS_SHOWN + 1  # header, the first runs, "… more"
    assert f"… {stopped - tables.FLAGS_SHOWN:,} more runs: every one in <a href='{tables.STOPPED_FILE}'>" in block
    with (rep.out / tables.STOPPED_FILE).open() as f:
        assert len(list(csv.reader(f))) == 1 + stopped
