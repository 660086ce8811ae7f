"""How swept numbers print (report and status alike), how continuous parameters are binned, and
what the sweep's progress counts to."""

from __future__ import annotations

import io
import itertools
import random
from pathlib import Path

import pytest

from fcn_sweep import formatting
from fcn_sweep.config import RunConfig
from fcn_sweep.report import binning
from fcn_sweep.report.load import Study
from fcn_sweep.sweep.controller import Controller
from fcn_sweep.sweep.display import Display
from fcn_sweep.sweep.runner import SweepOptions, asked_for
from fcn_sweep.sweep.store import Store


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.8e-05, "3.8e-5"),  # the weight decay the old leaderboard printed as 0.0000
        (1.1e-04, "0.00011"),  # the lr it printed as 0.0001
        (0.019839756795489414, "0.0198"),  # the dropout `fcn-sweep status` printed raw
        (0.95312, "0.953"),
        (1024.0, "1024"),
        (0.5, "0.5"),
        ((1024, 256), "1024-256"),
        (True, "true"),
        (None, "–"),
    ],
)
def test_parameter_values_print_with_three_significant_digits(value, text):
    assert formatting.value(value) == text


def study_with(sweep: dict) -> Study:
    return Study(source=Path("."), kind="run dirs", runs=[], swept=(), sweep=sweep)


def test_log_spacing_comes_from_the_sweep_file_where_known_else_from_the_values():
    rng = random.Random(0)
    lrs = [10 ** rng.uniform(-5, -1) for _ in range(40)]
    dropouts = [rng.uniform(0.01, 0.6) for _ in range(40)]  # spans 60x, but evenly: not log-spaced
    unknown = study_with({})
    assert binning.log_scale(unknown, "lr", lrs) and not binning.log_scale(unknown, "dropout", dropouts)
    assert binning.log_scale(unknown, "lr", [1e-4, 1e-3, 1e-2, 1e-1])  # a grid in decades
    said = study_with(
        {"parameters": {"lr": {"distribution": "uniform"}, "dropout": {"distribution": "log_uniform_values"}}}
    )
    assert not binning.log_scale(said, "lr", lrs) and binning.log_scale(said, "dropout", dropouts)


@pytest.mark.parametrize("log", [False, True])
def test_bins_hold_every_value_once_in_at_most_eight_ordered_rows(log):
    rng = random.Random(1)
    values = [10 ** rng.uniform(-6, -3) if log else rng.uniform(0.8, 0.99) for _ in range(200)]
    bins = binning.bins(values, log)
    assert 3 <= len(bins) <= binning.MAX_LEVELS
    assert all(a.hi < b.lo for a, b in itertools.pairwise(bins))
    assert sum(sum(b.holds(v) for v in values) for b in bins) == len(values)
    assert min(values) == bins[0].lo and max(values) == bins[-1].hi
    assert binning.bins([0.1, 0.2, 0.3], log) is None  # few values: listed one by one


def grid_controller(tmp_path, repeats: int) -> Controller:
    store = Store.in_dir(tmp_path)
    sweep = {"method": "grid", "metric": {"name": "val/acc", "goal": "maximize"},
             "parameters": {"lr": {"values": [0.1, 0.01, 0.001]}}}  # fmt: skip
    controller = Controller(store, sweep, RunConfig(), repeats=repeats)
    controller.plan()
    return controller


def test_the_progress_counts_to_what_was_asked_for(tmp_path):
    controller = grid_controller(tmp_path, repeats=2)
    assert asked_for(controller, SweepOptions(count=30)) == 30
    assert asked_for(controller, SweepOptions()) == 6  # the whole grid, every seed
    unbounded = Controller(controller.store, {**controller.sweep, "method": "random"}, RunConfig())
    assert asked_for(unbounded, SweepOptions()) is None
    for total, per_invocation, shows in ((30, True, "0/30"), (6, False, "0/6"), (None, True, "0/?")):
        out = io.StringIO()
        display = Display(controller.store, ["w0"], True, total, per_invocation, file=out, live=True)
        display.update()
        display.close()
        assert shows in out.getvalue().split("\n")[0], out.getvalue()
