"""What the local controller costs per proposal, measured on the study's 5,832-run grid and a bayes
sweep: the time to plan (engine enumeration + store insert), to claim a run (one transaction), and
for bayes, to propose one run given N finished ones. Prints milliseconds; no thresholds.

    .venv/bin/python scripts/bench_controller.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import yaml

from fcn_sweep.config import RunConfig
from fcn_sweep.sweep.controller import Controller
from fcn_sweep.sweep.store import Store

REPO = Path(__file__).resolve().parents[1]


def grid() -> None:
    sweep = yaml.safe_load((REPO / "sweeps" / "grid.yaml").read_text())
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "sweep.db")
        t = time.perf_counter()
        Controller(store, sweep, RunConfig(), order="random").plan()
        plan_s = time.perf_counter() - t
        n = store.counts()["pending"]
        t = time.perf_counter()
        claims = 500
        for _ in range(claims):
            store.claim("bench")
        claim_s = (time.perf_counter() - t) / claims
    print(
        f"grid: {n} proposals planned in {plan_s:.2f} s = {1e3 * plan_s / n:.3f} ms per proposal; "
        f"claim {1e3 * claim_s:.2f} ms per run"
    )


def bayes(finished: int) -> None:
    sweep = yaml.safe_load((REPO / "sweeps" / "bayes.yaml").read_text())
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "sweep.db")
        ctl = Controller(store, sweep, RunConfig())
        ctl.top_up(finished)
        for r in store.runs(["pending"]):
            store.claim("bench")
            store.finish(r.id, "finished", {"best_val_acc": rng.uniform(0.8, 0.9)})
        t = time.perf_counter()
        ctl.top_up(1)
        print(f"bayes: one proposal with {finished} finished runs: {1e3 * (time.perf_counter() - t):.0f} ms")


if __name__ == "__main__":
    grid()
    for n in (10, 100, 300):
        bayes(n)
