"""`fcn-sweep report`: on a real small sweep (its numbers against the store's), on synthetic studies
whose answer is known (importance, ablations, diagnostics), with bad input, and in a real browser."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from fcn_sweep import cli as cli_mod
from fcn_sweep.config import RunConfig
from fcn_sweep.report import analysis, build, fidelity, importance, load
from fcn_sweep.report import results as results_mod
from fcn_sweep.sweep.store import Store
from fcn_sweep.sweep.store import StoredRun as Run

from .browser import CHROMIUM, open_page
from .conftest import REPO, cli, needs_data, real_data_available
from .processes import wait_until

# A grid of 2 x 2 x 2 configs, each with 2 seeds: 16 runs of a fraction of a second each (the
# sweep's cost is starting two workers and loading the data, ~20 s on two cores). init truly
# matters here (N(0, 1) weights train badly); the other two matter little.
SWEEP = """
project: fcn-sweep
name: report-test
method: grid
metric: {name: val/acc, goal: maximize}
command: ["${env}", fcn-sweep, train, "${args}"]
parameters:
  epochs: {value: 3}
  subset: {value: 1024}
  batch_size: {value: 128}
  optimizer: {value: sgd}
  lr: {value: 0.05}
  hidden: {values: [[32], [64, 32]]}
  batch_norm: {values: [true, false]}
  init: {values: [xavier_uniform, normal]}
"""
SWEPT = ("hidden", "batch_norm", "init")


# The subprocesses must run this checkout's code, whatever `fcn_sweep` the interpreter has installed.
HERE = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="session")
def sweep_dir(tmp_path_factory) -> Path:
    if not real_data_available():
        pytest.skip("FashionMNIST files not on this machine")
    root = tmp_path_factory.mktemp("report-sweep")
    (root / "sweep.yaml").write_text(SWEEP)
    out = root / "sweep"
    r = cli("sweep", str(root / "sweep.yaml"), "--workers", "2", "--repeats", "2", "--wandb", "disabled",
            "--quiet", "--out", str(out), cwd=root, env=HERE)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def worst_run(sweep_dir) -> Run:
    store = Store.in_dir(sweep_dir)
    worst = min(store.runs(["finished"]), key=lambda r: r.summary["best_val_acc"])
    store.close()
    return worst


@pytest.fixture(scope="session")
def report(sweep_dir, worst_run) -> tuple[Path, float]:
    """The report of the sweep, written by the real command, with one extra run named for curves."""
    out = sweep_dir.parent / "report"
    t0 = time.perf_counter()
    r = cli("report", str(sweep_dir), "--out", str(out), "--runs", worst_run.id, env=HERE)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    print(f"\nreport of {sweep_dir}: {elapsed:.1f} s")
    return out, elapsed


def section(html: str, sid: str) -> str:
    m = re.search(rf"<section id='{sid}'>(.*?)</section>", html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def done_by_proposal(store: Store) -> dict[int, list[Run]]:
    """What the leaderboard must be built from, read straight from the store's rows."""
    out: dict[int, list[Run]] = defaultdict(list)
    for r in store.done_runs():
        if r.summary.get("best_val_acc") is not None:
            out[r.proposal].append(r)
    return out


def pm(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs):.4f}"


