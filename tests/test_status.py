"""`fcn-sweep status` as a user reads it: a screen of a sweep of thousands of slots, `--all` for each."""

from __future__ import annotations

import itertools
import re

from fcn_sweep.config import RunConfig
from fcn_sweep.sweep.store import Store

from .conftest import cli

WIDTHS = ([1024, 256], [1024, 512], [1024, 128])


def grid_store(path) -> Store:
    """300 slots in which `hidden` and `epochs` are swept; 3 running, 8 ended, the rest pending."""
    store = Store(path)
    store.create_sweep("big", {"method": "grid"})
    grid = itertools.product(WIDTHS, (10, 20), [round(0.001 * k, 3) for k in range(1, 51)])
    store.add(
        (f"r{i}", i, i, 0, RunConfig(hidden=tuple(h), epochs=e, lr=lr), {"hidden": h, "epochs": e, "lr": lr})
        for i, (h, e, lr) in enumerate(grid)
    )
    for i, run in enumerate(store.claim_many("w0:1@here", 11, "here")):
        if i >= 3:
            summary = {"best_val_acc": 0.80 + i / 100, "test_acc_at_best": 0.8, "best_epoch": 1}
            store.finish(run.id, "finished", summary, owner=run.worker)
    return store


def test_status_is_a_screen_by_default_and_every_slot_with_all(tmp_path):
    grid_store(tmp_path / "sweep.db").close()
    screen = cli("status", str(tmp_path))
    assert screen.returncode == 0, screen.stderr
    lines = screen.stdout.splitlines()
    assert len(lines) < 60 and lines[0].startswith("8/300 configs done"), screen.stdout
    assert "running (3)" in screen.stdout and "last ended (5 of 8)" in screen.stdout
    assert "best so far" in screen.stdout and "fcn-sweep status --all (300 lines)" in screen.stdout
    every = cli("status", str(tmp_path), "--all")
    rows = [line for line in every.stdout.splitlines() if re.match(r"r\d+ ", line)]
    assert every.returncode == 0 and len(rows) == 300, every.stdout


def test_status_shows_architectures_in_full_and_each_column_header_once(tmp_path):
    grid_store(tmp_path / "sweep.db").close()
    out = cli("status", str(tmp_path), "--all").stdout
    header = next(line for line in out.splitlines() if line.startswith("id "))
    names = re.split(r"\s{2,}", header)
    assert len(names) == len(set(names)), header
    assert "…" not in out and all("-".join(map(str, w)) in out for w in WIDTHS)


def test_a_sqlite_url_with_three_slashes_is_hinted_as_relative(tmp_path):
    proc = cli("status", "--store", "sqlite:///tmp/nope.db", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "no store at tmp/nope.db" in lines[0] and "four slashes: sqlite:////tmp/nope.db" in lines[0]
