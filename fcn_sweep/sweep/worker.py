"""A sweep worker: a process that claims the next run from the store, trains it with the same
`run(cfg, tracker)` as every other caller, and writes the outcome back.

A heartbeat thread marks the claimed run alive every second and picks up stop requests (Hyperband);
a worker that dies (SIGKILL, OOM) simply stops beating, and the controller re-queues its run.
SIGINT/SIGTERM end the run in flight as `stopped` (reason `interrupted`, so a resume runs it again)
and the worker exits.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import tracking
from ..config import RunConfig
from ..train import RunResult, Tracker
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

    def finish(self, result: RunResult) -> None:
        reason = self.stop_reason() if result.status == "stopped" else None
        self.store.finish(self.run.id, result.status, tracking.jsonable(result.summary()), reason)


class Heartbeat(threading.Thread):
    def __init__(self, store: Store, run_id: str):
        super().__init__(daemon=True)
        self.store, self.run_id = store, run_id
        self.stop_requested = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT_S):
            if self.store.heartbeat(self.run_id):
                self.stop_requested.set()


def main(spec: WorkerSpec) -> None:
    import torch

    from .. import data as data_mod
    from ..train import run

    torch.set_num_threads(spec.threads)
    interrupted = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: interrupted.set())
    store = Store.in_dir(spec.sweep_dir)
    controller = Controller(store, store.get("sweep"), RunConfig())
    datasets: dict[int, data_mod.FashionMNIST] = {}  # by subset: loaded once per worker

    while not interrupted.is_set():
        claimed = store.claim(f"{spec.name}:{os.getpid()}@{socket.gethostname()}")
        if claimed is None:
            if store.get("closed") or store.budget_spent():
                break
            time.sleep(IDLE_POLL_S)
            continue
        cfg = claimed.config
        if cfg.subset not in datasets:
            datasets[cfg.subset] = data_mod.load(spec.device, cfg.subset)
        rundir = tracking.RunDir(Path(spec.sweep_dir).resolve() / "runs", claimed.id)
        store.set_run_dir(claimed.id, str(rundir.path))
        beat = Heartbeat(store, claimed.id)
        beat.start()
        trackers: list[Tracker] = [rundir]
        if spec.wandb_mode != "disabled":
            trackers.append(tracking.WandbRun(rundir, spec.wandb_mode, group=spec.group, job_type="sweep"))
        reason = lambda: "interrupted" if interrupted.is_set() else "hyperband"  # noqa: E731
        mirror = StoreTracker(store, claimed, controller, reason)
        trackers.append(mirror)
        stops = (interrupted, beat.stop_requested, mirror.stop_requested)
        try:
            result = run(
                cfg,
                tracking.Trackers(trackers),
                data=datasets[cfg.subset],
                device=spec.device,
                should_stop=lambda stops=stops: any(e.is_set() for e in stops),
            )
            if result.status == "stopped" and interrupted.is_set():
                store.requeue([claimed.id], [tracking.new_run_id()], "stopped", "interrupted")
        except Exception:  # a bug or an OOM in one config must not take the sweep down
            store.finish(claimed.id, "crashed", {"error": traceback.format_exc(limit=3)}, "error")
        finally:
            beat.done.set()
    store.close()