# --- the real sweep -------------------------------------------------------------------------------
@needs_data
def test_report_of_a_real_sweep_has_every_section_with_the_stores_numbers(sweep_dir, report, worst_run):
    out, _ = report
    html = (out / "report.html").read_text()
    store = Store.in_dir(sweep_dir)
    groups = done_by_proposal(store)
    counts = store.counts()
    store.close()

    study = load(sweep_dir)
    assert study.swept == SWEPT and study.name == "report-test"

    # Leaderboard: every config, ranked by mean val acc over its two seeds, test acc as mean ± std.
    board = section(html, "leaderboard")
    ranked = sorted(groups.values(), key=lambda rs: -statistics.fmean(r.summary["best_val_acc"] for r in rs))
    assert len(ranked) == 8 and all(len(rs) == 2 for rs in ranked)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", board, re.S)[1:]
    assert len(rows) == len(ranked)
    for row, runs in zip(rows, ranked, strict=True):
        assert pm([r.summary["best_val_acc"] for r in runs]) in row
        assert pm([r.summary["test_acc_at_best"] for r in runs]) in row
        assert f"{runs[0].summary['params']:,}" in row
        for r in runs:  # each seed linked, relative, to its run directory
            href = re.search(rf"href='([^']+)' title='{r.id}'", row).group(1)
            assert not href.startswith(("/", "http")) and (out / href / "summary.json").is_file()

    # Diagnostics: the counts are the store's.
    diag = section(html, "diagnostics")
    cells = re.findall(r"<t[hd](?:\s[^>]*)?>(.*?)</t[hd]>", diag)
    states = list(counts)
    assert cells[: len(states)] == states
    assert [int(c) for c in cells[len(states) : 2 * len(states)]] == list(counts.values())
    problems = sum(counts[s] for s in analysis.PROBLEM_STATES)
    assert f"Problems (diverged, crashed, or stopped for another reason): {problems}" in section(html, "summary")

    # Importance and ablations: one row per swept parameter; one ablation per swept parameter,
    # each row of which pairs configs equal in the other two parameters.
    imp = section(html, "importance")
    assert all(f"<b>{p}</b>" in imp for p in SWEPT)
    abl = section(html, "ablations")
    for p in SWEPT:
        assert f"<h3 id='ablation-{p}'>" in abl
        ab = analysis.ablation(study, p)
        assert len(ab.rows) == 4  # the 2 x 2 settings of the other two parameters
        for row in ab.rows:
            for v, s in row.val.items():
                runs = [r for r in study.done if r.id in row.runs[v]]
                assert s.mean == pytest.approx(statistics.fmean(r.objective for r in runs))
                assert {r.value(q) for r in runs for q in row.context} <= set(row.context.values())

    # Curves: the best seed of each top config, and the run named with --runs.
    curves = section(html, "curves")
    assert f"title='{worst_run.id}'" in curves
    best = max((r for rs in groups.values() for r in rs), key=lambda r: r.summary["best_val_acc"])
    assert f"title='{best.id}'" in curves

    for sid in ("summary", "parallel"):
        section(html, sid)
    assert "Plotly.newPlot" in html and "parallel-plot" in html

    # Self-contained: no fetch from anywhere, figures inlined, and the same figures as PNG files.
    # (the markup, that is: plotly.js itself mentions URLs it never loads here; the browser test
    # below fails on any load that does not succeed, and this machine has no network)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", html, flags=re.S)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup)
    pngs = {p.name for p in (out / "figures").glob("*.png")}
    expected = {"parallel.png", "importance.png", "marginals.png", "curves.png"}
    # and one figure per interaction the report names (whether this tiny sweep shows one is up to its seeds)
    named = results_mod.analyse(study, list(SWEPT), []).named
    assert (
        expected | {f"ablation-{p}.png" for p in SWEPT} | {f"interaction-{'-'.join(x.params)}.png" for x in named}
        == pngs
    )
    # every PNG inlined, except the static parallel coordinates: the page has the interactive ones
    assert html.count("src='data:image/png;base64,") == len(pngs) - 1
    for name in pngs:
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = (out / "summary.md").read_text()
    top = ranked[0]
    assert pm([r.summary["best_val_acc"] for r in top]) in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file()
    assert len(re.findall(r"!\[", md)) == len(pngs)


@needs_data
def test_run_dirs_and_the_store_give_the_same_table(sweep_dir):
    a, b = load(sweep_dir), load(sweep_dir / "runs")
    assert (a.kind, b.kind) == ("sweep", "run dirs")
    assert a.swept == b.swept
    # The store also knows attempts that never got as far as a run directory (a worker lost at
    # start); every run directory is one of its rows, and every run that counts has one.
    by_id = {r.id: r for r in b.runs}
    with_dirs = [r for r in a.runs if r.run_dir is not None]
    assert set(by_id) == {r.id for r in with_dirs} >= {r.id for r in a.done}
    for r in with_dirs:
        s = by_id[r.id]
        assert (s.state, s.config, s.objective, s.history) == (r.state, r.config, r.objective, r.history)

    def partition(study):
        groups = defaultdict(set)
        for r in study.done:
            groups[r.group].add(r.id)
        return {frozenset(g) for g in groups.values()}

    assert partition(a) == partition(b)
    board = lambda s: [(e.values, e.val, e.test) for e in analysis.leaderboard(s)]  # noqa: E731
    assert board(a) == board(b)


