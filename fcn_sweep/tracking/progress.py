"""A run's progress on the terminal: a bar over epochs on stderr."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..config import RunConfig
from .tracker import Tracker

if TYPE_CHECKING:
    from ..results import FitResult


class ProgressTracker(Tracker):
    """A bar over epochs on stderr with the latest loss and accuracies."""

    def __init__(self, label: str = "", enabled: bool = True):
        self.label, self.enabled, self.bar = label, enabled, None

    def start(self, cfg: RunConfig, info: dict) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=cfg.epochs, desc=self.label or cfg.arch, unit="epoch", file=sys.stderr, dynamic_ncols=True
            )

    def log_epoch(self, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                {
                    "loss": f"{metrics['train/loss']:.4f}",
                    "train": f"{metrics['train/acc']:.4f}",
                    "val": f"{metrics['val/acc']:.4f}",
                },
                refresh=False,
            )
            self.bar.update(1)

    def finish(self, result: FitResult) -> None:
        if self.bar is not None:
            self.bar.close()
