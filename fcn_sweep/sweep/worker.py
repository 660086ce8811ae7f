"""A sweep worker: a process that claims the next run from the store, trains it with the same
`fit(cfg, tracker)` as every other caller, and writes the outcome back. With `--pack K` it claims
up to K pending runs of one shape (`packed.pack_key`) and trains them at once with `fit_packed`;
each is still its own run in the store, its own run directory and its own W&B run.

A heartbeat thread marks the claimed runs alive twice a second and picks up stop requests
(Hyperband); a worker that dies (SIGKILL, OOM) simply stops beating, and the controller re-queues
its runs. SIGINT/SIGTERM end the runs in flight as `stopped` (reason `interrupted`, so a resume
runs them again) and the worker exits.

Costs paid once per worker, not per run: importing torch, loading the data of the runs pending at
start, the first use of the BLAS and of W&B (~1 s of imports and the service start on the first `wandb.init`) happen in
`warm_up`, before the first claim, so that a run's own time is its training.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import tracking
from ..config import RunConfig
from ..packed import pack_key
from ..tracking import Tracker
from ..train import FitResult
from .controller import Controller
from .store import Run, Store

HEARTBEAT_S = 0.5
IDLE_POLL_S = 0.25


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    sweep_dir: str
    device: str
    threads: int
    wandb_mode: str
    group: str
    pack: int = 1  # runs of one shape trained at once


class StoreTracker(Tracker):
    """Mirrors the run into the store: every epoch, then the outcome. After each epoch it also asks
    the engine's Hyperband (when the sweep has `early_terminate`) whether running runs should stop:
    deciding as each epoch lands, rather than on a timer, stops a run at the bracket it fails."""

    def __init__(self, store: Store, run: Run, controller: Controller, stop_reason: Callable[[], str]):
        self.store, self.run, self.controller, self.stop_reason = store, run, controller, stop_reason
        self.stop_requested = threading.Event()

    def log_epoch(self, metrics: dict[str, float]) -> None:
        self.store.log_epoch(self.run.id, tracking.jsonable(metrics))
        if self.run.id in self.controller.early_stop():
            self.stop_requested.set()

    def finish(self, result: FitResult) -> None:
        reason = self.stop_reason() if result.status == "stopped" else None
        self.store.finish(self.run.id, result.status, tracking.jsonable(result.summary()), reason)


class Heartbeat(threading.Thread):
    """Beats for every run of a claim; `stop_requested[run_id]` is set when the store asks it to stop."""

    def __init__(self, store: Store, run_ids: list[str]):
        super().__init__(daemon=True)
        self.store, self.run_ids = store, run_ids
        self.stop_requested = {i: threading.Event() for i in run_ids}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT_S):
            for run_id in self.store.heartbeat(self.run_ids):
                self.stop_requested[run_id].set()


def warm_up(device: str, wandb_mode: str) -> None:
    """Pay the per-process first-use costs of torch and W&B (see the module docstring) before any run."""
    import torch

    from ..train import Solo

    if wandb_mode != "disabled":
        tracking.warm_up_wandb()
    solo = Solo(RunConfig(hidden=(8,)), torch.device(device))
    solo.model(torch.zeros(2, 28 * 28, device=device)).sum().backward()
    solo.update.step()


def main(spec: WorkerSpec) -> None:
    import torch

    from .. import data as data_mod

    torch.set_num_threads(spec.threads)
    interrupted = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: interrupted.set())
    store = Store.in_dir(spec.sweep_dir)
    controller = Controller(store, store.get("sweep"), RunConfig())
    data_for = functools.cache(lambda subset: data_mod.load(spec.device, subset))  # once per worker
    warm_up(spec.device, spec.wandb_mode)
    for subset in store.pending_subsets():  # the data the first claim will want, as part of warming up
        data_for(subset)
    tag = f"{spec.name}:{os.getpid()}@{socket.gethostname()}"
    wandb = WandbRuns(spec)

    while not interrupted.is_set():
        claimed = store.claim_many(tag, spec.pack, pack_key)
        if not claimed:
            if store.get("closed") or store.budget_spent():
                break
            time.sleep(IDLE_POLL_S)
            continue
        train_claim(spec, store, controller, claimed, data_for(claimed[0].config.subset), interrupted, wandb)
        wandb.report(wait=False)
    wandb.report(wait=True)
    store.close()


class WandbRuns:
    """The worker's W&B runs, logged from one background thread (`tracking.BackgroundTracker`). A failure
    is reported on stderr, one line a run, and fails neither the run nor the sweep: the run
    directory and the store hold everything W&B would have."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb")
        self.pending: list[tuple[str, tracking.BackgroundTracker]] = []

    def tracker(self, run_id: str, rundir: tracking.RunDirTrackerTracker) -> list[Tracker]:
        if self.spec.wandb_mode == "disabled":
            return []
        wandb_run = tracking.WandbTracker(
            rundir, self.spec.wandb_mode, group=self.spec.group, job_type="sweep", requirements=False
        )
        deferred = tracking.BackgroundTracker(wandb_run, self.executor)
        self.pending.append((run_id, deferred))
        return [deferred]

    def report(self, wait: bool) -> None:
        if wait:
            self.executor.shutdown(wait=True)
        still = []
        for run_id, deferred in self.pending:
            if not all(f.done() for f in deferred.futures):
                still.append((run_id, deferred))
            elif errors := deferred.errors():
                print(f"fcn-sweep {self.spec.name}: W&B logging of run {run_id} failed: {errors[0]!r}", file=sys.stderr)
        self.pending = still


def train_claim(
    spec: WorkerSpec,
    store: Store,
    controller: Controller,
    claimed: list[Run],
    data,
    interrupted: threading.Event,
    wandb: WandbRuns,
) -> None:
    """Train the claimed runs (one alone, several as a pack) and record every outcome in the store."""
    from ..packed import fit_packed
    from ..train import fit

    beat = Heartbeat(store, [r.id for r in claimed])
    beat.start()
    reason = lambda: "interrupted" if interrupted.is_set() else "hyperband"  # noqa: E731
    trackers, member_stops = [], []
    for r in claimed:
        rundir = tracking.RunDirTracker(Path(spec.sweep_dir).resolve() / "runs", r.id)
        store.set_run_dir(r.id, str(rundir.path))
        mirror = StoreTracker(store, r, controller, reason)
        trackers.append(tracking.Trackers([rundir, *wandb.tracker(r.id, rundir), mirror]))
        stops = (beat.stop_requested[r.id], mirror.stop_requested)
        member_stops.append(lambda stops=stops: any(e.is_set() for e in stops))
    try:
        if len(claimed) == 1:
            stop = lambda: interrupted.is_set() or member_stops[0]()  # noqa: E731
            fit(claimed[0].config, trackers[0], data=data, device=spec.device, should_stop=stop)
        else:
            cfgs = [r.config for r in claimed]
            fit_packed(cfgs, trackers, data, spec.device, should_stop=interrupted.is_set, member_stops=member_stops)
        if interrupted.is_set():
            # Only runs the interrupt stopped: one that Hyperband stopped earlier is done for good.
            again = [r.id for r in claimed if store.run(r.id).stop_reason == "interrupted"]
            store.requeue(again, [tracking.new_run_id() for _ in again], "stopped", "interrupted")
    except Exception:  # a bug or an OOM in one config must not take the sweep down
        error = traceback.format_exc(limit=3)
        for r in claimed:
            if store.run(r.id).state == "running":
                store.finish(r.id, "crashed", {"error": error}, "error")
    finally:
        beat.done.set()
