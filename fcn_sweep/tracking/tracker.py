"""The `Tracker` protocol: what a run's lifecycle (`lifecycle.lifecycle`) tells whoever records it.

Events come in order: `start` once, `log_epoch` once per completed epoch (the metrics row), then
`finish` once with the run's `FitResult`. Implementations: `RunDirTracker` (run_dir.py),
`ProgressTracker` (progress.py), `WandbTracker` (wandb_tracker.py), `BackgroundTracker`
(background.py) and the sweep's store (sweep/worker.py); `Trackers` fans events out to several.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import RunConfig
from ..results import FitResult


class Tracker:
    """Receives a run's events. The base ignores them, so a tracker overrides only what it needs."""

    def start(self, cfg: RunConfig, info: dict) -> None:
        pass

    def log_epoch(self, metrics: dict[str, float]) -> None:
        pass

    def finish(self, result: FitResult) -> None:
        pass


class Trackers(Tracker):
    """Fans each event out to several trackers, in order."""

    def __init__(self, trackers: Iterable[Tracker]):
        self.trackers = list(trackers)

    def start(self, cfg: RunConfig, info: dict) -> None:
        for t in self.trackers:
            t.start(cfg, info)

    def log_epoch(self, metrics: dict[str, float]) -> None:
        for t in self.trackers:
            t.log_epoch(metrics)

    def finish(self, result: FitResult) -> None:
        for t in self.trackers:
            t.finish(result)
