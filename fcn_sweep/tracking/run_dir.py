"""A run's directory, written as the run goes.

`config.json`, `metrics.jsonl` (one object per epoch, appended as epochs end, so a crash keeps
what finished), `summary.json` (written last: its presence means the run ended) and
`model.safetensors` (the best-validation weights with the config in their metadata). Files that
must not be read half-written are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..config import RunConfig
from ..model import save_model
from .records import jsonable, new_run_id, write_json
from .tracker import Tracker

if TYPE_CHECKING:
    from ..results import FitResult


class RunDirTracker(Tracker):
    def __init__(self, out: str | Path, run_id: str | None = None):
        self.run_id = run_id or new_run_id()
        self.path = Path(out) / self.run_id
        self.info: dict = {}
        self._t0 = 0.0

    def start(self, cfg: RunConfig, info: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=False)
        self.info = info
        self._t0 = time.time()
        write_json(self.path / "config.json", cfg.to_dict())
        (self.path / "metrics.jsonl").touch()

    def log_epoch(self, metrics: dict[str, float]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(jsonable(metrics), allow_nan=False) + "\n")

    def finish(self, result: FitResult) -> None:
        if result.best_state is not None:
            save_model(
                self.path / "model.safetensors",
                result.best_state,
                result.cfg,
                extra={"epoch": result.best_epoch, "val_acc": result.best.get("val/acc")},
            )
        write_json(
            self.path / "summary.json",
            {
                "run_id": self.run_id,
                **result.summary(),
                **self.info,
                "wall_s": round(time.time() - self._t0, 3),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        )
