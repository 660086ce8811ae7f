"""A pack's update with each member's hyperparameters as tensors: the update a pack uses on CUDA.

`optim.PackUpdate` steps each group of members that share hyperparameters with one fused kernel
call. That is torch's arithmetic bit for bit and the fastest update on a CPU, but a bayes or
random sweep with a continuous lr makes every member its own group: K kernel calls a step, and the
lrs are constants baked into a captured CUDA graph, so a schedule that changes them drops the
graph every epoch.

Here the members of one optimizer sit side by side (the pack orders them by `optim.group_key`,
whose first field is the optimizer), and each hyperparameter is a (K,) tensor on the device, seen
by every stacked parameter as a (K, 1, ...) view that broadcasts over the member's rows. One
`torch._foreach_*` call then updates every layer of every member of that optimizer, so a step
dispatches the same operations whatever K is and however the lrs differ: a fixed handful per
optimizer present in the pack. A new epoch's lrs are copied into their tensor, which a captured
graph reads at its next replay (`lrs_in_tensors`).

The formulas are those of torch's single-tensor updates (the same as its fused kernels' but for
the order of some roundings): SGD with momentum (dampening 0, no Nesterov) and L2 weight decay;
Adam with L2 weight decay and AdamW with decoupled weight decay, beta2 0.999, eps 1e-8; RMSprop
uncentered with alpha 0.99, eps 1e-8 and momentum. A member whose momentum is 0 keeps a buffer
equal to its last step, which changes nothing it computes. Members equal the same configs alone to
float tolerance (tests/test_stacked.py), not bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from .config import RunConfig
from .optim import SCHEDULES, Moments, zero_moments

BETA2, EPS, ALPHA = 0.999, 1e-8, 0.99  # optim.GROUPS' fixed values, which no RunConfig changes


class Family:
    """The members of one optimizer in a pack: their rows of every stacked tensor, and their
    hyperparameters as (k,) tensors with a broadcasting view of each for every parameter."""

    def __init__(self, name: str, rows: slice, cfgs: list[RunConfig], params, grads, moments: Moments, step: Tensor):
        self.name, self.cfgs, self.rows = name, cfgs, rows
        cut = lambda ts: [t[rows] for t in ts]  # noqa: E731
        self.params, self.grads, self.m1, self.m2 = cut(params), cut(grads), cut(moments[0]), cut(moments[1])
        device = params[0].device
        column = lambda values: torch.tensor(values, dtype=torch.float32, device=device)  # noqa: E731
        self.lr = column([c.lr for c in cfgs])
        self.momentum = column([c.momentum for c in cfgs])
        self.weight_decay = column([c.weight_decay for c in cfgs])
        self.decays = any(c.weight_decay for c in cfgs)
        self.step = step
        # Values derived each step from the step count and the lr, written in place (graph-safe).
        self.step_size, self.inv_bc2_sqrt, self.decay, self.scale = (torch.empty_like(self.lr) for _ in range(4))
        self.eps = torch.full_like(self.lr, EPS)
        self.one_minus_beta1 = 1 - self.momentum
        self.beta1, self.beta2 = self.momentum, torch.full_like(self.lr, BETA2)
        self._views: dict[int, list[Tensor]] = {}

    def views(self, t: Tensor) -> list[Tensor]:
        """`t` (k,) as one view per parameter that broadcasts over that parameter's rows; made once
        per tensor (they are the family's own, updated in place), not every step."""
        if id(t) not in self._views:
            self._views[id(t)] = [t.view(-1, *[1] * (p.dim() - 1)) for p in self.params]
        return self._views[id(t)]

    def decayed_grads(self) -> list[Tensor]:
        """L2 weight decay: the gradient plus weight_decay * parameter (a new list; the pack's
        gradients are left as they are)."""
        if not self.decays:
            return self.grads
        return torch._foreach_addcmul(self.grads, self.params, self.views(self.weight_decay))

    def apply(self, directions: list[Tensor], scale: Tensor) -> None:
        """params -= scale * directions, with `scale` (k,) per member: one pass that reads both lists."""
        torch.neg(scale, out=self.scale)
        torch._foreach_addcmul_(self.params, directions, self.views(self.scale))


def _sgd(f: Family) -> None:
    grads = f.decayed_grads()
    torch._foreach_mul_(f.m1, f.views(f.momentum))
    torch._foreach_add_(f.m1, grads)
    f.apply(f.m1, f.lr)


def _adam(decoupled: bool) -> Callable[[Family], None]:
    def update(f: Family) -> None:
        if decoupled and f.decays:  # AdamW: param *= 1 - lr * weight_decay, before the moments
            torch.mul(f.lr, f.weight_decay, out=f.decay).neg_().add_(1)
            torch._foreach_mul_(f.params, f.views(f.decay))
        grads = f.grads if decoupled else f.decayed_grads()
        torch._foreach_lerp_(f.m1, grads, f.views(f.one_minus_beta1))
        torch._foreach_mul_(f.m2, BETA2)
        torch._foreach_addcmul_(f.m2, grads, grads, value=1 - BETA2)
        # params -= step_size * m1 / (sqrt(v) / sqrt(1 - beta2^t) + eps), step_size = lr / (1 - beta1^t).
        # The per-member scalars go into the denominator, (sqrt(v) * (1 / c) + eps) / step_size, so the
        # update after the moments is four passes over the parameters' size (sqrt, addcmul, div,
        # addcdiv) rather than seven: on a GPU this update is bound by memory traffic, not arithmetic.
        # The denominator is at least eps / step_size: an lr of 0 makes it infinite and the step 0.
        torch.div(f.lr, torch.pow(f.beta1, f.step).neg_().add_(1), out=f.step_size)
        torch.pow(f.beta2, f.step, out=f.inv_bc2_sqrt).neg_().add_(1).sqrt_().reciprocal_()  # 1 / c
        denom = torch._foreach_addcmul(f.views(f.eps), torch._foreach_sqrt(f.m2), f.views(f.inv_bc2_sqrt))
        torch._foreach_div_(denom, f.views(f.step_size))
        torch._foreach_addcdiv_(f.params, f.m1, denom, value=-1.0)

    return update


def _rmsprop(f: Family) -> None:
    grads = f.decayed_grads()
    torch._foreach_mul_(f.m2, ALPHA)
    torch._foreach_addcmul_(f.m2, grads, grads, value=1 - ALPHA)
    avg = torch._foreach_sqrt(f.m2)
    torch._foreach_add_(avg, EPS)
    torch._foreach_mul_(f.m1, f.views(f.momentum))
    torch._foreach_addcdiv_(f.m1, grads, avg)
    f.apply(f.m1, f.lr)


# name -> the update of a family of that optimizer's members
STACKED: dict[str, Callable[[Family], None]] = {
    "sgd": _sgd,
    "adam": _adam(decoupled=False),
    "adamw": _adam(decoupled=True),
    "rmsprop": _rmsprop,
}


class StackedUpdate:
    """`optim.PackUpdate`'s interface over `Family`s: the pack's members ordered by
    `optim.group_key`, so the members of each optimizer are contiguous rows."""

    lrs_in_tensors = True  # a captured graph reads the lrs from their tensors: a new epoch keeps it

    def __init__(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        cfgs: list[RunConfig],
        moments: Moments | None = None,
        steps: int = 0,
    ):
        self.moments = moments or zero_moments(params)
        self.step_count = torch.full((), float(steps), device=params[0].device)
        self.cfgs = list(cfgs)
        self.families: list[Family] = []
        start = 0
        for name, members in itertools.groupby(self.cfgs, key=lambda c: c.optimizer):
            group = list(members)
            rows = slice(start, start + len(group))
            self.families.append(Family(name, rows, group, params, grads, self.moments, self.step_count))
            start += len(group)
        if len(self.families) != len({c.optimizer for c in self.cfgs}):
            raise ValueError("StackedUpdate needs the members of each optimizer side by side")
        self._lrs = [c.lr for c in self.cfgs]

    def lrs(self) -> list[float]:
        return list(self._lrs)

    def set_epoch(self, done: int) -> None:
        """The lrs for the epoch after `done` completed epochs, written into the lr tensors."""
        self._lrs = [c.lr * SCHEDULES[c.schedule](done, c.epochs) for c in self.cfgs]
        for f in self.families:  # each family's members are its rows of the pack, in order
            f.lr.copy_(torch.tensor(self._lrs[f.rows], dtype=f.lr.dtype))

    def step(self) -> None:
        self.step_count.add_(1)
        for f in self.families:
            STACKED[f.name](f)