def coloured_pixels(png: Path, box: list[float]) -> int:
    """Pixels of the screenshot inside `box` (x, y, width, height) that are clearly coloured, not grey."""
    from matplotlib.image import imread

    x, y, w, h = (int(v) for v in box)
    area = imread(png)[y : y + h, x : x + w, :3]
    return int(((area.max(axis=-1) - area.min(axis=-1)) > 0.25).sum())


@needs_data
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
def test_report_renders_in_headless_chromium_without_errors(report):
    out, _ = report
    shot = out / "screenshot.png"
    with open_page((out / "report.html").resolve().as_uri()) as page:
        # plotly.js is unpacked after the page loads: wait for the plot to be drawn, not for a clock
        assert page.evaluate("window.parallelDrawn.then(() => true)")
        assert page.errors() == []
        plot = "#parallel-plot"
        assert page.evaluate(f"document.querySelectorAll('{plot} svg.main-svg').length") > 0
        assert page.evaluate(f"document.querySelectorAll('{plot} canvas').length") > 0
        axes = page.evaluate(f"document.querySelectorAll('{plot} .axis-brush rect.background').length")
        assert axes == len(SWEPT) + 1
        box = page.evaluate(f"(() => {{ const r = document.querySelector('{plot}').getBoundingClientRect(); "
                            "return [r.x, r.y, r.width, r.height]; })()")  # fmt: skip
        # The lines are really drawn (WebGL, in frames after the load): the plot's area of a screenshot
        # holds coloured pixels, once chromium has drawn them.
        wait_until(lambda: coloured_pixels(page.screenshot(shot), box) > 2000, "plotly's lines on screen", every=0.5)

        # Brush the objective axis as a user would (press, drag, release): plotly must record a filter.
        x, y, _, h = page.evaluate(
            f"(() => {{ const a = [...document.querySelectorAll('{plot} .axis-brush rect.background')].pop();"
            " const r = a.getBoundingClientRect(); return [r.x + r.width / 2, r.y, r.width, r.height]; })()"
        )
        y0, y1 = y + 0.1 * h, y + 0.5 * h
        page.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y0)
        page.send("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y0, button="left", clickCount=1, buttons=1)
        for k in range(1, 11):
            page.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y0 + (y1 - y0) * k / 10, button="left",
                      buttons=1)  # fmt: skip
            page.pump(0.03)
        page.send("Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y1, button="left", clickCount=1)
        read = lambda: json.loads(page.evaluate(  # noqa: E731
            f"JSON.stringify(document.querySelector('{plot}').data[0].dimensions.map(d => d.constraintrange || null))"
        ))  # fmt: skip
        ranges = wait_until(lambda: (r := read())[-1] is not None and r, "plotly to record the brushed range")
        assert page.errors() == []
    assert ranges[:-1] == [None] * len(SWEPT)
    if os.environ.get("REPORT_SCREENSHOT"):  # to look at it: REPORT_SCREENSHOT=/tmp/shot.png pytest ...
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])


