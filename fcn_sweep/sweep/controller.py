"""The local controller: what W&B's server does for a sweep, done with W&B's own engine (`sweeps`).

Proposals. Grid: the engine enumerates the whole product once and every config is stored as a
pending slot up front. The engine's grid re-enumerates the product on each call, so asking it for
one proposal at a time would cost O(n) per proposal and O(n²) over a 5,832-run grid; one call
costs about half a second for the whole grid. `--order random` shuffles the slots with a seed, so
a partial grid is an unbiased sample. Random and bayes: proposals are asked for as workers need
them (bayes sees every finished run's metric), up to `run_cap` if the file sets one.

Whoever calls `plan` or `top_up` holds the store's sweep lock (`Store.exclusive`): any worker on
any host may top up, and two never number proposals at once.

Early termination: the engine's Hyperband (`stop_runs`) is fed each run's per-epoch history from
the store. Workers ask after every epoch they log (claim.HyperbandJudge), so a run stops at the
bracket it fails; runs of other workers are flagged `should_stop` and their heartbeats pick it up.
"""

from __future__ import annotations

import random
from dataclasses import replace

from ..config import RunConfig
from ..tracking import new_run_id
from .spec import engine, params_of
from .store import Store

# Our run states in the engine's vocabulary.
ENGINE_STATE = {
    "pending": "pending",
    "running": "running",
    "finished": "finished",
    "diverged": "failed",
    "stopped": "finished",
    "crashed": "crashed",
    "preempted": "preempted",
}


class Controller:
    def __init__(self, store: Store, base: RunConfig | None = None):
        info = store.info
        self.store, self.sweep, self.base = store, info.config, base or RunConfig()
        self.repeats, self.order, self.seed = info.repeats, info.order, info.seed
        sweep = self.sweep
        self.method = sweep["method"]
        self.metric = sweep["metric"]["name"]

    # --- proposals --------------------------------------------------------------------------------
    def _rows(self, first_proposal: int, proposals: list[dict]):
        for k, params in enumerate(proposals):
            proposal = first_proposal + k
            cfg = RunConfig.from_dict(params, self.base)
            for r in range(self.repeats):
                yield (new_run_id(), proposal * self.repeats + r, proposal, r, replace(cfg, seed=cfg.seed + r), params)

    def n_proposals(self) -> int:
        return self.store.n_proposals()

    def cap(self) -> int | None:
        """How many proposals this sweep can ever have (None: unbounded)."""
        if self.method == "grid":
            return self.store.info.grid_size
        return self.sweep.get("run_cap")

    def plan(self) -> None:
        """Grid: store every slot once (on the first start of a sweep only)."""
        if self.method != "grid" or self.store.info.grid_size is not None:
            return
        proposals = [params_of(r) for r in engine().next_runs(self.sweep, [], n=10**9) if r is not None]
        if self.order == "random":
            random.Random(self.seed).shuffle(proposals)
        self.store.add(self._rows(0, proposals))
        self.store.set_grid_size(len(proposals))

    def top_up(self, want_pending: int) -> int:
        """Random/bayes: propose until `want_pending` slots are pending or the cap is reached.
        Returns how many proposals were added."""
        if self.method == "grid":
            return 0
        pending = self.store.counts()["pending"]
        have, cap = self.n_proposals(), self.cap()
        n = max(0, -(-(want_pending - pending) // self.repeats))
        if cap is not None:
            n = min(n, cap - have)
        if n <= 0:
            return 0
        runs = self.engine_runs() if self.method == "bayes" else []
        proposals = [params_of(r) for r in engine().next_runs(self.sweep, runs, n=n) if r is not None]
        self.store.add(self._rows(have, proposals))
        return len(proposals)

    def exhausted(self) -> bool:
        cap = self.cap()
        return cap is not None and self.n_proposals() >= cap

    # --- the engine's view of the runs -------------------------------------------------------------
    def engine_runs(self):
        sweeps = engine()
        rows = [r for r in self.store.runs() if r.status != "pending"]
        histories = self.store.histories(r.id for r in rows)
        out = []
        for r in rows:
            summary = {self.metric: r.summary.get("best_val_acc")} if self.metric == "val/acc" else {}
            history = histories.get(r.id, [])
            if not summary.get(self.metric) and history:
                summary = {self.metric: history[-1].get(self.metric)}
            out.append(sweeps.SweepRun(
                name=r.id, state=ENGINE_STATE[r.status], config={k: {"value": v} for k, v in r.params.items()},
                summary_metrics={k: v for k, v in summary.items() if v is not None}, history=history,
            ))  # fmt: skip
        return out

    def early_stop(self) -> list[str]:
        """Run ids that Hyperband stops now; they are flagged in the store for their workers."""
        if "early_terminate" not in self.sweep:
            return []
        runs = [r for r in self.engine_runs() if r.state in ("running", "finished")]
        if not any(r.state == "running" for r in runs):
            return []
        stop = [r.name for r in engine().stop_runs(self.sweep, runs) if r.state == "running"]
        self.store.request_stop(stop)
        return stop
