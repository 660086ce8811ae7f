"""One training run: `run(cfg, tracker) -> RunResult`, the one loop every caller shares.

`train_epoch` and `evaluate` compute and return numbers; they log nothing. `run` owns the loop and
is the one place that reports, through the tracker. Losses and correct counts are summed on the
device and read back once per epoch: a `.item()` per step would stall a GPU on every batch.

A run ends in one of three states. `finished`: all epochs ran. `diverged`: the training loss became
NaN or infinite; the epochs before it are kept and the run ends instead of crashing its caller.
`stopped`: `should_stop()` turned true (SIGTERM from `wandb agent`, Hyperband, Ctrl-C); the epoch in
flight is dropped and the best model so far is kept. The model kept is the best-validation epoch's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from .config import RunConfig
from .model import build_fcn, param_count, use_generator
from .optim import Optimizer

METRIC_KEYS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc")
EVAL_BATCH = 8192


class Tracker:
    """Receives a run's events. The base ignores them; subclasses override what they need."""

    def start(self, cfg: RunConfig, info: dict) -> None:
        pass

    def log_epoch(self, metrics: dict[str, float]) -> None:
        pass

    def finish(self, result: RunResult) -> None:
        pass


@dataclass
class RunResult:
    cfg: RunConfig
    status: str  # finished | diverged | stopped
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


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device


def generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """A run's own random streams: (shuffle order, dropout masks). The shuffle is drawn on the CPU so
    the order is the same on every device; the masks are drawn where the activations live. Both
    derive from the seed alone, so a packed run (packed.py) reproduces them exactly."""
    dropout_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed), torch.Generator(device).manual_seed(dropout_seed)


def train_epoch(
    model: nn.Module,
    opt: Optimizer,
    split: data_mod.Split,
    cfg: RunConfig,
    generator: torch.Generator,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[float, float] | None:
    """Mean training loss and accuracy over the epoch, or None if stopped part-way."""
    model.train()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    seen = 0
    for x, y in data_mod.batches(split, cfg.batch_size, generator):
        if should_stop():
            return None
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum.add_(loss.detach(), alpha=len(y))
        correct.add_((logits.detach().argmax(1) == y).sum())
        seen += len(y)
    return loss_sum.item() / seen, correct.item() / seen


@torch.inference_mode()
def evaluate(model: nn.Module, split: data_mod.Split) -> tuple[float, float]:
    """Mean loss (without label smoothing) and accuracy; leaves the model in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for start in range(0, len(split), EVAL_BATCH):
        x, y = split.x[start : start + EVAL_BATCH], split.y[start : start + EVAL_BATCH]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return loss_sum.item() / len(split), correct.item() / len(split)


def run(
    cfg: RunConfig,
    tracker: Tracker | None = None,
    data: data_mod.FashionMNIST | None = None,
    device: str | torch.device = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    tracker = tracker or Tracker()
    data = data or data_mod.load(device, cfg.subset)
    seed_everything(cfg.seed)
    shuffle, masks = generators(cfg.seed, data.device)
    model = use_generator(build_fcn(cfg).to(data.device), masks)
    update = Optimizer(model.parameters(), cfg)
    result = RunResult(cfg, "finished", param_count(model))
    tracker.start(cfg, {"params": result.params, "device": str(data.device), "train_size": len(data.train)})

    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = update.lr
        trained = train_epoch(model, update, data.train, cfg, shuffle, should_stop)
        if trained is None:
            result.status = "stopped"
            break
        train_s = time.perf_counter() - t0
        update.set_epoch(epoch)
        val, test = evaluate(model, data.val), evaluate(model, data.test)
        metrics = {
            "epoch": epoch,
            "train/loss": trained[0],
            "train/acc": trained[1],
            "val/loss": val[0],
            "val/acc": val[1],
            "test/loss": test[0],
            "test/acc": test[1],
            "lr": lr,
            "time/epoch_s": time.perf_counter() - t0,
            "time/samples_per_s": len(data.train) / train_s,
        }
        result.history.append(metrics)
        tracker.log_epoch(metrics)
        if not math.isfinite(trained[0]):
            result.status = "diverged"
            break
        if not result.best_epoch or val[1] > result.best["val/acc"]:
            result.best_epoch = epoch
            result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if should_stop():
            result.status = "stopped"
            break

    tracker.finish(result)
    return result