def test_the_browser_check_sees_js_errors(tmp_path):
    """The check above can fail: an uncaught error, console.error and a failed load are all caught."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    page = tmp_path / "bad.html"
    page.write_text("<img src='missing.png'><script>console.error('e1'); null.x;</script>")
    wanted = ("uncaught", "console.error: e1", "missing.png")

    def all_seen() -> list[str] | None:
        p.pump(0.05)  # the browser reports a failed load on its own time
        errors = p.errors()
        return errors if all(any(w in e for e in errors) for w in wanted) else None

    with open_page(page.as_uri()) as p:
        wait_until(all_seen, f"the page's errors: {', '.join(wanted)}")


# --- synthetic studies with a known answer --------------------------------------------------------
def write_run(root: Path, name: str, cfg: RunConfig, val: float | None, status: str = "finished", epochs: int = 2):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    history = [
        {"epoch": e, "train/loss": 1.0 / e, "train/acc": val - 0.01, "val/loss": 1.1 / e, "val/acc": val,
         "test/loss": 1.2 / e, "test/acc": val - 0.02}
        for e in range(1, epochs + 1)
    ]  # fmt: skip
    (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    summary = {"status": status, "best_epoch": epochs, "best_val_acc": val, "test_acc_at_best": val - 0.02,
               "params": 1000}  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("driver", ["lr", "dropout"])
def test_importance_ranks_the_parameter_that_drives_the_objective_first(tmp_path, driver):
    """val acc depends on one parameter only (plus noise); the other is noise. Both ways round, so a
    bias towards one name, one type or one position cannot pass."""
    rng = random.Random(0)
    lrs, drops = [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1], [0.0, 0.1, 0.2, 0.3, 0.4]
    for k in range(60):
        lr, dropout = rng.choice(lrs), rng.choice(drops)
        signal = {"lr": 0.1 * lrs.index(lr), "dropout": 0.1 * drops.index(dropout)}[driver]
        cfg = RunConfig(lr=lr, dropout=dropout, seed=k)
        write_run(tmp_path, f"run-{k:02d}", cfg, 0.5 + signal + rng.gauss(0, 0.01))
    study = load(tmp_path)
    assert set(study.swept) == {"lr", "dropout"}
    imp = {i.name: i for i in importance.importance(study, fidelity.full_budget(study))}
    noise = ({"lr", "dropout"} - {driver}).pop()
    assert imp[driver].importance > 0.8 > 0.2 > imp[noise].importance
    assert imp[driver].correlation > 0.9 and abs(imp[noise].correlation) < 0.3
    assert imp["lr"].log  # lr spans decades: correlated against its exponent
    assert [lv.value for lv in imp[driver].marginal] == {"lr": lrs, "dropout": drops}[driver]


def test_ablation_pairs_runs_equal_in_everything_else(tmp_path):
    """init adds a known amount to val acc in every (batch_norm, hidden) setting; one setting lacks
    'normal', so it appears with the two values it has."""
    bonus = {"kaiming_uniform": 0.05, "normal": -0.2, "xavier_uniform": 0.0}
    base = {(True, (32,)): 0.8, (False, (32,)): 0.7, (True, (64, 32)): 0.82, (False, (64, 32)): 0.75}
    k = 0
    for (bn, hidden), acc in base.items():
        for init, b in bonus.items():
            if init == "normal" and hidden == (64, 32) and not bn:
                continue
            for seed in (0, 1):
                cfg = RunConfig(batch_norm=bn, hidden=hidden, init=init, seed=seed)
                write_run(tmp_path, f"r{k:02d}", cfg, acc + b + (0.01 if seed else -0.01))
                k += 1
    study = load(tmp_path)
    ab = analysis.ablation(study, "init")
    assert ab.levels == ["kaiming_uniform", "normal", "xavier_uniform"] and ab.reference == "kaiming_uniform"
    assert len(ab.rows) == 4
    for row in ab.rows:
        ctx = (row.context["batch_norm"] == "true", tuple(int(w) for w in row.context["hidden"].split("-")))
        for init, s in row.val.items():
            assert s.mean == pytest.approx(base[ctx] + bonus[init]) and s.n == 2
            assert s.std == pytest.approx(statistics.stdev([-0.01, 0.01]))
            assert row.delta[init] == pytest.approx(bonus[init] - bonus["kaiming_uniform"])
    partial = [row for row in ab.rows if row.context == {"batch_norm": "false", "hidden": "64-32"}]
    assert len(partial) == 1 and set(partial[0].val) == {"kaiming_uniform", "xavier_uniform"}
    assert ab.wins == {"kaiming_uniform": 4, "normal": 0, "xavier_uniform": 0}
    assert ab.mean_delta["normal"].n == 3 and ab.mean_delta["normal"].mean == pytest.approx(-0.25)


def test_diagnostics_count_and_list_what_did_not_finish(tmp_path):
    store = Store.in_dir(tmp_path)
    store.create_sweep("diag", {"method": "grid"})
    configs = [RunConfig(lr=lr) for lr in (0.001, 0.01, 0.1, 1.0, 10.0)]
    store.add((f"id{k}", k, k, 0, cfg, {"lr": cfg.lr}) for k, cfg in enumerate(configs))
    fine = {"best_val_acc": 0.8, "test_acc_at_best": 0.79, "best_epoch": 2, "params": 10}
    store.finish("id0", "finished", fine)
    store.finish("id1", "stopped", {**fine, "best_val_acc": 0.7}, "hyperband")
    store.finish("id2", "diverged", {**fine, "best_val_acc": 0.3})
    store.finish("id3", "crashed", {"error": "Traceback ...\nRuntimeError: CUDA out of memory"}, "error")
    store.requeue(["id4"], ["id5"], "crashed", "lost")  # id5: the pending re-run of id4
    counts = store.counts()
    store.close()

    study = load(tmp_path)
    d = analysis.diagnostics(study)
    assert d.counts == counts == {"pending": 1, "running": 0, "finished": 1, "diverged": 1, "stopped": 1,
                                  "crashed": 2, "preempted": 0}  # fmt: skip
    listed = {p.run.id: p for p in d.problems + d.hyperband}
    assert set(listed) == {"id1", "id2", "id3", "id4"}
    assert "hyperband" in listed["id1"].detail and "CUDA out of memory" in listed["id3"].detail
    assert listed["id4"].values == {"lr": 10.0}
    assert [p.run.id for p in d.hyperband] == ["id1"] and "id1" not in {p.run.id for p in d.problems}
    # Stopped and diverged runs with a score count; crashed and pending ones do not.
    assert [e.runs[0].id for e in analysis.leaderboard(study)] == ["id0", "id1", "id2"]

    # And the report says so, in HTML and Markdown.
    rep = build(tmp_path, tmp_path / "out")
    html = rep.html.read_text()
    diag = section(html, "diagnostics")
    assert all(f"title='{i}'" in diag or f">{i}<" in diag for i in listed)
    md = rep.summary.read_text()
    assert "Stopped by Hyperband, by design: 1 (1 after 0 epochs)." in md
    assert "Problems (diverged, crashed, or stopped for another reason): 3 (diverged 1, crashed 2)." in md


def test_a_study_of_one_config_still_reports(tmp_path):
    """Nothing swept, one seed: every section says what it cannot show instead of failing."""
    write_run(tmp_path / "runs", "only", RunConfig(), 0.8)
    rep = build(tmp_path / "runs", tmp_path / "out")
    html = rep.html.read_text()
    for sid in ("summary", "parallel", "leaderboard", "importance", "ablations", "curves", "diagnostics"):
        assert section(html, sid)
    assert "0.8000" in section(html, "leaderboard")
    assert [p.name for p in rep.figures] == ["curves.png"]


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{missing}"], "is not a directory"),
        (["{empty}"], "neither a sweep directory"),
        (["{runs}", "--ablate", "width"], "is not a parameter"),
        (["{runs}", "--ablate", "momentum"], "was not swept"),
        (["{runs}", "--runs", "nope"], "is not a run of this study"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, says):
    runs = tmp_path / "runs"
    for k, lr in enumerate((0.01, 0.1)):
        write_run(runs, f"r{k}", RunConfig(lr=lr), 0.5 + k / 10)
    (tmp_path / "empty").mkdir()
    dirs = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "runs": runs}
    out = tmp_path / "out"
    before = sorted(p for p in tmp_path.rglob("*"))
    argv = ["report", *(a.format(**dirs) for a in args), "--out", str(out)]
    assert cli_mod.main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and err.startswith("fcn-sweep report: error:")
    assert sorted(p for p in tmp_path.rglob("*")) == before


# --- a Bayesian sweep with Hyperband: continuous parameters, runs cut short -----------------------
def bayes_like_study(root: Path, n: int = 30, epochs: int = 9) -> None:
    """Run directories as a Bayesian sweep with Hyperband leaves them: lr and weight decay drawn
    log-uniform, dropout and momentum uniform; val acc peaks near lr 1e-3 and falls with dropout;
    after the first four, runs below a rising bar stop at the bracket at epoch 1 or 3."""
    rng = random.Random(0)
    for k in range(n):
        lr, wd = 10 ** rng.uniform(-4, -1.5), 10 ** rng.uniform(-6, -3)
        cfg = RunConfig(lr=lr, weight_decay=wd, dropout=rng.uniform(0, 0.6), momentum=rng.uniform(0.8, 0.99),
                        epochs=epochs, seed=k)  # fmt: skip
        final = 0.9 - 0.05 * (math.log10(lr) + 3) ** 2 - 0.1 * cfg.dropout + rng.gauss(0, 0.005)
        curve = [final - 0.2 / e for e in range(1, epochs + 1)]
        stop = next((b for b in (1, 3) if curve[b - 1] < 0.62 + 0.03 * b), None) if k >= 4 else None
        logged = curve[: stop or epochs]
        d = root / f"run-{k:02d}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(cfg.to_dict()))
        rows = [{"epoch": e, "train/loss": 1 / e, "train/acc": v, "val/loss": 1 / e, "val/acc": v, "test/loss": 1 / e,
                 "test/acc": v - 0.01} for e, v in enumerate(logged, 1)]  # fmt: skip
        (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in rows))
        best = max(range(len(logged)), key=lambda i: logged[i])
        summary = {"status": "stopped" if stop else "finished", "epochs_run": len(logged), "best_epoch": best + 1,
                   "best_val_acc": logged[best], "test_acc_at_best": logged[best] - 0.01, "params": 1000}  # fmt: skip
        (d / "summary.json").write_text(json.dumps({**summary, **({"stop_reason": "hyperband"} if stop else {})}))


ZERO = re.compile(r"(?<![\d.])0\.0000(?!\d)")  # a number that lost all its digits


def param_cells(html: str, sid: str, swept: tuple[str, ...]) -> list[str]:
    """The cells of a section's first table under the swept parameters' headers."""
    table = re.search(r"<table>(.*?)</table>", section(html, sid), re.S).group(1)
    header = re.findall(r"<th>(.*?)</th>", table)
    cols = [header.index(p) for p in swept]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]
    return [row[c] for row in rows if row for c in cols]


def test_a_bayes_like_study_bins_its_continuous_parameters_and_compares_runs_at_one_budget(tmp_path):
    bayes_like_study(tmp_path / "runs")
    study = load(tmp_path / "runs")
    stopped = [r for r in study.runs if r.state == "stopped"]
    full = [r for r in study.runs if r.state == "finished"]
    assert len(stopped) >= 5 and len(full) >= 5  # the study holds both kinds
    rep = build(tmp_path / "runs", tmp_path / "out")
    html, md = rep.html.read_text(), rep.summary.read_text()

    results = results_mod.analyse(study, [], [])
    imp = {i.name: i for i in results.importance}
    for p in ("lr", "weight_decay", "dropout", "momentum"):  # 30 distinct values each, a few bins
        assert imp[p].binned and 2 <= len(imp[p].marginal) <= 8
        assert sum(lv.val.n for lv in imp[p].marginal) == len(full)  # every full-budget run in one bin
    assert imp["lr"].log and imp["weight_decay"].log and not imp["dropout"].log and not imp["momentum"].log
    # The full-budget comparison leaves the stopped runs out; the first bracket has all of them.
    assert {r.id for r in results.basis.runs} == {r.id for r in full}
    assert results.early_basis.epoch == 1 and len(results.early_basis.runs) == len(study.runs)
    assert results.early_basis.scores == [r.history[0]["val/acc"] for r in results.early_basis.runs]
    assert {"importance-early.png", "marginals-early.png"} <= {p.name for p in rep.figures}

    assert f"Rests on the {len(full)} runs that trained their full 9 epochs" in md
    assert f"Rests on all {len(study.runs)} runs at epoch 1" in md
    assert f"Stopped by Hyperband, by design: {len(stopped)} (" in md
    assert "Problems (diverged, crashed, or stopped for another reason): 0." in md
    assert "Diverged, stopped or crashed" not in md + html
    for cell in param_cells(html, "leaderboard", study.swept):
        assert not ZERO.search(cell) and len(cell) <= 8, cell
    importance_rows = md.split("## Parameter importance")[1].split("##")[0]
    assert not ZERO.search(importance_rows)


HYPERBAND_SWEEP = """
project: fcn-sweep
name: hyperband-test
method: random
metric: {name: val/acc, goal: maximize}
early_terminate: {type: hyperband, min_iter: 1, eta: 2}
command: ["${env}", fcn-sweep, train, "${args}"]
parameters:
  epochs: {value: 3}
  subset: {value: 256}
  batch_size: {value: 64}
  hidden: {values: [[32], [64, 32]]}
  optimizer: {values: [sgd, adam]}
  lr: {distribution: log_uniform_values, min: 1.0e-7, max: 1.0e-1}
  weight_decay: {distribution: log_uniform_values, min: 1.0e-6, max: 1.0e-3}
  dropout: {distribution: uniform, min: 0.0, max: 0.5}
  momentum: {distribution: uniform, min: 0.8, max: 0.99}
