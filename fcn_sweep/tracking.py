"""Where a run's events go: the run directory, the terminal, and (in one place) Weights & Biases.

A run directory holds `config.json`, `metrics.jsonl` (one object per epoch, appended as epochs
end, so a crash keeps what finished), `summary.json` (written last: its presence means the run
ended) and `model.safetensors` (the best-validation weights with the config in their metadata).
Files that must not be read half-written are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import math
import platform
import secrets
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .model import save_model
from .train import RunResult, Tracker


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def jsonable(value: Any) -> Any:
    """Strict JSON: NaN and infinities (a diverged run's loss) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


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

    def finish(self, result: RunResult) -> None:
        for t in self.trackers:
            t.finish(result)


class RunDir(Tracker):
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

    def finish(self, result: RunResult) -> None:
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


class Progress(Tracker):
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

    def finish(self, result: RunResult) -> None:
        if self.bar is not None:
            self.bar.close()
