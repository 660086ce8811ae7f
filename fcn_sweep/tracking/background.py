"""Another tracker's events, handed to a background thread so that training does not wait on them."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..config import RunConfig
from .tracker import Tracker

if TYPE_CHECKING:
    from ..results import FitResult


class BackgroundTracker(Tracker):
    """Hands another tracker's events to a background thread, in order, and returns at once.

    A sweep worker wraps its W&B runs in it: most of `wandb.init` and `finish` is waiting on the W&B
    service, time the next epoch or the next run can use instead. One executor thread serves all of
    a worker's runs, so each run's events keep their order and W&B is only ever called from that
    thread. `errors()` reports what failed; the worker drains the executor before it exits, so no
    run is left unfinished."""

    def __init__(self, tracker: Tracker, executor: ThreadPoolExecutor):
        self.tracker, self.executor = tracker, executor
        self.futures: list[Future] = []

    def start(self, cfg: RunConfig, info: dict) -> None:
        self.futures.append(self.executor.submit(self.tracker.start, cfg, info))

    def log_epoch(self, metrics: dict[str, float]) -> None:
        self.futures.append(self.executor.submit(self.tracker.log_epoch, dict(metrics)))

    def finish(self, result: FitResult) -> None:
        self.futures.append(self.executor.submit(self.tracker.finish, result))

    def errors(self) -> list[BaseException]:
        """Exceptions of the events done so far; the events still queued are not waited for."""
        return [e for f in self.futures if f.done() and (e := f.exception()) is not None]
