"""What a run's training returns and what its trackers receive: the metrics row's keys and `FitResult`.

Its own module, beside both the trainer (lifecycle.py, packed.py) and the trackers (tracking/), so
that each side imports it without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import RunConfig

if TYPE_CHECKING:
    import torch

# The first keys of every epoch's metrics row, in order; `lr` and the `time/` keys follow.
METRIC_KEYS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc")


@dataclass
class FitResult:
    cfg: RunConfig
    status: str  # finished | diverged | stopped; crashed: a packed W&B agent's member whose pack failed
    params: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0  # 0: no epoch completed
    best_state: dict[str, torch.Tensor] | None = None  # on the CPU

    @property
    def best(self) -> dict[str, float]:
        return self.history[self.best_epoch - 1] if self.best_epoch else {}

    def summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {
            "status": self.status,
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best.get("val/acc"),
            "test_acc_at_best": self.best.get("test/acc"),
            "final_test_acc": last.get("test/acc"),
            "final_val_acc": last.get("val/acc"),
            "final_train_loss": last.get("train/loss"),
            "params": self.params,
            "depth": self.cfg.depth,
            "arch": self.cfg.arch,
        }
