"""The epoch loop every run goes through: `lifecycle(trainer, cfgs, trackers, data, ...)`.

It owns the loop over epochs and is the one place that reports, through the trackers. What it
trains is a `Trainer`: a pack of K >= 1 runs of one shape (packed.Pack), a run alone being a pack
of one, so the loop, the per-epoch metrics row, the best-epoch rule and the endings are written once.

A run ends in one of three states. `finished`: all epochs ran. `diverged`: the training loss became
NaN or infinite; the epochs before it are kept and the run ends instead of crashing its caller.
`stopped`: `should_stop()` turned true (SIGTERM from `wandb agent`, Hyperband, Ctrl-C); the epoch in
flight is dropped and the best model so far is kept. The model kept is the best-validation epoch's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from . import data as data_mod
from .config import RunConfig
from .results import METRIC_KEYS, FitResult
from .tracking.tracker import Tracker


class Trainer(Protocol):
    """Runs of one shape trained together; index k is the k-th run still training. Every method
    answers for all of them at once, so a solo run is the case of one."""

    param_counts: list[int]

    def lrs(self) -> list[float]: ...

    def train_epoch(
        self, split: data_mod.Split, should_stop: Callable[[], bool]
    ) -> list[tuple[float, float]] | None: ...

    def set_epoch(self, done: int) -> None: ...

    def evaluate(self, split: data_mod.Split) -> tuple[list[float], list[float]]: ...

    def state(self, k: int) -> dict[str, torch.Tensor]: ...

    def keep(self, ks: list[int]) -> None: ...


@dataclass
class _Run:
    tracker: Tracker
    result: FitResult
    stop: Callable[[], bool]  # this run alone ends as stopped at the end of the epoch

    def end(self, status: str) -> None:
        self.result.status = status
        self.tracker.finish(self.result)


def lifecycle(
    trainer: Trainer,
    cfgs: Sequence[RunConfig],
    trackers: Sequence[Tracker | None],
    data: data_mod.FashionMNIST,
    should_stop: Callable[[], bool],
    run_stops: Sequence[Callable[[], bool]] | None = None,
) -> list[FitResult]:
    """Train `cfgs` with `trainer` epoch by epoch, report to each run's tracker, and return each
    run's result in the order of `cfgs`. A run that diverges, or whose `run_stops[i]()` turns true,
    ends after the epoch and leaves the trainer; `should_stop()` ends every run still training."""
    never = lambda: False  # noqa: E731
    runs = [
        _Run(tracker or Tracker(), FitResult(cfg, "finished", params), stop)
        for cfg, tracker, params, stop in zip(
            cfgs, trackers, trainer.param_counts, run_stops or [never] * len(cfgs), strict=True
        )
    ]
    info = {"device": str(data.device), "train_size": len(data.train)}
    for r in runs:
        r.tracker.start(r.result.cfg, {"params": r.result.params, **info})
    live, ending = list(runs), "finished"
    for epoch in range(1, cfgs[0].epochs + 1):
        t0 = time.perf_counter()
        lrs = trainer.lrs()
        trained = trainer.train_epoch(data.train, should_stop)
        if trained is None:
            ending = "stopped"
            break
        train_s = time.perf_counter() - t0
        trainer.set_epoch(epoch)
        (val_loss, val_acc), (test_loss, test_acc) = trainer.evaluate(data.val), trainer.evaluate(data.test)
        epoch_s = time.perf_counter() - t0
        survivors = []
        for k, r in enumerate(live):
            row = (epoch, *trained[k], val_loss[k], val_acc[k], test_loss[k], test_acc[k])
            metrics = dict(zip(METRIC_KEYS, row, strict=True))
            metrics.update({"lr": lrs[k], "time/epoch_s": epoch_s, "time/samples_per_s": len(data.train) / train_s})
            r.result.history.append(metrics)
            r.tracker.log_epoch(metrics)
            if not math.isfinite(metrics["train/loss"]):
                r.end("diverged")
                continue
            if not r.result.best_epoch or metrics["val/acc"] > r.result.best["val/acc"]:
                r.result.best_epoch, r.result.best_state = epoch, trainer.state(k)
            if r.stop():
                r.end("stopped")
                continue
            survivors.append(k)
        if len(survivors) < len(live):
            live = [live[k] for k in survivors]
            if not live:
                break
            trainer.keep(survivors)
        if should_stop():
            ending = "stopped"
            break
    for r in live:
        r.end(ending)
    return [r.result for r in runs]
