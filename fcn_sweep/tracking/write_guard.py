"""`WriteGuardTracker`: a run whose files cannot be written (a full disk, a mount gone read-only)
ends `crashed` at the next batch instead of dying with a traceback."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import RunConfig
from .tracker import Tracker

if TYPE_CHECKING:
    from ..results import FitResult


class WriteGuardTracker(Tracker):
    """Wraps a run's trackers: a write that fails (a full disk, a mount gone read-only) stops the
    run at the next batch instead of killing it with a traceback, and the run ends `crashed` with
    its best weights saved if the disk takes them. Temporary files a failed write left are removed."""

    def __init__(self, tracker: Tracker, stop: threading.Event, rundir: Path):
        self.tracker, self.stop, self.rundir = tracker, stop, rundir
        self.error: str | None = None

    def _guarded(self, event: Callable[[], None]) -> None:
        try:
            event()
        except OSError as e:
            self.error = self.error or f"writing {e.filename or self.rundir} failed ({e.strerror or e})"
            self.stop.set()
            for tmp in self.rundir.glob("*.tmp"):
                tmp.unlink(missing_ok=True)

    def start(self, cfg: RunConfig, info: dict) -> None:
        self._guarded(lambda: self.tracker.start(cfg, info))

    def log_epoch(self, metrics: dict[str, float]) -> None:
        if self.error is None:
            self._guarded(lambda: self.tracker.log_epoch(metrics))

    def finish(self, result: FitResult) -> None:
        if self.error is not None:
            result.status = "crashed"
        self._guarded(lambda: self.tracker.finish(result))
