"""Optimizers and lr schedules as lookup tables keyed by the names RunConfig accepts.

`momentum` is one knob with one meaning across optimizers, the first-moment decay: SGD's
momentum, Adam's and AdamW's beta1, RMSprop's momentum. The study sweeps it for all three.

Every optimizer takes its multi-tensor path: `fused=True` (one kernel over all parameters, on the
CPU and on CUDA) where torch has one, else `foreach=True`. torch's default on the CPU is a Python
loop over parameters, which for Adam on a 784-1024-256-10 net cost a fifth of the step (measured).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import lr_scheduler

from .config import RunConfig

Params = Iterable[torch.nn.Parameter]

OPTIMIZERS: dict[str, Callable[[Params, RunConfig], torch.optim.Optimizer]] = {
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, fused=True),
    "adam": lambda p, c: torch.optim.Adam(
        p, lr=c.lr, betas=(c.momentum, 0.999), weight_decay=c.weight_decay, fused=True
    ),
    "adamw": lambda p, c: torch.optim.AdamW(
        p, lr=c.lr, betas=(c.momentum, 0.999), weight_decay=c.weight_decay, fused=True
    ),
    "rmsprop": lambda p, c: torch.optim.RMSprop(
        p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, foreach=True
    ),
}

# Stepped once per epoch.
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, RunConfig], lr_scheduler.LRScheduler]] = {
    "constant": lambda opt, c: lr_scheduler.LambdaLR(opt, lambda epoch: 1.0),
    "cosine": lambda opt, c: lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs),
}


def build_optimizer(params: Params, cfg: RunConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](params, cfg)


def build_schedule(opt: torch.optim.Optimizer, cfg: RunConfig) -> lr_scheduler.LRScheduler:
    return SCHEDULES[cfg.schedule](opt, cfg)