"""
COUNT = 12


@pytest.fixture(scope="session")
def hyperband_sweep(tmp_path_factory) -> tuple[Path, str]:
    """A small sweep over continuous ranges with Hyperband, its progress going to a pipe, as under
    nohup or SLURM. Random rather than Bayesian proposals: half of the lr range cannot learn in 3
    epochs, and a random search keeps drawing from it, so Hyperband has runs to stop (a run stops
    when it trails the median of at least three runs at a bracket)."""
    if not real_data_available():
        pytest.skip("FashionMNIST files not on this machine")
    root = tmp_path_factory.mktemp("hyperband-sweep")
    (root / "sweep.yaml").write_text(HYPERBAND_SWEEP)
    r = cli("sweep", str(root / "sweep.yaml"), "--workers", "2", "--count", str(COUNT), "--wandb", "disabled",
            "--out", str(root / "sweep"), cwd=root, env=HERE)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return root / "sweep", r.stderr


@needs_data
def test_a_sweep_off_a_terminal_prints_one_line_per_run_and_a_summary(hyperband_sweep):
    _, stderr = hyperband_sweep
    lines = [x for x in re.split(r"[\r\n]", stderr) if x.strip()]  # a redrawn bar would add \r-separated copies
    assert len(lines) == COUNT + 1, stderr
    assert [int(re.match(r"\[(\d+)/(\d+)\] ", x).group(1)) for x in lines[:-1]] == list(range(1, COUNT + 1))
    assert all(f"/{COUNT}] " in x for x in lines[:-1])  # counted against --count, not the pending window
    assert lines[-1].startswith(f"sweep: {COUNT} runs ended")


@needs_data
def test_a_hyperband_sweeps_report_and_status_read_right(hyperband_sweep, tmp_path):
    sweep, _ = hyperband_sweep
    store = Store.in_dir(sweep)
    stopped = [r for r in store.runs(["stopped"]) if r.stop_reason == "hyperband"]
    store.close()
    assert stopped, "Hyperband stopped no run: the sweep does not test what it should"

    # --all: the default screen lists only the last few runs to end, which need not be the stopped ones.
    status = cli("status", str(sweep), "--all")
    assert status.returncode == 0, status.stderr
    assert max(len(line) for line in status.stdout.splitlines()) <= 120, status.stdout
    assert status.stdout.count("stopped (hyperband)") == len(stopped) and not ZERO.search(status.stdout)
    assert not re.search(r"\d\.0*[1-9]\d{4,}", status.stdout)  # no raw floats (five or more significant digits)

    r = cli("report", str(sweep), "--out", str(tmp_path / "report"), env=HERE)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report" / "summary.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    at = sorted(Counter(r.epoch for r in stopped).items())
    epochs = ", ".join(f"{n} after {e} epoch{'s' * (e != 1)}" for e, n in at)
    assert f"Stopped by Hyperband, by design: {len(stopped)} ({epochs}; brackets at epochs 1, 2)." in md
    assert "Problems (diverged, crashed, or stopped for another reason): 0." in md
    cut = [r for r in stopped if r.epoch < 3]  # a stop that lands with the last epoch cut nothing
    assert f"Rests on the {COUNT - len(cut)} runs that trained their full 3 epochs" in md
    study = load(sweep)
    early = results_mod.analyse(study, [], []).early
    if cut:  # what every run had at the first bracket
        assert f"Rests on all {COUNT} runs at epoch 1 (the first bracket)" in md
        imp = {i.name: i for i in early}
        assert imp["lr"].binned and imp["lr"].log and len(imp["lr"].marginal) <= 8
    else:  # every stop landed with the last epoch (seen once in CI): a first bracket would repeat the full budget
        assert "(the first bracket)" not in md and early == []
    for cell in param_cells(html, "leaderboard", study.swept):
        assert not ZERO.search(cell), cell
