"""The training lifecycle: `fit(cfg, tracker) -> FitResult`, the one epoch loop every caller shares.

`lifecycle` owns the loop over epochs and is the one place that reports, through the trackers. What
it trains is a `Trainer`: `Solo` (one run, an nn.Sequential and its optimizer) here, or
`packed.Pack` (K runs of one shape trained at once); both hold runs in a list, so the loop, the
per-epoch metrics row, the best-epoch rule and the endings below are written once for both.

`train_epoch` and `evaluate` compute and return numbers; they log nothing. Losses and correct
counts are summed on the device and read back once per epoch: a `.item()` per step would stall a
GPU on every batch.

A run ends in one of three states. `finished`: all epochs ran. `diverged`: the training loss became
NaN or infinite; the epochs before it are kept and the run ends instead of crashing its caller.
`stopped`: `should_stop()` turned true (SIGTERM from `wandb agent`, Hyperband, Ctrl-C); the epoch in
flight is dropped and the best model so far is kept. The model kept is the best-validation epoch's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from .config import RunConfig
from .model import build_fcn, param_count, use_generator
from .optim import Optimizer
from .tracking.tracker import Tracker

# The first keys of every epoch's metrics row, in order; `lr` and the `time/` keys follow.
METRIC_KEYS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc")
EVAL_BATCH = 8192


@dataclass
class FitResult:
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


def init_model(cfg: RunConfig, device: torch.device) -> tuple[nn.Sequential, torch.Generator, torch.Generator]:
    """A run's starting point, drawn from its seed alone: the initial network on `device`, and its
    shuffle and dropout-mask generators. Solo and packed training both start here, so a member of a
    pack starts exactly where it would alone."""
    seed_everything(cfg.seed)
    shuffle, masks = generators(cfg.seed, device)
    return build_fcn(cfg).to(device), shuffle, masks


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


# --- what the lifecycle trains ---------------------------------------------------------------------


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


class Solo:
    """One run trained as itself: its `build_fcn` network, its optimizer and its shuffle order."""

    def __init__(self, cfg: RunConfig, device: torch.device):
        model, self.shuffle, masks = init_model(cfg, device)
        self.cfg, self.model = cfg, use_generator(model, masks)
        self.update = Optimizer(self.model.parameters(), cfg)
        self.param_counts = [param_count(self.model)]

    def lrs(self) -> list[float]:
        return [self.update.lr]

    def train_epoch(self, split: data_mod.Split, should_stop: Callable[[], bool]) -> list[tuple[float, float]] | None:
        trained = train_epoch(self.model, self.update, split, self.cfg, self.shuffle, should_stop)
        return None if trained is None else [trained]

    def set_epoch(self, done: int) -> None:
        self.update.set_epoch(done)

    def evaluate(self, split: data_mod.Split) -> tuple[list[float], list[float]]:
        loss, acc = evaluate(self.model, split)
        return [loss], [acc]

    def state(self, k: int) -> dict[str, torch.Tensor]:
        return {name: v.detach().to("cpu", copy=True) for name, v in self.model.state_dict().items()}

    def keep(self, ks: list[int]) -> None:
        pass  # the lifecycle calls it only while some run trains on, and one run that trains on is all of them


# --- the lifecycle ---------------------------------------------------------------------------------


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


def fit(
    cfg: RunConfig,
    tracker: Tracker | None = None,
    data: data_mod.FashionMNIST | None = None,
    device: str | torch.device = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
) -> FitResult:
    data = data or data_mod.load(device, cfg.subset)
    return lifecycle(Solo(cfg, data.device), [cfg], [tracker], data, should_stop)[0]
