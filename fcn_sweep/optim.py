"""Optimizers and lr schedules as lookup tables keyed by the names RunConfig accepts.

`momentum` is one knob with one meaning across optimizers, the first-moment decay: SGD's
momentum, Adam's and AdamW's beta1, RMSprop's momentum. The study sweeps it for all three.

The torch optimizer a run builds holds the hyperparameters, and its lr schedule updates them; the
update itself is `Update`, which calls the multi-tensor kernel torch's own `step()` would call
(`_fused_*` for SGD, Adam and AdamW; RMSprop has no fused kernel and takes torch's `foreach`
sequence) with the same arguments, so the arithmetic is torch's, bit for bit. Why not `step()`
itself: its Python (per-parameter state lookups, grouping tensors by device, hooks, profiler
records) cost 0.3-0.7 ms a call on this project's CPU, 6-10% of a 784-1024-256-10 step at batch
64, and a pack (packed.py) paid it once per member per step. torch's CPU default, a Python loop
over parameters, would cost more still.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
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


# --- the update ----------------------------------------------------------------------------------

# Per parameter, zero-initialised as torch initialises its state: (SGD's and RMSprop's momentum
# buffer or Adam's exp_avg, Adam's exp_avg_sq or RMSprop's square_avg).
Moments = tuple[list[Tensor], list[Tensor]]


def _sgd(group: dict, params: list[Tensor], grads: list[Tensor], moments: Moments, step: int) -> None:
    momentum = group["momentum"]
    torch._fused_sgd_(
        params,
        grads,
        moments[0] if momentum else [],
        weight_decay=group["weight_decay"],
        momentum=momentum,
        lr=group["lr"],
        dampening=group["dampening"],
        nesterov=group["nesterov"],
        maximize=False,
        is_first_step=step == 1 and momentum != 0,  # the buffer starts as the first gradient, as torch's
    )


def _adam(kernel: Callable) -> Callable[[dict, list[Tensor], list[Tensor], Moments, int], None]:
    def update(group: dict, params: list[Tensor], grads: list[Tensor], moments: Moments, step: int) -> None:
        beta1, beta2 = group["betas"]
        # The kernel reads each parameter's step count from a tensor on the parameters' device, as
        # torch's fused Adam keeps it (a CPU tensor would be refused by the CUDA kernel).
        steps = [torch.full((), float(step), device=params[0].device)] * len(params)
        kernel(params, grads, *moments, [], steps, lr=group["lr"], beta1=beta1, beta2=beta2,
               weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False, maximize=False)  # fmt: skip

    return update


def _rmsprop(group: dict, params: list[Tensor], grads: list[Tensor], moments: Moments, step: int) -> None:
    # torch's _multi_tensor_rmsprop, uncentered, op for op.
    buffers, square_avgs = moments
    lr, alpha, momentum, weight_decay = group["lr"], group["alpha"], group["momentum"], group["weight_decay"]
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
    avg = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(avg, group["eps"])
    if momentum > 0:
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_addcdiv_(buffers, grads, avg)
        torch._foreach_add_(params, buffers, alpha=-lr)
    else:
        torch._foreach_addcdiv_(params, grads, avg, value=-lr)


# name -> fn(param group, params, grads, moments, step number from 1): torch's update of that optimizer
UPDATES: dict[str, Callable[[dict, list[Tensor], list[Tensor], Moments, int], None]] = {
    "sgd": _sgd,
    "adam": _adam(torch._fused_adam_),
    "adamw": _adam(torch._fused_adamw_),
    "rmsprop": _rmsprop,
}


def zero_moments(params: Iterable[Tensor]) -> Moments:
    params = list(params)
    return [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]


class Update:
    """`opt.step()` and `opt.zero_grad()` for an optimizer from `build_optimizer`, as torch computes
    them (see the module docstring). `opt` keeps the hyperparameters; the moments live here."""

    def __init__(self, opt: torch.optim.Optimizer, cfg: RunConfig):
        (group,) = opt.param_groups
        self.group, self.params, self.fn = group, list(group["params"]), UPDATES[cfg.optimizer]
        self.moments, self.steps = zero_moments(self.params), 0
        # What opt.step() would tell its lr schedule, which otherwise warns that it stepped first.
        opt._opt_called = True

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        self.fn(self.group, self.params, [p.grad for p in self.params], self.moments, self.steps)
