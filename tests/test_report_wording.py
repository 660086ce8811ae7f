"""What a report says when there is little to say, and how it says it: a sweep with nothing finished,
one config of one seed, counts of one; what a config is (the grouping `fcn-sweep status` shares);
and that the report's stages import one way."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from fcn_sweep.config import RunConfig, config_key
from fcn_sweep.report import build, caveats
from fcn_sweep.report.configs import group_by_config
from fcn_sweep.report.next_sweep import NextSweep, render
from fcn_sweep.sweep.store import Store

from .conftest import REPO, cli


def write_run(root: Path, name: str, cfg: RunConfig, summary: dict | None) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))


# --- nothing finished -----------------------------------------------------------------------------
def test_a_sweep_stopped_before_any_run_finished_reports_so(tmp_path):
    """The store of a sweep interrupted at once: every slot pending or running, no score anywhere."""
    (tmp_path / "sweep").mkdir()
    store = Store.in_dir(tmp_path / "sweep")
    store.create_sweep("stopped-early", {"method": "grid"})
    store.add((f"id{k}", k, k, 0, RunConfig(lr=lr), {"lr": lr}) for k, lr in enumerate((0.001, 0.01, 0.1)))
    store.close()
    r = cli("report", str(tmp_path / "sweep"), "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    md = (tmp_path / "report" / "summary.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    line = "none of the 3 run attempts ended with a score (pending 3); report again once runs have finished."
    assert f"**Nothing has finished yet:** {line}" in md and f"Nothing has finished yet: {line}" in html
    assert "No ablation" not in md and "Best config" not in md
    # the one thing to know opens the summary, in both (docs/report.md promises it)
    bullets = [x for x in md.splitlines() if x.startswith("- ")]
    assert bullets[0].startswith("- **Nothing has finished yet:**"), bullets
    summary = re.search(r"<ul class='headline'><li>(.*?)</li>", html).group(1)
    assert summary.startswith("<span class='caveat'>Nothing has finished yet:"), summary
    # and no sentence about runs and epochs that are not there
    assert "0 runs that trained" not in html and "( epochs)" not in html
    assert "No run has trained its full budget yet: nothing to compare." in html
    assert "0 figures in" in r.stdout


def test_a_report_of_one_figure_says_figure(tmp_path):
    write_run(tmp_path / "runs", "only", RunConfig(), {"status": "finished", "best_val_acc": 0.8,
                                                       "test_acc_at_best": 0.79, "params": 10})  # fmt: skip
    row = {"epoch": 1, "train/loss": 0.5, "train/acc": 0.8, "val/loss": 0.5, "val/acc": 0.8}
    (tmp_path / "runs" / "only" / "metrics.jsonl").write_text(json.dumps(row) + "\n")  # its curves: one figure
    r = cli("report", str(tmp_path / "runs"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert f"1 figure in {tmp_path / 'out' / 'figures'}" in r.stdout


def test_a_study_where_every_run_diverged_or_crashed_says_nothing_finished(tmp_path):
    write_run(tmp_path / "runs", "a", RunConfig(init="normal"), {"status": "diverged", "best_val_acc": None})
    write_run(tmp_path / "runs", "b", RunConfig(init="xavier_uniform"), None)  # no summary.json: crashed
    rep = build(tmp_path / "runs", tmp_path / "out")
    md = rep.summary.read_text()
    assert "**Nothing has finished yet:** none of the 2 run attempts ended with a score (diverged 1, crashed 1); " in md
    assert "see Diagnostics for why." in md
    assert "Problems (diverged, crashed, or stopped for another reason): 2 (diverged 1, crashed 1)." in md


# --- counts of one, and no ± where one seed stands ------------------------------------------------
def test_one_config_of_one_seed_reads_in_the_singular_without_a_spread(tmp_path):
    write_run(tmp_path / "runs", "only", RunConfig(), {"status": "finished", "best_val_acc": 0.8,
                                                       "test_acc_at_best": 0.79, "params": 10})  # fmt: skip
    md = build(tmp_path / "runs", tmp_path / "out").summary.read_text()
    assert "- 1 run attempt (finished 1);" in md
    best = next(line for line in md.splitlines() if line.startswith("- Best config"))
    assert best.endswith("val acc 0.8000, test acc 0.7900 (1 seed).") and "±" not in best


def test_the_next_sweep_counts_one_config_in_the_singular():
    sweep = {"project": "p", "name": "n", "method": "grid", "metric": {"name": "val/acc"}, "command": ["x"],
             "parameters": {"seed": {"values": [0, 1, 2]}}}  # fmt: skip
    nxt = NextSweep(sweep, [], 3, 1, ["3 seeds per config"])
    assert "1 config × 3 seeds = 3 runs" in caveats.next_sweep(nxt)

    class Named:
        name = "study"

    assert "# 1 config x 3 seeds = 3 runs;" in render(nxt, Named())


# --- what a config is -----------------------------------------------------------------------------
def test_runs_that_differ_only_in_their_seed_are_one_config():
    class Row:
        def __init__(self, **kw):
            self.config = RunConfig(**kw)

    rows = [Row(lr=0.01, seed=0), Row(lr=0.1, seed=0), Row(lr=0.01, seed=1), Row(lr=0.01, seed=2), Row(lr=0.1, seed=5)]
    groups = group_by_config(rows)
    assert [[r.config.seed for r in g] for g in groups] == [[0, 1, 2], [0, 5]]
    key = lambda **kw: config_key(RunConfig(**kw).to_dict())  # noqa: E731
    assert key(seed=3) == key(seed=4) != key(lr=0.5)


# --- the stages import one way --------------------------------------------------------------------
def report_imports() -> dict[str, set[str]]:
    """Module -> the report modules it imports (at any depth in the file, deferred imports included)."""
    pkg = REPO / "fcn_sweep" / "report"
    names = {p.stem for p in pkg.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for name in names:
        found = set()
        for node in ast.walk(ast.parse((pkg / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
        graph[name] = found & names
    return graph


def test_the_report_modules_import_one_way_and_none_is_over_400_lines():
    graph = report_imports()
    order: list[str] = []
    while len(order) < len(graph):  # peel off modules whose imports are all placed already
        ready = sorted(m for m in graph if m not in order and graph[m] <= set(order))
        assert ready, f"import circle among {sorted(set(graph) - set(order))}"
        order += ready
    assert graph["analysis"] <= {"binning", "fidelity", "load"}
    assert "importance" not in graph["evidence"] and "results" not in graph["next_sweep"]
    for p in (REPO / "fcn_sweep" / "report").glob("*.py"):
        assert len(p.read_text().splitlines()) <= 400, p.name
