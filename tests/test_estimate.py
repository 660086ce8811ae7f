"""The dry run's estimate: it calibrates on a few dozen steps per shape, not an epoch, and says long
durations as a person reads them."""

from __future__ import annotations

import re

import pytest

from fcn_sweep.config import RunConfig
from fcn_sweep.formatting import duration
from fcn_sweep.packed import Pack
from fcn_sweep.sweep import estimate

from .conftest import needs_data


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(7, "7 s"), (89, "89 s"), (42 * 60, "42 min"), (3.2 * 3600, "3.2 hours"), (40 * 3600, "40.0 hours"),
     (9.4 * 86400, "9.4 days")],
)  # fmt: skip
def test_durations_read_as_a_person_plans(seconds, shown):
    assert duration(seconds) == shown


@needs_data
def test_calibration_trains_a_few_dozen_steps_per_shape_not_an_epoch(monkeypatch):
    trained: list[int] = []
    real = Pack.train_epoch
    clock = [0.0]

    def counting(self, split, should_stop):
        trained.append(len(split))
        clock[0] += 1e-6 * len(split) * len(self.cfgs)  # time that is the work done, whatever else runs here
        return real(self, split, should_stop)

    monkeypatch.setattr(Pack, "train_epoch", counting)
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: clock[0])
    # Two shapes on the full training split (782 steps an epoch at batch 64), one of them in packs of 3.
    configs = [RunConfig(hidden=(32,), seed=s) for s in range(3)] + [RunConfig(hidden=(16, 16))]
    cal = estimate.calibrate(configs, "cpu", 1, pack=3)
    epoch = 50_000
    assert trained and max(trained) <= estimate.CAL_STEPS * 64 < epoch / 20
    assert sum(trained) < epoch / 4  # warm-up and timed steps, alone and packed, for both shapes
    assert set(cal.steps.values()) == {(estimate.CAL_STEPS, 782)}
    # Scaled to the epoch: the estimate is of a whole epoch's work, packed dearer than alone.
    (members, packed_s), alone_s = cal.packed[estimate.shape_of(configs[0])], cal.seconds[estimate.shape_of(configs[0])]
    assert members == 3 and 0 < alone_s < packed_s
    text = estimate.render(estimate.Plan("s", "grid", 4, 1, 0, configs), cal, [])
    assert re.search(r"per shape, 24 timed step\(s\) of an epoch's 782", text), text


def test_schedule_packs_runs_of_one_shape_and_says_hours_and_days():
    shape_runs = [RunConfig(hidden=(32,), epochs=20, seed=s) for s in range(40)]
    shape = estimate.shape_of(shape_runs[0])
    cal = estimate.Calibration("cpu", 1, 8, startup_s=5.0, seconds={shape: 600.0}, packed={shape: (8, 2400.0)})
    # 40 runs alone: 20 on each worker, 20 x 20 x 600 s; packed: 5 packs of 8, 3 on one worker, 3 x 20 x 2400 s.
    alone, packed = (estimate.schedule(shape_runs, cal, workers=2, per_task=1, pack=k) for k in (1, 8))
    assert alone.busy_s == 40 * 20 * 600.0 and packed.busy_s == 5 * 20 * 2400.0
    plan = estimate.Plan("s", "grid", 40, 1, 0, shape_runs)
    text = estimate.render(plan, cal, [alone, packed], unit="machine")
    assert "--pack 1: wall 2.8 days on 2 worker(s)" in text and "--pack 8: wall 40.0 hours" in text, text
