"""`fit(cfg, tracker) -> FitResult`: one run, trained as a pack of one (packed.py) through the one
epoch loop every caller shares (lifecycle.py); and `evaluate`, a network's loss and accuracy."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from .config import RunConfig
from .lifecycle import lifecycle
from .packed import EVAL_BATCH, Pack
from .results import METRIC_KEYS, FitResult
from .tracking.tracker import Tracker

__all__ = ["METRIC_KEYS", "FitResult", "evaluate", "fit", "seed_everything"]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device


@torch.inference_mode()
def evaluate(model: nn.Module, split: data_mod.Split) -> tuple[float, float]:
    """Mean loss (without label smoothing) and accuracy of a network such as `load_model` gives;
    leaves it in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for start in range(0, len(split), EVAL_BATCH):
        x, y = split.x[start : start + EVAL_BATCH], split.y[start : start + EVAL_BATCH]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return loss_sum.item() / len(split), correct.item() / len(split)


def fit(
    cfg: RunConfig,
    tracker: Tracker | None = None,
    data: data_mod.FashionMNIST | None = None,
    device: str | torch.device = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
) -> FitResult:
    data = data or data_mod.load(device, cfg.subset)
    return lifecycle(Pack([cfg], data.device), [cfg], [tracker], data, should_stop)[0]
